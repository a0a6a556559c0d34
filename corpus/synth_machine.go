package corpus

import (
	"fmt"
	"reflect"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm"
	"github.com/wagglevm/waggle/vmm/devices"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// fill sets every integer and byte of *p, recursively, to values counted
// up from seed, so that each field of a kernel structure holds something
// distinct and a codec that swaps or drops a field is seen.
func fill(p any, seed uint64) {
	n := seed
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				if v.Field(i).CanSet() {
					walk(v.Field(i))
				}
			}
		case reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			n++
			v.SetUint(n * 0x9e37_79b9_7f4a_7c15 >> (64 - v.Type().Bits()))
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			n++
			v.SetInt(int64(n*0x9e37_79b9_7f4a_7c15) >> (64 - v.Type().Bits()))
		}
	}
	walk(reflect.ValueOf(p).Elem())
}

// synthVCPU returns a vCPU's state with every field filled; xsave chooses
// an XSAVE area over the legacy FPU section.
func synthVCPU(id uint32, xsave bool) *vmm.VCPUState {
	s := &vmm.VCPUState{ID: id, TSCKHz: 2_400_000}
	fill(&s.Regs, 100+uint64(id))
	fill(&s.Sregs, 200+uint64(id))
	fill(&s.Xcrs, 300)
	s.Xcrs.NrXcrs = 1
	fill(&s.Lapic, 400+uint64(id))
	fill(&s.DebugRegs, 500)
	fill(&s.Events, 600)
	s.MPState.MPState = kvm.KVM_MP_STATE_RUNNABLE
	if id > 0 {
		s.MPState.MPState = kvm.KVM_MP_STATE_HALTED
	}
	for i := range uint32(4) {
		var e kvm.CPUIDEntry2
		fill(&e, 700+uint64(i))
		s.CPUID = append(s.CPUID, e)
	}
	for _, idx := range []uint32{0x10, 0x174, 0x175, 0x176, 0xc0000080, 0xc0000081, 0xc0000082} {
		s.MSRs = append(s.MSRs, kvm.MsrEntry{Index: idx, Data: uint64(idx) * 0x1001})
	}
	if xsave {
		s.Xsave = make([]byte, 4096)
		for i := range s.Xsave {
			s.Xsave[i] = byte(i * 7)
		}
	} else {
		fill(&s.FPU, 800)
	}
	return s
}

// synthMachine returns a machine state of cpus vCPUs, with device payloads
// inside when withDevices is set.
func synthMachine(cpus int, xsave, withDevices bool) (*vmm.State, error) {
	st := &vmm.State{}
	for i := range cpus {
		st.VCPUs = append(st.VCPUs, synthVCPU(uint32(i), xsave))
	}
	for i := range st.Irqchip {
		fill(&st.Irqchip[i], 900+uint64(i))
		st.Irqchip[i].ChipID = uint32(i)
	}
	fill(&st.PIT, 1000)
	fill(&st.Clock, 1100)
	if withDevices {
		u, err := devices.NewUART(1, nopIRQ{}, nil)
		if err != nil {
			return nil, err
		}
		p, err := u.Save(0)
		if err != nil {
			return nil, err
		}
		st.Devices = append(st.Devices, vmm.DeviceState{Key: "com1", Payload: p})
	}
	return st, nil
}

// addMachine records machine states: one vCPU with the legacy FPU, four
// with XSAVE, and one that carries a device payload inside.
func addMachine(set fileSet) error {
	cases := []struct {
		name            string
		cpus            int
		xsave, withDevs bool
	}{
		{"one-vcpu-fpu", 1, false, false},
		{"four-vcpus-xsave", 4, true, false},
		{"two-vcpus-with-device", 2, true, true},
	}
	for _, c := range cases {
		st, err := synthMachine(c.cpus, c.xsave, c.withDevs)
		if err != nil {
			return err
		}
		data, err := st.MarshalBinary()
		if err != nil {
			return fmt.Errorf("machine %s: %w", c.name, err)
		}
		if err := set.addJSON(KindMachine, c.name, MachineFile{Version: vmm.StateVersion, Data: data}); err != nil {
			return err
		}
	}
	return nil
}

// addVersions records what this build reads: imp are the payload kinds
// and versions its Hello offers.
func addVersions(set fileSet, imp map[string][]uint32) error {
	return set.addJSON(KindVersions, "importable", VersionsFile{
		Protocols:    migration.Supported,
		SpecVersions: specVersionNames(),
		Devices:      imp,
		MachineState: vmm.StateVersion,
	})
}
