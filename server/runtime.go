package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
)

// Runtime is the Core of a real VMM server: one instance, run as a virtual
// machine (a KVM one from package vmm, unless RuntimeOptions.NewVM says
// otherwise). It builds the VM when Ensure brings a spec, and drives it
// through the lifecycle on state requests; COM1's output is the instance's
// serial console.
//
// Nothing slow happens under mu, which every GET takes: a VM is built
// before it is installed and closed after it is detached.
type Runtime struct {
	log         *slog.Logger
	version     string
	newVM       NewVMFunc
	capacity    func() (HostCapacity, error)
	storageRoot string
	serialKeep  int
	maxConsoles int
	failPoints  FailPoints       // set once at creation
	shells      *spareShell      // nil without PrepareVM
	mc          *migrationConfig // set once at creation
	consoles    consoleCount

	mu sync.Mutex
	// changed is closed and replaced whenever inst changes; guarded by mu,
	// as are the fields below.
	changed chan struct{}
	req     *EnsureRequest // nil until Ensure
	inst    Instance
	spec    *spec.Spec
	machine VM // nil before the VM is built and after it is released
	// serial is the instance's console: each instance has its own.
	serial *serialLog
	mig    migrations
	// outcomes are the outbound migrations' outcomes, kept beside the
	// instance's bookkeeping so that a new instance does not erase them
	// (migrate.go).
	outcomes outcomes
	// history holds the instance's last maxHistory transitions, oldest
	// first.
	history []Transition
	// building is closed when the ensure that is building a VM ends; nil
	// while none is.
	building chan struct{}
	// closing counts VMs being closed off the lock; closed is closed and
	// replaced whenever it drops to zero.
	closing int
	closed  chan struct{}
	// shut says Close was called: nothing new is built.
	shut bool
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
	// NewVM builds the instance's VM (default: a KVM virtual machine,
	// vmm.New).
	NewVM NewVMFunc
	// HostCapacity says what this host can give a VM; a spec asking more
	// is refused with a *CapacityError (default ReadHostCapacity). An
	// error means "unknown": nothing is refused then.
	HostCapacity func() (HostCapacity, error)
	// StorageRoot is the directory beneath which file backends are
	// opened.
	StorageRoot string
	// MaxConsoles bounds the serial consoles attached at once (default
	// DefaultMaxConsoles); one more gets ErrTooManyConsoles.
	MaxConsoles int
	// PrepareVM makes the part of the KVM VM that no spec decides (a
	// vmm.Shell) ahead: when the runtime is created, and again whenever it
	// is left without a VM. The ensure that builds a VM then skips
	// creating it (see vmm.Shell). NewVM must hand
	// vmm.Config.Shell to vmm.New, as the default does.
	PrepareVM bool
	// newShell makes PrepareVM's shells (vmm.NewShell; a test's).
	newShell func() (*vmm.Shell, error)
	// MigrationPeers are the networks a migration target may dial (the
	// source's src_addr must be in one); nil: DefaultMigrationPeers.
	MigrationPeers []netip.Prefix
}

// DefaultMaxConsoles is how many serial consoles may be attached at once.
const DefaultMaxConsoles = 16

// maxHistory is how many transitions the state monitor can report.
const maxHistory = 32

// NewRuntime returns a Runtime with no instance.
func NewRuntime(o RuntimeOptions) *Runtime {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.SerialKeep <= 0 {
		o.SerialKeep = DefaultSerialKeep
	}
	if o.NewVM == nil {
		o.NewVM = newKVMMachine
	}
	if o.HostCapacity == nil {
		o.HostCapacity = ReadHostCapacity
	}
	if o.MaxConsoles <= 0 {
		o.MaxConsoles = DefaultMaxConsoles
	}
	r := &Runtime{
		log: o.Log, version: o.Version, newVM: o.NewVM, capacity: o.HostCapacity, storageRoot: o.StorageRoot,
		serialKeep: o.SerialKeep, maxConsoles: o.MaxConsoles, failPoints: o.FailPoints, mc: newMigrationConfig(o.MigrationPeers),
		changed: make(chan struct{}), closed: make(chan struct{}), serial: newSerialLog(o.SerialKeep),
	}
	if o.PrepareVM {
		if o.newShell == nil {
			o.newShell = vmm.NewShell
		}
		r.shells = newSpareShell(o.Log, o.newShell)
	}
	return r
}

var _ Core = (*Runtime)(nil)

// setStateLocked moves the instance to s, which is not StateFailed
// (failLocked says why as well), with reason.
func (r *Runtime) setStateLocked(s State, reason string) {
	if s == StateFailed {
		// A bug here: every failure has its kind (failLocked).
		r.log.Error("instance failed without a failure kind; reported as host_error", "reason", reason)
		r.transitionLocked(s, FailureHostError, reason)
		return
	}
	r.transitionLocked(s, "", reason)
}

// failLocked moves the instance to StateFailed, saying why as a kind and
// in words.
func (r *Runtime) failLocked(kind FailureKind, reason string) {
	r.transitionLocked(StateFailed, kind, reason)
}

// transitionLocked moves the instance to s, bumps the generation, records
// the transition and wakes every state monitor. kind is set in state
// Failed only.
func (r *Runtime) transitionLocked(s State, kind FailureKind, reason string) {
	r.log.Info("instance state", "from", r.inst.State, "to", s, "gen", r.inst.Gen+1, "reason", reason,
		"failure_kind", string(kind))
	r.inst.State = s
	r.inst.FailureReason = reason
	r.inst.FailureKind = kind
	r.inst.Gen++
	if len(r.history) == maxHistory {
		r.history = append(r.history[:0], r.history[1:]...)
	}
	r.history = append(r.history, Transition{Gen: r.inst.Gen, State: s, FailureReason: reason, FailureKind: kind,
		At: time.Now()})
	close(r.changed)
	r.changed = make(chan struct{})
}

// ended reports whether the instance is over (destroyed: stopped or migrated
// away; failed), leaving the server free for a new one.
func (r *Runtime) endedLocked() bool {
	return r.inst.State == StateDestroyed || r.inst.State == StateFailed
}

// ensureWait bounds how long an ensure waits for another one's build, or
// for the previous instance's VM to be let go, before it answers
// ErrEnsureInProgress. A variable for tests.
var ensureWait = 5 * time.Second

// Ensure builds the VM from the request's spec and returns without running
// it. Nothing is kept if the VM cannot be built. The VM is built outside
// the lock: meanwhile the server answers as before, and another ensure
// waits (at most ensureWait, and as long as its ctx lets it) to be judged
// once this one is done.
func (r *Runtime) Ensure(ctx context.Context, req EnsureRequest) (Instance, bool, error) {
	src, err := r.checkMigrateInit(ctx, req.Migrate) // before anything is built or replaced
	if err != nil {
		return Instance{}, false, err
	}
	waitCtx, cancel := context.WithTimeoutCause(ctx, ensureWait,
		fmt.Errorf("waited %v", ensureWait))
	defer cancel()
	r.mu.Lock()
	for {
		var wait chan struct{}
		if r.building != nil {
			wait = r.building
		} else {
			if r.req != nil {
				if r.req.Equal(req) {
					inst := r.inst
					r.mu.Unlock()
					return inst, false, nil
				}
				// Generations keep growing across instances.
				if !r.endedLocked() {
					r.mu.Unlock()
					return Instance{}, false, ErrInstanceExists
				}
			}
			if r.shut {
				r.mu.Unlock()
				return Instance{}, false, ErrShuttingDown
			}
			if r.closing == 0 {
				break
			}
			wait = r.closed // the previous VM is still being let go
		}
		r.mu.Unlock()
		select {
		case <-wait:
		case <-waitCtx.Done():
			return Instance{}, false, fmt.Errorf("%w (%w)", ErrEnsureInProgress, context.Cause(waitCtx))
		}
		r.mu.Lock()
	}
	if req.Migrate != nil {
		defer r.mu.Unlock()
		r.newInstanceLocked(req, nil)
		return r.ensureMigrationTargetLocked(ctx, req, src)
	}

	done := make(chan struct{})
	r.building = done
	r.mu.Unlock()
	log := newSerialLog(r.serialKeep)
	m, err := r.newMachine(req.Properties, *req.Spec, false, log)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.building = nil
	close(done)
	if err == nil && r.shut {
		err = ErrShuttingDown
		r.closeLater(m)
	}
	if err != nil {
		return Instance{}, false, err
	}
	r.newInstanceLocked(req, log)
	r.machine = m
	r.setStateLocked(StateCreating, "")
	log.setInput(r.serialInput)
	return r.inst, true, nil
}

// newInstanceLocked makes req the instance, with nothing of the one before
// it: its own console (log, or a new one), no migrations, no history.
func (r *Runtime) newInstanceLocked(req EnsureRequest, log *serialLog) {
	if log == nil {
		log = newSerialLog(r.serialKeep)
	}
	if r.machine != nil {
		// A failed inbound migration whose hand-off is unknown kept its
		// VM (migrate_target.go): it goes with the instance.
		r.closeLater(r.machine)
	}
	r.req, r.spec, r.machine = &req, req.Spec, nil
	r.inst = Instance{Properties: req.Properties, Gen: r.inst.Gen}
	r.serial = log
	r.mig = migrations{}
	r.history = nil
}

// buildMachine makes the VM of the instance now (for a migration target,
// incoming: RAM left empty for the source's pages), its COM1 writing to the
// instance's console; a failure names the spec component at fault. It
// must be called without r.mu held: it is slow.
func (r *Runtime) buildMachine(p Properties, s spec.Spec, incoming bool) (VM, error) {
	r.mu.Lock()
	log := r.serial
	r.mu.Unlock()
	return r.newMachine(p, s, incoming, log)
}

// newMachine checks that the host can back the spec and builds its VM,
// with COM1 writing to log.
func (r *Runtime) newMachine(p Properties, s spec.Spec, incoming bool, log *serialLog) (VM, error) {
	if c, err := r.capacity(); err != nil {
		r.log.Warn("host capacity unknown; the VM is not checked against it", "err", err)
	} else if err := checkCapacity(s.Board(), c); err != nil {
		return nil, err
	}
	m, err := r.newVM(vmm.Config{
		Shell:       r.shells.take(),
		Incoming:    incoming,
		Spec:        s,
		Properties:  vmm.Properties{ID: p.ID, Name: p.Name},
		Version:     r.version,
		Serial:      serialSinks(s, log),
		StorageRoot: r.storageRoot,
	})
	if err != nil {
		r.shells.refill() // New took the spare, and there is no VM
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

// DerivedSMBIOS is the table the VMM derives for an instance with
// properties p and no explicit table (vmm.DerivedSMBIOS).
func (r *Runtime) DerivedSMBIOS(p Properties) spec.SMBIOS {
	return vmm.DerivedSMBIOS(vmm.Properties{ID: p.ID, Name: p.Name}, r.version)
}

// RequestState carries out what decide says of the request in the
// instance's current state, and returns the generation at which it took
// effect: that of the state it moved the instance to, or, for a request
// already done or under way, the current one.
func (r *Runtime) RequestState(_ context.Context, req Requested) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		return 0, ErrNoInstance
	}
	switch decide(r.inst.State, req, r.machine != nil, r.mig.abortOut != nil) {
	case alreadyDone:
		return r.inst.Gen, nil
	case abortAndStop:
		// The source's failure path (source.fail) stops the VM once it
		// has resumed it and let go of what the migration held.
		r.mig.abortOut(errStopRequested)
		r.mig.abortOut = nil
		r.setStateLocked(StateStopping, "")
		return r.inst.Gen, nil
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
		return r.inst.Gen, nil
	}
	return 0, &TransitionError{State: r.inst.State, Requested: req.String()}
}

// start runs the VM and then watches it until it ends.
func (r *Runtime) start(m VM) {
	if err := m.Start(); err != nil {
		r.fail(m, FailureHostError, fmt.Errorf("start: %w", err))
		return
	}
	r.mu.Lock()
	if r.machine == m && r.inst.State == StateStarting {
		r.setStateLocked(StateRunning, "")
	}
	r.mu.Unlock()
	r.watch(m)
}

// watch waits for the VM to end and moves the instance accordingly: a guest
// that powers off is stopped and destroyed; a guest that fails is failed,
// with the reason.
func (r *Runtime) watch(m VM) {
	exit, err := m.Wait(context.Background())
	if err != nil {
		r.fail(m, FailureHostError, err)
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
		r.failLocked(exitFailureKind(exit), exit.String())
		r.releaseLocked(consoleVMFailed)
	case vmm.ExitPoweredOff, vmm.ExitReset, vmm.ExitStopped:
		r.setStateLocked(StateStopping, exit.String())
		r.setStateLocked(StateStopped, exit.String())
		r.retireLocked(StateDestroyed, exit.String(), consoleVMStopped)
	}
}

// stop ends the VM: stopping -> stopped -> destroyed.
func (r *Runtime) stop(m VM) {
	if err := m.Stop(); err != nil && !errors.Is(err, vmm.ErrNotNow) {
		r.log.Warn("stop", "err", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine != m || r.inst.State != StateStopping {
		return
	}
	r.setStateLocked(StateStopped, "")
	r.retireLocked(StateDestroyed, "", consoleVMStopped)
}

func (r *Runtime) reboot(m VM) {
	if err := m.Reset(); err != nil {
		r.fail(m, FailureHostError, fmt.Errorf("reboot: %w", err))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine == m && r.inst.State == StateRebooting {
		r.setStateLocked(StateRunning, "")
	}
}

// exitFailureKind says why a VM that ended with vmm.ExitFailed failed: the
// guest's doing (a panic, a triple fault, something the VMM cannot handle) or the
// host's (anything else, such as a failed KVM ioctl or VM entry).
func exitFailureKind(e vmm.Exit) FailureKind {
	switch {
	case errors.Is(e.Err, vmm.ErrGuestPanicked):
		return FailureGuestPanicked
	case errors.Is(e.Err, vmm.ErrTripleFault):
		return FailureGuestTripleFault
	case errors.Is(e.Err, vmm.ErrEmulation), errors.Is(e.Err, vmm.ErrUnhandledExit):
		return FailureGuestError
	}
	return FailureHostError
}

// fail puts m's instance in Failed with kind and err as the reason.
func (r *Runtime) fail(m VM, kind FailureKind, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine != m {
		return
	}
	r.failLocked(kind, err.Error())
	r.releaseLocked(consoleVMFailed)
}

// releaseLocked detaches the VM and its consoles, telling them why
// (console, one of the console* phrases), and closes the VM off the lock.
func (r *Runtime) releaseLocked(console string) { r.retireLocked(0, "", console) }

// retireLocked is releaseLocked, and then, once the VM is closed (so that
// what the guest printed last is in the console's history), moves the
// instance to state then with reason, unless the instance changed
// meanwhile. A zero then moves nothing.
func (r *Runtime) retireLocked(then State, reason, console string) {
	m := r.machine
	r.machine = nil
	r.serial.closeAll(console)
	gen := r.inst.Gen
	r.closeLater(m, func() {
		if then != 0 && r.inst.Gen == gen {
			r.setStateLocked(then, reason)
		}
	})
}

// closeLater closes m, when not nil, in the background, then calls each
// of after with r.mu held. A new VM is built only once it is done. The
// caller holds r.mu.
func (r *Runtime) closeLater(m VM, after ...func()) {
	r.closing++
	go func() {
		if m != nil {
			if err := m.Close(); err != nil {
				r.log.Warn("release vm", "err", err)
			}
			r.shells.refill() // for the next instance's VM
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, f := range after {
			f()
		}
		if r.closing--; r.closing == 0 {
			close(r.closed)
			r.closed = make(chan struct{})
		}
	}()
}

// WaitGen blocks until the generation passes gen or ctx ends, and returns
// the instance, its migrations and the transitions after gen that are still
// kept (the last 32), oldest first.
func (r *Runtime) WaitGen(ctx context.Context, gen uint64) (Instance, MigrationStatus, []Transition, error) {
	for {
		r.mu.Lock()
		if r.req == nil {
			r.mu.Unlock()
			return Instance{}, MigrationStatus{}, nil, ErrNoInstance
		}
		inst, mig, ch := r.inst, r.mig.statusLocked(), r.changed
		var hist []Transition
		for _, t := range r.history {
			if t.Gen > gen {
				hist = append(hist, t)
			}
		}
		r.mu.Unlock()
		if inst.Gen > gen {
			return inst, mig, hist, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return inst, mig, hist, nil
		}
	}
}

// SerialHistory reads the instance's kept console output.
func (r *Runtime) SerialHistory(_ context.Context, q SerialQuery) (SerialHistory, error) {
	r.mu.Lock()
	log, err := r.serial, error(nil)
	if r.req == nil {
		err = ErrNoInstance
	}
	r.mu.Unlock()
	if err != nil {
		return SerialHistory{}, err
	}
	return log.history(q), nil
}

// SerialAttach attaches a console to the instance, unless MaxConsoles are
// attached already.
func (r *Runtime) SerialAttach(context.Context) (SerialConn, error) {
	r.mu.Lock()
	log, err := r.serial, error(nil)
	if r.req == nil {
		err = ErrNoInstance
	}
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !r.consoles.take(r.maxConsoles) {
		return nil, ErrTooManyConsoles
	}
	return &countedConsole{serialSub: log.attach(), n: &r.consoles}, nil
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

// closeWait bounds how long Close waits for a VM being built or closed. A
// variable for tests.
var closeWait = 10 * time.Second

// Close stops and releases the VM, for server shutdown, and waits until
// every VM is closed, or closeWait has passed: a VM build cannot be
// interrupted, and one still under way is closed by its ensure when it
// finishes. Nothing is built afterwards.
func (r *Runtime) Close() {
	timer := time.NewTimer(closeWait)
	defer timer.Stop()
	r.shells.close() // off the lock: it may wait for one being made
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shut = true
	r.releaseLocked(consoleShuttingDown)
	for r.closing > 0 || r.building != nil {
		ch := r.closed
		if r.building != nil {
			ch = r.building
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			r.mu.Lock()
			r.log.Warn("shutdown: gave up waiting for VMs being built or released; each is closed when done",
				"waited", closeWait, "building", r.building != nil, "closing", r.closing)
			return
		}
		r.mu.Lock()
	}
}
