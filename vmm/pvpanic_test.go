package vmm

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// pvpanicVCPU is a vCPU of a machine built (devices only, no KVM) from a
// spec with or without a pvpanic device.
func pvpanicVCPU(t *testing.T, withPVPanic bool) *vcpu {
	t.Helper()
	b := spec.NewBuilder().SetBoard(spec.Board{CPUs: 1, MemoryMiB: 16, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "panic"})
	if withPVPanic {
		b.Add(spec.MustKey("panic"), spec.PVPanic{})
	}
	s, err := b.Build()
	require.NoError(t, err)
	m := &Machine{cfg: Config{Spec: s}, ports: &portBus{}, mmio: &mmioBus{}}
	require.NoError(t, m.buildDevices(nil))
	require.Empty(t, m.devs, "pvpanic has no state to migrate")
	return &vcpu{m: m}
}

// TestPVPanicEndsTheSession: the vCPU that writes "panicked" to port 0x505
// ends its session as a failure wrapping ErrGuestPanicked; a read, a
// crash-loaded write and other ports do not.
func TestPVPanicEndsTheSession(t *testing.T) {
	v := pvpanicVCPU(t, true)
	data := []byte{0}
	v.m.ports.read(spec.PVPanicPort, data)
	require.Equal(t, byte(3), data[0], "a read says panicked and crash loaded are supported")
	require.Equal(t, evNone, v.portOut(spec.PVPanicPort, []byte{2}).event, "crash loaded ends nothing")
	require.Equal(t, evNone, v.portOut(spec.PVPanicPort+1, []byte{1}).event, "the next port is not the device's")
	require.Equal(t, evNone, v.portOut(spec.PVPanicPort, []byte{0xfe}).event)

	r := v.portOut(spec.PVPanicPort, []byte{1})
	require.Equal(t, evFailed, r.event)
	require.ErrorIs(t, r.err, ErrGuestPanicked)
	require.Equal(t, "failed: the guest reported a panic (pvpanic)", Exit{Reason: ExitFailed, Err: r.err}.String())
	require.Zero(t, v.m.ports.unknownReads.Load())
}

// TestNoPVPanicWithoutTheComponent: without the component, port 0x505 is
// nobody's: a write of 1 there is dropped and ends nothing.
func TestNoPVPanicWithoutTheComponent(t *testing.T) {
	v := pvpanicVCPU(t, false)
	require.Equal(t, evNone, v.portOut(spec.PVPanicPort, []byte{1}).event)
	require.Equal(t, uint64(1), v.m.ports.unknownWrites.Load())
	data := []byte{0}
	v.m.ports.read(spec.PVPanicPort, data)
	require.Equal(t, byte(0xff), data[0])
}
