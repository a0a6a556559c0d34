package vmm

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/vmm/kvm"
)

// fakeRuns plays a script of KVM_RUN outcomes: an error, or nil and an exit
// reason.
type fakeRuns struct {
	errs    []error
	reasons []uint32
	calls   int
}

func (f *fakeRuns) run() error {
	f.calls++
	return f.errs[f.calls-1]
}

func (f *fakeRuns) reason() uint32 { return f.reasons[f.calls-1] }

// TestRunToExitReentersAfterSignals: the benchmarks' bare vCPU helper treats
// an interrupted KVM_RUN (EINTR, EAGAIN, KVM_EXIT_INTR) as the machine's
// run loop does, by entering again, and fails on anything else.
func TestRunToExitReentersAfterSignals(t *testing.T) {
	eintr := &kvm.Error{Op: "KVM_RUN", Err: unix.EINTR}
	eagain := &kvm.Error{Op: "KVM_RUN", Err: unix.EAGAIN}
	f := &fakeRuns{
		errs:    []error{eintr, eagain, nil, eintr, nil},
		reasons: []uint32{0, 0, kvm.KVM_EXIT_INTR, 0, kvm.KVM_EXIT_IO},
	}
	require.NoError(t, runToExit(f.run, f.reason, kvm.KVM_EXIT_IO))
	require.Equal(t, 5, f.calls)

	efault := &kvm.Error{Op: "KVM_RUN", Err: unix.EFAULT}
	f = &fakeRuns{errs: []error{eintr, efault}, reasons: []uint32{0, 0}}
	err := runToExit(f.run, f.reason, kvm.KVM_EXIT_IO)
	require.ErrorIs(t, err, unix.EFAULT)

	f = &fakeRuns{errs: []error{nil}, reasons: []uint32{kvm.KVM_EXIT_SHUTDOWN}}
	require.ErrorContains(t, runToExit(f.run, f.reason, kvm.KVM_EXIT_IO), "exit reason")

	// A vCPU that is never let out ends with an error, not a hang.
	calls := 0
	err = runToExit(func() error { calls++; return eintr }, func() uint32 { return 0 }, kvm.KVM_EXIT_IO)
	require.Error(t, err)
	require.False(t, errors.Is(err, unix.EINTR))
	require.Equal(t, maxInterruptedRuns, calls)
}
