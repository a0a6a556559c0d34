package server

import (
	"log/slog"
	"sync"
	"time"

	"github.com/wagglevm/waggle/vmm"
)

// shellWait bounds how long an ensure waits for a shell still being made
// before it builds its VM without one. Making a shell takes milliseconds;
// the bound is for a host whose KVM hangs.
const shellWait = 2 * time.Second

// spareShell keeps one vmm.Shell made ahead of the VM that will use it, so
// that the ensure that builds the VM does not wait for KVM to create one
// (RuntimeOptions.PrepareVM). A shell is made when the runtime starts and
// again whenever the runtime is left without a VM; each build takes the
// spare, if any.
type spareShell struct {
	log *slog.Logger
	// make makes a shell: vmm.NewShell, or a test's.
	make func() (*vmm.Shell, error)
	// wait bounds how long take waits for a shell being made (shellWait).
	wait time.Duration

	mu sync.Mutex
	// spare is the shell made and not yet taken; guarded by mu, as are
	// the fields below.
	spare *vmm.Shell
	// making is closed when the shell being made is done (spare, or
	// failed); nil while none is being made.
	making chan struct{}
	// shut says close was called: nothing more is made.
	shut bool
}

// A nil *spareShell makes nothing and has nothing to take: a runtime
// without PrepareVM.

// newSpareShell returns a spareShell that makes its shells with make and
// starts making the first.
func newSpareShell(log *slog.Logger, make func() (*vmm.Shell, error)) *spareShell {
	s := &spareShell{log: log, make: make, wait: shellWait}
	s.refill()
	return s
}

// refill makes a shell in the background unless one is spare or being
// made.
func (s *spareShell) refill() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spare != nil || s.making != nil || s.shut {
		return
	}
	done := make(chan struct{})
	s.making = done
	go func() {
		sh, err := s.make()
		if err != nil {
			// The build that would take it makes its own and reports
			// what is wrong with KVM, naming the part of the spec.
			s.log.Debug("no KVM shell made ahead", "err", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.making = nil
		close(done)
		if sh != nil && s.shut {
			sh.Close()
			return
		}
		s.spare = sh
	}()
}

// settle waits, at most wait, for a shell being made.
func (s *spareShell) settle(wait time.Duration) {
	if s == nil {
		return
	}
	s.mu.Lock()
	done := s.making
	s.mu.Unlock()
	if done == nil {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
}

// take returns the spare shell, waiting for one being made (at most
// s.wait); nil if there is none.
func (s *spareShell) take() *vmm.Shell {
	if s == nil {
		return nil
	}
	s.settle(s.wait)
	s.mu.Lock()
	defer s.mu.Unlock()
	sh := s.spare
	s.spare = nil
	return sh
}

// close closes the spare shell, and waits (at most s.wait) for the one
// being made, which closes itself; nothing is made afterwards.
func (s *spareShell) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.shut = true
	sh := s.spare
	s.spare = nil
	s.mu.Unlock()
	if sh != nil {
		sh.Close()
	}
	s.settle(s.wait)
}
