package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/kvmtest"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
)

// TestGuestFailureKindsOnKVM: real guests on KVM fail their instance with
// the kind of what they did: the panic guest with a pvpanic device is
// guest_panicked, the crash guest guest_triple_fault; the console keeps
// what they printed last.
func TestGuestFailureKindsOnKVM(t *testing.T) {
	kvmtest.Require(t)
	for _, c := range []struct {
		image, cmdline, last string
		pvpanic              bool
		kind                 FailureKind
		reason               string
	}{
		{image: "panic", cmdline: "pace_ms=10 panic_after=2", last: "tick 2\npanicking\n", pvpanic: true,
			kind: FailureGuestPanicked, reason: "failed: the guest reported a panic (pvpanic)"},
		{image: "crash", cmdline: "delay_ms=10", last: "crash in 10 ms\n", kind: FailureGuestTripleFault},
	} {
		t.Run(c.image, func(t *testing.T) {
			b := spec.NewBuilder().SetBoard(spec.Board{CPUs: 1, MemoryMiB: 64, Chipset: spec.ChipsetI440FX}).
				SetBoot(spec.Boot{Image: c.image, Cmdline: c.cmdline}).
				Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1})
			if c.pvpanic {
				b.Add(spec.MustKey("pvpanic"), spec.PVPanic{})
			}
			s, err := b.Build()
			require.NoError(t, err)
			rt := NewRuntime(RuntimeOptions{Log: quietLog(), Version: "test"})
			t.Cleanup(rt.Close)
			_, _, err = rt.Ensure(context.Background(), EnsureRequest{
				Properties: Properties{ID: uuid.New(), Name: c.image}, Spec: &s})
			require.NoError(t, err)
			_, err = rt.RequestState(context.Background(), RequestRun)
			require.NoError(t, err)
			inst := waitState(t, rt, StateFailed)
			require.Equal(t, c.kind, inst.FailureKind, inst.FailureReason)
			if c.reason != "" {
				require.Equal(t, c.reason, inst.FailureReason)
			}
			waitOutput(t, rt, c.last)
		})
	}
}

// TestPreparedRuntimeOnKVM: a runtime with PrepareVM builds its VM on the
// shell it made ahead, makes another once that VM is gone, and gives back
// every file descriptor when it closes (the spare shell included).
func TestPreparedRuntimeOnKVM(t *testing.T) {
	kvmtest.Require(t)
	before := openFDs(t)
	var built []*vmm.Machine
	rt := NewRuntime(RuntimeOptions{Log: quietLog(), Version: "test", PrepareVM: true,
		NewVM: func(cfg vmm.Config) (VM, error) {
			m, err := vmm.New(cfg)
			if err != nil {
				return nil, err
			}
			built = append(built, m)
			return m, nil
		}})
	rt.shells.settle(10 * time.Second)
	require.Greater(t, openFDs(t), before, "the shell holds /dev/kvm and its VM")

	s := testSpec(t, 1, 64)
	for i := range 2 {
		_, _, err := rt.Ensure(context.Background(), EnsureRequest{Properties: Properties{ID: uuid.New()}, Spec: s})
		require.NoError(t, err)
		require.True(t, built[i].StartTimings().Prepared, "VM %d built on a shell made ahead", i)
		_, err = rt.RequestState(context.Background(), RequestRun)
		require.NoError(t, err)
		waitOutput(t, rt, "tick 1\n")
		require.NoError(t, request(rt, RequestStop))
		waitState(t, rt, StateDestroyed)
		// The next shell is made in the background once the VM is closed.
		require.Eventually(t, func() bool {
			rt.shells.mu.Lock()
			defer rt.shells.mu.Unlock()
			return rt.shells.spare != nil
		}, 10*time.Second, time.Millisecond, "a shell for the next instance")
	}
	rt.Close()
	require.Eventually(t, func() bool { n, err := countFDs(); return err == nil && n == before }, 10*time.Second,
		time.Millisecond, "every fd back after Close")
}
