package vmm

import "fmt"

// Phase is a Machine's lifecycle state.
type Phase int

// The lifecycle phases, with the phases that may follow each.
const (
	// PhaseCreated: New has built the VM, loaded the image and set the boot
	// state; no vCPU has run. ImportState may replace the boot state here
	// (a migration target). Next: Running (Start), Stopped (Stop), Closed
	// (Close).
	PhaseCreated Phase = iota + 1
	// PhaseRunning: the vCPUs run. Next: Paused (Pause), Running (Reset,
	// or a guest reset), Stopped (Stop, guest power-off, guest failure),
	// Closed (Close, which stops first).
	PhaseRunning
	// PhasePaused: every vCPU is parked outside KVM_RUN and devices are
	// quiesced, so state can be exported or imported and RAM copied.
	// Next: Running (Resume), Paused (Reset), Stopped (Stop), Closed.
	PhasePaused
	// PhaseStopped: the VM has ended for good; Exit says how. Guest RAM
	// can still be read. Next: Closed.
	PhaseStopped
	// PhaseClosed: every resource is released. Final.
	PhaseClosed
)

func (s Phase) String() string {
	switch s {
	case PhaseCreated:
		return "created"
	case PhaseRunning:
		return "running"
	case PhasePaused:
		return "paused"
	case PhaseStopped:
		return "stopped"
	case PhaseClosed:
		return "closed"
	}
	return fmt.Sprintf("Phase(%d)", int(s))
}

// Action is something a caller asks of a Machine.
type Action int

// The actions checked against the lifecycle state.
const (
	ActionStart Action = iota + 1
	ActionPause
	ActionResume
	ActionReset
	ActionStop
	ActionExportState
	ActionImportState
	ActionSerialInput
	ActionMemory // read or write guest RAM, dirty logging
	ActionClose
)

func (a Action) String() string {
	switch a {
	case ActionStart:
		return "start"
	case ActionPause:
		return "pause"
	case ActionResume:
		return "resume"
	case ActionReset:
		return "reset"
	case ActionStop:
		return "stop"
	case ActionExportState:
		return "export state"
	case ActionImportState:
		return "import state"
	case ActionSerialInput:
		return "serial input"
	case ActionMemory:
		return "memory access"
	case ActionClose:
		return "close"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// allowed reports whether action a may run in phase s. It is the one place
// that decides; every exported action calls check first.
func allowed(s Phase, a Action) bool {
	switch s {
	case PhaseCreated:
		switch a {
		case ActionStart, ActionStop, ActionReset, ActionExportState, ActionImportState,
			ActionSerialInput, ActionMemory, ActionClose:
			return true
		case ActionPause, ActionResume:
			return false
		}
	case PhaseRunning:
		switch a {
		case ActionPause, ActionReset, ActionStop, ActionSerialInput, ActionMemory, ActionClose:
			return true
		case ActionStart, ActionResume, ActionExportState, ActionImportState:
			return false
		}
	case PhasePaused:
		switch a {
		case ActionResume, ActionReset, ActionStop, ActionExportState, ActionImportState,
			ActionSerialInput, ActionMemory, ActionClose:
			return true
		case ActionStart, ActionPause:
			return false
		}
	case PhaseStopped:
		switch a {
		case ActionMemory, ActionClose:
			return true
		case ActionStart, ActionPause, ActionResume, ActionReset, ActionStop,
			ActionExportState, ActionImportState, ActionSerialInput:
			return false
		}
	case PhaseClosed:
		switch a {
		case ActionStart, ActionPause, ActionResume, ActionReset, ActionStop,
			ActionExportState, ActionImportState, ActionSerialInput, ActionMemory, ActionClose:
			return false
		}
	}
	panic(fmt.Sprintf("vmm: lifecycle table misses phase %v, action %v", s, a))
}

// check returns a *NotNowError unless a is allowed in s.
func check(s Phase, a Action) error {
	if allowed(s, a) {
		return nil
	}
	return &NotNowError{Action: a, Phase: s}
}

// ExitReason says how a VM ended.
type ExitReason int

// The exit reasons.
const (
	// ExitPoweredOff: the guest wrote its exit status to port 0xf4.
	ExitPoweredOff ExitReason = iota + 1
	// ExitStopped: the host called Stop (or Close).
	ExitStopped
	// ExitFailed: the guest or KVM failed; Exit.Err says how.
	ExitFailed
	// ExitReset: the guest asked for a reset and Config.ExitOnReset is set.
	ExitReset
)

func (r ExitReason) String() string {
	switch r {
	case ExitPoweredOff:
		return "powered off"
	case ExitStopped:
		return "stopped"
	case ExitFailed:
		return "failed"
	case ExitReset:
		return "reset"
	}
	return fmt.Sprintf("ExitReason(%d)", int(r))
}

// Exit is how a VM ended.
type Exit struct {
	Reason ExitReason
	// Status is the guest's exit status (ExitPoweredOff only).
	Status uint32
	// Err is the failure (ExitFailed only). The guest's doing wraps
	// ErrGuestPanicked, ErrTripleFault, ErrEmulation or ErrUnhandledExit; the host's
	// wraps ErrEntryFailed, a *kvm.Error or another error.
	Err error
}

func (e Exit) String() string {
	switch e.Reason {
	case ExitPoweredOff:
		return fmt.Sprintf("powered off with status %d", e.Status)
	case ExitFailed:
		return fmt.Sprintf("failed: %v", e.Err)
	}
	return e.Reason.String()
}
