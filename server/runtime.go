package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
)

// Runtime is the Core of a real VMM server: one instance, run as a KVM
// virtual machine by package vmm. It builds the VM when Ensure brings a
// spec, and drives it through the lifecycle on state requests; COM1's output
// is the instance's serial console.
type Runtime struct {
	log     *slog.Logger
	version string
	serial  *serialLog

	mu sync.Mutex
	// changed is closed and replaced whenever inst changes; guarded by mu,
	// as are the fields below.
	changed chan struct{}
	req     *EnsureRequest // nil until Ensure
	inst    Instance
	spec    *spec.Spec
	machine *vmm.Machine // nil before the VM is built and after it is released
	mig     migrations

	failPoints FailPoints // set once at creation
}

// RuntimeOptions configure a Runtime.
type RuntimeOptions struct {
	Log *slog.Logger
	// Version is the server's version, shown to guests in SMBIOS.
	Version string
	// SerialKeep is how many bytes of serial output are kept (default
	// DefaultSerialKeep).
	SerialKeep int
	// FailPoints make migrations fail on purpose, for tests.
	FailPoints FailPoints
}

// NewRuntime returns a Runtime with no instance.
func NewRuntime(o RuntimeOptions) *Runtime {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.SerialKeep <= 0 {
		o.SerialKeep = DefaultSerialKeep
	}
	return &Runtime{log: o.Log, version: o.Version, serial: newSerialLog(o.SerialKeep), changed: make(chan struct{}), failPoints: o.FailPoints}
}

var _ Core = (*Runtime)(nil)

// setStateLocked moves the instance to s, bumps the generation and wakes
// every state monitor.
func (r *Runtime) setStateLocked(s State, reason string) {
	r.log.Info("instance state", "from", r.inst.State, "to", s, "gen", r.inst.Gen+1, "reason", reason)
	r.inst.State = s
	r.inst.FailureReason = reason
	r.inst.Gen++
	close(r.changed)
	r.changed = make(chan struct{})
}

// Ensure builds the VM from the request's spec and returns without running
// it. Nothing is kept if the VM cannot be built.
func (r *Runtime) Ensure(ctx context.Context, req EnsureRequest) (Instance, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req != nil {
		if r.req.Equal(req) {
			return r.inst, false, nil
		}
		// An instance that ended (destroyed: stopped or migrated away;
		// failed) leaves the server free for a new one; generations keep
		// growing across instances.
		if r.inst.State != StateDestroyed && r.inst.State != StateFailed {
			return Instance{}, false, ErrInstanceExists
		}
	}
	if req.Migrate != nil {
		return r.ensureMigrationTargetLocked(ctx, req)
	}
	m, err := r.buildMachine(req.Properties, *req.Spec, false)
	if err != nil {
		return Instance{}, false, err
	}
	r.req, r.spec, r.machine = &req, req.Spec, m
	r.inst = Instance{Properties: req.Properties, Gen: r.inst.Gen}
	r.mig.in, r.mig.expect = nil, uuid.Nil
	r.setStateLocked(StateCreating, "")
	r.serial.reopen()
	r.serial.setInput(r.serialInput)
	return r.inst, true, nil
}

// buildMachine makes the VM (for a migration target, incoming: RAM left
// empty for the source's pages); a failure names the spec component at
// fault.
func (r *Runtime) buildMachine(p Properties, s spec.Spec, incoming bool) (*vmm.Machine, error) {
	m, err := vmm.New(vmm.Config{
		Incoming:   incoming,
		Spec:       s,
		Properties: vmm.Properties{ID: p.ID, Name: p.Name},
		Version:    r.version,
		Serial:     serialSinks(s, r.serial),
	})
	if err != nil {
		var ce *vmm.ComponentError
		if errors.As(err, &ce) {
			return nil, &VMError{Component: ce.Component, Err: ce.Err}
		}
		return nil, &VMError{Err: err}
	}
	return m, nil
}

// serialSinks routes COM1, when the spec has it, to the console log.
func serialSinks(s spec.Spec, log *serialLog) map[spec.SerialPortNumber]io.Writer {
	for _, e := range s.Components() {
		if p, ok := e.Component.(spec.SerialPort); ok && p.Num == spec.COM1 {
			return map[spec.SerialPortNumber]io.Writer{spec.COM1: log}
		}
	}
	return nil
}

func (r *Runtime) serialInput(ctx context.Context, p []byte) error {
	r.mu.Lock()
	m := r.machine
	r.mu.Unlock()
	if m == nil {
		return errNoSerialInput
	}
	return m.SerialInput(ctx, spec.COM1, p)
}

// Instance returns the instance now.
func (r *Runtime) Instance(context.Context) (Instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		return Instance{}, ErrNoInstance
	}
	return r.inst, nil
}

// Spec returns the instance and its spec (nil while a migration target waits
// for its source).
func (r *Runtime) Spec(context.Context) (Instance, *spec.Spec, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		return Instance{}, nil, ErrNoInstance
	}
	return r.inst, r.spec, nil
}

// RequestState carries out what decide says of the request in the
// instance's current state.
func (r *Runtime) RequestState(_ context.Context, req Requested) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		return ErrNoInstance
	}
	switch decide(r.inst.State, req, r.machine != nil, r.mig.abortOut != nil) {
	case alreadyDone:
		return nil
	case abortOutbound:
		r.mig.abortOut(errStopRequested)
		r.mig.abortOut = nil
		return &TransitionError{State: StateMigrating, Requested: req.String(),
			Note: "the outbound migration was aborted and the instance runs on; ask again to stop it"}
	case honour:
		switch req {
		case RequestRun:
			r.setStateLocked(StateStarting, "")
			go r.start(r.machine)
		case RequestStop:
			r.setStateLocked(StateStopping, "")
			go r.stop(r.machine)
		case RequestReboot:
			r.setStateLocked(StateRebooting, "")
			go r.reboot(r.machine)
		}
		return nil
	}
	return &TransitionError{State: r.inst.State, Requested: req.String()}
}

// decision is what a state change request does.
type decision uint8

const (
	// refuse: 409 invalid_transition, naming the state.
	refuse decision = iota
	// alreadyDone: the request is met, or on its way; nothing changes.
	alreadyDone
	// honour: run goes to starting, stop to stopping, reboot to rebooting.
	honour
	// abortOutbound: a stop during an outbound migration ends the
	// migration and the VM runs on here (the client asks again to stop).
	abortOutbound
)

// decide is the lifecycle's rule book, one exhaustive switch over the
// state: hasVM says the instance has a VM (a migration target waiting for
// its source has none); migratingOut that an outbound migration can still
// be aborted.
func decide(s State, req Requested, hasVM, migratingOut bool) decision {
	switch s {
	case StateCreating:
		if !hasVM {
			return refuse
		}
		switch req {
		case RequestRun, RequestStop:
			return honour
		case RequestReboot:
			return refuse
		}
	case StateStarting:
		switch req {
		case RequestRun:
			return alreadyDone
		case RequestStop, RequestReboot:
			return refuse
		}
	case StateRunning:
		switch req {
		case RequestRun:
			return alreadyDone
		case RequestStop, RequestReboot:
			return honour
		}
	case StateRebooting:
		switch req {
		case RequestReboot:
			return alreadyDone
		case RequestRun, RequestStop:
			return refuse
		}
	case StateStopping, StateStopped, StateDestroyed:
		switch req {
		case RequestStop:
			return alreadyDone
		case RequestRun, RequestReboot:
			return refuse
		}
	case StateMigrating:
		if req == RequestStop && migratingOut {
			return abortOutbound
		}
		return refuse
	case StateFailed:
		return refuse
	}
	return refuse
}

// start runs the VM and then watches it until it ends.
func (r *Runtime) start(m *vmm.Machine) {
	if err := m.Start(); err != nil {
		r.fail(m, fmt.Errorf("start: %w", err))
		return
	}
	r.mu.Lock()
	if r.inst.State == StateStarting {
		r.setStateLocked(StateRunning, "")
	}
	r.mu.Unlock()
	r.watch(m)
}

// watch waits for the VM to end and moves the instance accordingly: a guest
// that powers off is stopped and destroyed; a guest that fails is failed,
// with the reason.
func (r *Runtime) watch(m *vmm.Machine) {
	exit, err := m.Wait(context.Background())
	if err != nil {
		r.fail(m, err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine == m && r.inst.State == StateMigrating && r.mig.abortOut != nil {
		// The guest ended while it was being migrated out: there is
		// nothing left to move. The source's failure path ends the
		// instance as the guest asked.
		r.mig.abortOut(fmt.Errorf("the guest ended during the migration (%s)", exit))
		r.mig.abortOut = nil
		return
	}
	if r.machine != m || r.inst.State == StateStopping || r.inst.State == StateMigrating {
		return // stop, or a migration, finishes this machine
	}
	r.machineEndedLocked(exit)
}

// machineEndedLocked moves the instance after its VM ended by itself: a
// guest that failed makes the instance failed, with the reason; any other
// end (power-off, reset with exit) stops and destroys it.
func (r *Runtime) machineEndedLocked(exit vmm.Exit) {
	switch exit.Reason {
	case vmm.ExitFailed:
		r.setStateLocked(StateFailed, exit.String())
		r.releaseLocked()
	case vmm.ExitPoweredOff, vmm.ExitReset, vmm.ExitStopped:
		r.setStateLocked(StateStopping, exit.String())
		r.setStateLocked(StateStopped, exit.String())
		r.releaseLocked()
		r.setStateLocked(StateDestroyed, exit.String())
	}
}

// stop ends the VM: stopping -> stopped -> destroyed.
func (r *Runtime) stop(m *vmm.Machine) {
	if err := m.Stop(); err != nil && !errors.Is(err, vmm.ErrNotNow) {
		r.log.Warn("stop", "err", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine != m || r.inst.State != StateStopping {
		return
	}
	r.setStateLocked(StateStopped, "")
	r.releaseLocked()
	r.setStateLocked(StateDestroyed, "")
}

func (r *Runtime) reboot(m *vmm.Machine) {
	if err := m.Reset(); err != nil {
		r.fail(m, fmt.Errorf("reboot: %w", err))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine == m && r.inst.State == StateRebooting {
		r.setStateLocked(StateRunning, "")
	}
}

// fail puts the instance in Failed with err as the reason.
func (r *Runtime) fail(m *vmm.Machine, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine != m {
		return
	}
	r.setStateLocked(StateFailed, err.Error())
	r.releaseLocked()
}

// releaseLocked stops and frees the VM.
func (r *Runtime) releaseLocked() {
	if r.machine == nil {
		return
	}
	if err := r.machine.Close(); err != nil {
		r.log.Warn("release vm", "err", err)
	}
	r.machine = nil
	r.serial.closeAll()
}

// WaitGen blocks until the generation passes gen or ctx ends.
func (r *Runtime) WaitGen(ctx context.Context, gen uint64) (Instance, MigrationStatus, error) {
	for {
		r.mu.Lock()
		if r.req == nil {
			r.mu.Unlock()
			return Instance{}, MigrationStatus{}, ErrNoInstance
		}
		inst, mig, ch := r.inst, r.mig.statusLocked(), r.changed
		r.mu.Unlock()
		if inst.Gen > gen {
			return inst, mig, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return inst, mig, nil
		}
	}
}

// SerialHistory reads kept console output.
func (r *Runtime) SerialHistory(_ context.Context, q SerialQuery) (SerialHistory, error) {
	if _, err := r.Instance(context.Background()); err != nil {
		return SerialHistory{}, err
	}
	return r.serial.history(q), nil
}

// SerialAttach attaches a console.
func (r *Runtime) SerialAttach(ctx context.Context) (SerialConn, error) {
	if _, err := r.Instance(ctx); err != nil {
		return nil, err
	}
	return r.serial.attach(), nil
}

// MigrationStatus returns the migrations' progress.
func (r *Runtime) MigrationStatus(context.Context) (MigrationStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		return MigrationStatus{}, ErrNoInstance
	}
	return r.mig.statusLocked(), nil
}

// Close stops and releases the VM, for server shutdown.
func (r *Runtime) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked()
}
