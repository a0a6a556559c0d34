package vmm

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/vmm/devices"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// sampleState is a synthesized State with every field filled.
func sampleState() *State {
	v := &VCPUState{ID: 0, TSCKHz: 2000000, Xsave: bytes.Repeat([]byte{7}, 4096)}
	v.CPUID = []kvm.CPUIDEntry2{{Function: 1, EAX: 0x806f8}, {Function: 0xb, Index: 1, Flags: 1, EDX: 0}}
	v.Regs.RIP, v.Regs.RAX, v.Regs.RFLAGS = 0x100020, 0x2BADB002, 2
	v.Sregs.CS = kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0xb, Present: 1, DB: 1, S: 1, G: 1}
	v.Xcrs.NrXcrs, v.Xcrs.Xcrs[0].Value = 1, 7
	v.MSRs = []kvm.MsrEntry{{Index: kvm.MSR_IA32_TSC, Data: 123456789}, {Index: 0xc0000080, Data: 0x500}}
	v.Lapic.Regs[0x20] = 1
	v.Events.Exception.Nr = 13
	v.MPState.MPState = kvm.KVM_MP_STATE_RUNNABLE
	v1 := *v
	v1.ID, v1.Xsave, v1.FPU.FCW = 1, nil, 0x37f
	v1.MPState.MPState = kvm.KVM_MP_STATE_UNINITIALIZED
	s := &State{VCPUs: []*VCPUState{v, &v1}}
	for i := range s.Irqchip {
		s.Irqchip[i].ChipID = uint32(i)
		s.Irqchip[i].Chip[i] = 0x42
	}
	s.PIT.Channels[0].Count = 0x10000
	s.Clock.Clock = 987654321
	s.Devices = []DeviceState{{Key: "com1", Payload: devices.Payload{Kind: "uart16550a", Version: 1, Data: []byte{1, 2, 3}}}}
	return s
}

func TestStateRoundTrip(t *testing.T) {
	s := sampleState()
	b, err := s.MarshalBinary()
	require.NoError(t, err)
	got, err := UnmarshalState(b)
	require.NoError(t, err)
	require.Equal(t, s, got)
	b2, err := got.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, b, b2)
}

func TestStateRejectsDamage(t *testing.T) {
	b, err := sampleState().MarshalBinary()
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated", b[:len(b)-1]},
		{"flipped bit", func() []byte { d := bytes.Clone(b); d[100] ^= 1; return d }()},
		{"bad magic", func() []byte { d := bytes.Clone(b); d[0] = 'X'; return d }()},
		{"trailing byte", append(bytes.Clone(b), 0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := UnmarshalState(c.b)
			require.ErrorIs(t, err, ErrMalformedState)
		})
	}
}

func TestVCPUPayloadRejects(t *testing.T) {
	p := sampleState().VCPUs[0].Payload()
	_, err := DecodeVCPUState(p)
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		p    devices.Payload
	}{
		{"wrong kind", devices.Payload{Kind: "x", Version: 1, Data: p.Data}},
		{"wrong version", devices.Payload{Kind: KindVCPU, Version: 2, Data: p.Data}},
		{"truncated", devices.Payload{Kind: KindVCPU, Version: 1, Data: p.Data[:len(p.Data)-3]}},
		{"missing sections", devices.Payload{Kind: KindVCPU, Version: 1, Data: p.Data[:200]}},
		{"empty", devices.Payload{Kind: KindVCPU, Version: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeVCPUState(c.p)
			require.ErrorIs(t, err, ErrMalformedState)
		})
	}
}

// FuzzUnmarshalState checks that the decoder never panics and that what it
// accepts encodes back to the same bytes.
func FuzzUnmarshalState(f *testing.F) {
	b, err := sampleState().MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalState(b)
		if err != nil {
			return
		}
		b2, err := s.MarshalBinary()
		require.NoError(t, err)
		s2, err := UnmarshalState(b2)
		require.NoError(t, err)
		require.Equal(t, s, s2)
	})
}

// FuzzDecodeVCPUState checks the vCPU payload decoder alone (the state's
// checksum keeps random bytes from reaching it in FuzzUnmarshalState).
func FuzzDecodeVCPUState(f *testing.F) {
	for _, v := range sampleState().VCPUs {
		f.Add(v.Payload().Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeVCPUState(devices.Payload{Kind: KindVCPU, Version: stateVersion, Data: data})
		if err != nil {
			return
		}
		v2, err := DecodeVCPUState(v.Payload())
		require.NoError(t, err)
		require.Equal(t, v, v2)
	})
}
