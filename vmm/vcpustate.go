package vmm

import (
	"fmt"
	"slices"

	"github.com/wagglevm/waggle/vmm/kvm"
)

// VCPUState is everything KVM holds for one vCPU. It is read and written
// only while the vCPU is parked (out of KVM_RUN, waiting for a command, with
// the machine's lock held), from the thread that holds the lock: KVM
// serializes a vCPU's ioctls with the vCPU's own mutex, and only KVM_RUN
// must stay on the vCPU's thread.
type VCPUState struct {
	// ID is the vCPU index (and APIC id).
	ID uint32
	// CPUID is the table the vCPU was given (KVM_SET_CPUID2).
	CPUID []kvm.CPUIDEntry2
	Regs  kvm.Regs
	Sregs kvm.Sregs
	// FPU is the legacy FPU state, used only when Xsave is empty (hosts
	// without KVM_CAP_XSAVE).
	FPU kvm.FPU
	// Xsave is the XSAVE area (4096 bytes, or KVM_CAP_XSAVE2's size).
	Xsave []byte
	Xcrs  kvm.Xcrs
	// MSRs are the model-specific registers in save order, including
	// MSR_IA32_TSC (the guest TSC).
	MSRs      []kvm.MsrEntry
	Lapic     kvm.LapicState
	DebugRegs kvm.DebugRegs
	MPState   kvm.MPState
	Events    kvm.VCPUEvents
	// TSCKHz is the guest TSC frequency.
	TSCKHz uint32
}

// hostCaps are the optional KVM abilities state transfer uses.
type hostCaps struct {
	xsaveSize int // 0 without KVM_CAP_XSAVE
	xcrs      bool
	debugRegs bool
	// msrs are the MSR indexes that can be read on this host, from
	// KVM_GET_MSR_INDEX_LIST.
	msrs []uint32
}

// getVCPUState reads c's state; the vCPU is parked.
func getVCPUState(c *kvm.VCPU, v *vcpu, cpuid []kvm.CPUIDEntry2, caps *hostCaps) (*VCPUState, error) {
	id := v.id
	s := &VCPUState{ID: id, CPUID: cpuid}
	var err error
	step := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	step(func() error { return c.GetRegs(&s.Regs) })
	step(func() error { return c.GetSregs(&s.Sregs) })
	if caps.xsaveSize > 0 {
		s.Xsave = make([]byte, caps.xsaveSize)
		step(func() error { return c.GetXsave(s.Xsave) })
	} else {
		step(func() error { return c.GetFPU(&s.FPU) })
	}
	if caps.xcrs {
		step(func() error { return c.GetXcrs(&s.Xcrs) })
	}
	step(func() error {
		s.MSRs = make([]kvm.MsrEntry, len(caps.msrs))
		for i, idx := range caps.msrs {
			s.MSRs[i].Index = idx
		}
		n, err := c.GetMSRs(s.MSRs)
		if err != nil {
			return err
		}
		if n != len(s.MSRs) {
			return fmt.Errorf("KVM_GET_MSRS read %d of %d MSRs, stopping at %#x", n, len(s.MSRs), s.MSRs[n].Index)
		}
		return nil
	})
	step(func() error { return c.GetLapic(&s.Lapic) })
	if caps.debugRegs {
		step(func() error { return c.GetDebugRegs(&s.DebugRegs) })
	}
	step(func() error { return c.GetMPState(&s.MPState) })
	step(func() error { return c.GetVCPUEvents(&s.Events) })
	step(func() (err error) {
		// Every ioctl costs migration downtime; the rate is read once.
		if v.tscKHz == 0 {
			v.tscKHz, err = c.GetTSCKHz()
		}
		s.TSCKHz = v.tscKHz
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read vCPU %d: %w", id, err)
	}
	return s, nil
}

// setVCPUState writes s into c, in the order KVM needs: CPUID, special
// registers, registers, FPU/XSAVE, XCRs, MSRs (but the TSC deadline), local
// APIC, TSC deadline, debug registers, MP state, and events last.
//
// A vCPU that has run keeps its CPUID (KVM allows no change then), so
// setCPUID is false for it; a machine's CPUID is fixed when it is built.
func setVCPUState(c *kvm.VCPU, v *vcpu, s *VCPUState, caps *hostCaps, setCPUID bool) error {
	var err error
	step := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	if setCPUID && !slices.Equal(v.cpuid, s.CPUID) {
		step(func() error {
			if err := c.SetCPUID2(s.CPUID); err != nil {
				return err
			}
			v.cpuid = slices.Clone(s.CPUID)
			return nil
		})
	}
	if s.TSCKHz != 0 {
		// The guest's TSC must tick at the rate it was told (tsc_khz=).
		step(func() error {
			if v.tscKHz == 0 {
				khz, err := c.GetTSCKHz()
				if err != nil {
					return err
				}
				v.tscKHz = khz
			}
			if v.tscKHz == s.TSCKHz {
				return nil
			}
			if err := c.SetTSCKHz(s.TSCKHz); err != nil {
				return fmt.Errorf("guest TSC runs at %d kHz, this host at %d kHz and cannot scale it: %w", s.TSCKHz, v.tscKHz, err)
			}
			v.tscKHz = s.TSCKHz
			return nil
		})
	}
	step(func() error { return c.SetSregs(&s.Sregs) })
	step(func() error { return c.SetRegs(&s.Regs) })
	if len(s.Xsave) > 0 {
		step(func() error {
			if caps.xsaveSize == 0 {
				return fmt.Errorf("state has XSAVE, host has no KVM_CAP_XSAVE")
			}
			buf := make([]byte, max(caps.xsaveSize, len(s.Xsave)))
			copy(buf, s.Xsave)
			return c.SetXsave(buf[:max(caps.xsaveSize, 4096)])
		})
	} else {
		step(func() error { return c.SetFPU(&s.FPU) })
	}
	if caps.xcrs && s.Xcrs.NrXcrs > 0 {
		step(func() error { return c.SetXcrs(&s.Xcrs) })
	}
	var early, late []kvm.MsrEntry
	for _, e := range s.MSRs {
		if e.Index == kvm.MSR_IA32_TSCDEADLINE {
			late = append(late, e)
		} else {
			early = append(early, e)
		}
	}
	step(func() error { return setMSRs(c, early) })
	step(func() error { return c.SetLapic(&s.Lapic) })
	if len(late) > 0 {
		step(func() error { return setMSRs(c, late) })
	}
	if caps.debugRegs {
		step(func() error { return c.SetDebugRegs(&s.DebugRegs) })
	}
	step(func() error { return c.SetMPState(&s.MPState) })
	step(func() error {
		// NMI pending and the SIPI vector are applied only when flagged.
		ev := s.Events
		ev.Flags |= kvm.KVM_VCPUEVENT_VALID_NMI_PENDING | kvm.KVM_VCPUEVENT_VALID_SIPI_VECTOR
		return c.SetVCPUEvents(&ev)
	})
	if err != nil {
		return fmt.Errorf("write vCPU %d: %w", s.ID, err)
	}
	return nil
}

func setMSRs(c *kvm.VCPU, entries []kvm.MsrEntry) error {
	n, err := c.SetMSRs(entries)
	if err != nil {
		return err
	}
	if n != len(entries) {
		return fmt.Errorf("KVM_SET_MSRS wrote %d of %d MSRs, refusing MSR %#x", n, len(entries), entries[n].Index)
	}
	return nil
}
