package server

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/vmm"
)

// shellMaker makes stand-in shells (vmm.Shell's zero value: nothing to
// close) for spareShell's tests, counting them; while gate is set, each
// waits for it.
type shellMaker struct {
	mu    sync.Mutex
	made  int
	gate  chan struct{}
	fail  error
	shell []*vmm.Shell
}

func (f *shellMaker) make() (*vmm.Shell, error) {
	f.mu.Lock()
	gate, fail := f.gate, f.fail
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.made++
	if fail != nil {
		return nil, fail
	}
	sh := &vmm.Shell{}
	f.shell = append(f.shell, sh)
	return sh, nil
}

func (f *shellMaker) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.made
}

// TestSpareShell: one shell is made at the start and taken by the first
// build; the next build has none until refill makes another; refill makes
// one at a time.
func TestSpareShell(t *testing.T) {
	f := &shellMaker{}
	s := newSpareShell(quietLog(), f.make)
	first := s.take()
	require.NotNil(t, first)
	require.Same(t, f.shell[0], first)
	require.Nil(t, s.take(), "taken: none spare until refill")

	s.refill()
	s.refill() // one being made or spare: no second
	s.settle(time.Second)
	s.refill()
	second := s.take()
	require.NotNil(t, second)
	require.NotSame(t, first, second)
	require.Equal(t, 2, f.count())

	s.close()
	s.refill()
	require.Nil(t, s.take(), "nothing is made after close")
	require.Equal(t, 2, f.count())
}

// TestSpareShellWaitsForOneBeingMade: a build that comes while the shell is
// being made waits for it, but no longer than the bound.
func TestSpareShellWaitsForOneBeingMade(t *testing.T) {
	f := &shellMaker{gate: make(chan struct{})}
	s := newSpareShell(quietLog(), f.make)
	got := make(chan *vmm.Shell)
	go func() { got <- s.take() }()
	select {
	case <-got:
		t.Fatal("take returned before the shell was made")
	case <-time.After(50 * time.Millisecond):
	}
	close(f.gate)
	require.NotNil(t, <-got)

	// Bounded: a maker that hangs costs a build s.wait, then it builds
	// without.
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.mu.Unlock()
	s.wait = 100 * time.Millisecond
	s.refill()
	began := time.Now()
	require.Nil(t, s.take())
	require.GreaterOrEqual(t, time.Since(began), s.wait)
	close(f.gate)
	s.close()
}

// TestSpareShellFailure: when KVM cannot make a shell, builds get none (and
// make their own, which reports what is wrong).
func TestSpareShellFailure(t *testing.T) {
	f := &shellMaker{fail: errors.New("open /dev/kvm: no such file or directory")}
	s := newSpareShell(quietLog(), f.make)
	require.Nil(t, s.take())
	require.Equal(t, 1, f.count())
	s.close()

	var none *spareShell // a runtime without PrepareVM
	none.refill()
	require.Nil(t, none.take())
	none.close()
}

// TestRuntimePreparesShells: with PrepareVM, the runtime hands the shell it
// made ahead to the VM it builds, makes none while it has a VM, and makes
// the next once it has none: after the instance's VM is released, and
// after a build that failed.
func TestRuntimePreparesShells(t *testing.T) {
	f := &shellMaker{}
	g := newRig(t, fakeGuest{}, func(o *RuntimeOptions) {
		o.PrepareVM = true
		o.newShell = f.make
	})
	_, vm := g.ensure(t, "first")
	require.Len(t, f.shell, 1)
	require.Same(t, f.shell[0], vm.cfg.Shell, "the VM is built on the shell made ahead")
	g.rt.shells.settle(time.Second)
	require.Equal(t, 1, f.count(), "no shell is made while the runtime has a VM")

	require.NoError(t, request(g.rt, RequestStop))
	waitState(t, g.rt, StateDestroyed)
	require.Eventually(t, func() bool { return f.count() == 2 }, 10*time.Second, time.Millisecond,
		"a shell is made once the VM is released")

	g.vms.mu.Lock()
	g.vms.failNew = errors.New("no room for the VM")
	g.vms.mu.Unlock()
	_, _, err := g.rt.Ensure(t.Context(), specRequest(t, "refused"))
	require.Error(t, err)
	require.Eventually(t, func() bool { return f.count() == 3 }, 10*time.Second, time.Millisecond,
		"a shell is made after a build that failed took the spare")

	g.vms.mu.Lock()
	g.vms.failNew = nil
	g.vms.mu.Unlock()
	_, vm = g.ensure(t, "second")
	f.mu.Lock()
	third := f.shell[2]
	f.mu.Unlock()
	require.Same(t, third, vm.cfg.Shell)

	// Close lets go of the spare, and nothing more is made.
	require.NoError(t, request(g.rt, RequestStop))
	waitState(t, g.rt, StateDestroyed)
	require.Eventually(t, func() bool { return f.count() == 4 }, 10*time.Second, time.Millisecond)
	g.rt.Close()
	g.rt.shells.mu.Lock()
	spare, shut := g.rt.shells.spare, g.rt.shells.shut
	g.rt.shells.mu.Unlock()
	require.True(t, shut)
	require.Nil(t, spare, "the spare is closed with the runtime")
}
