package model

import (
	"fmt"
	"time"
)

// Generation numbers a record's versions. A record starts at generation 1;
// every change of a field the generation protects moves it to Next.
type Generation uint64

// FirstGeneration is the generation of a new record.
const FirstGeneration Generation = 1

// Next returns the generation after g.
func (g Generation) Next() Generation { return g + 1 }

// FailureKind says, as data, why a VMM failed.
type FailureKind string

const (
	// FailureProcessExited: the VMM's server process exited or was
	// killed, or was gone when its sled agent restarted (sled agent).
	FailureProcessExited FailureKind = "vmm_process_exited"
	// FailureVMMFailed: the VMM server reported its VM failed (sled agent).
	FailureVMMFailed FailureKind = "vmm_failed"
	// FailureExceedsReservation: a migration target whose spec needed more
	// than its sled reserved; the agent killed it (sled agent).
	FailureExceedsReservation FailureKind = "exceeds_reservation"
	// FailureVMMGone: the VMM's sled answers, but no longer knows the VMM
	// (the instance watcher).
	FailureVMMGone FailureKind = "vmm_gone"
	// FailureSledLost: the VMM's sled has not answered for longer than the
	// control plane waits (the instance watcher).
	FailureSledLost FailureKind = "sled_lost"
	// FailureSagaUnwound: the saga that made the VMM unwound after it had
	// been registered on its sled, and the VMM was torn down.
	FailureSagaUnwound FailureKind = "saga_unwound"
	// FailureUnknown: a sled agent reported a kind this control plane
	// does not know (a newer agent); its message is kept.
	FailureUnknown FailureKind = "unknown"
)

// FailureKinds lists every kind, in a fixed order.
var FailureKinds = []FailureKind{FailureProcessExited, FailureVMMFailed, FailureExceedsReservation,
	FailureVMMGone, FailureSledLost, FailureSagaUnwound, FailureUnknown}

// Known says whether k is one of FailureKinds.
func (k FailureKind) Known() bool {
	for _, x := range FailureKinds {
		if k == x {
			return true
		}
	}
	return false
}

// FailureReason says why a VMM (or an instance) failed.
type FailureReason struct {
	Kind    FailureKind
	Message string // for people: a signal, an exit code, a server's words
}

func (r FailureReason) String() string {
	if r.Message == "" {
		return string(r.Kind)
	}
	return string(r.Kind) + ": " + r.Message
}

// VmmState is the state of one VMM. Its zero value is not a state; use the
// variables below, or VmmFailed, or ParseVmmState at a boundary. Only the
// failed state carries a reason. VmmState values compare with ==.
//
// The states and those that may follow (a VMM never leaves a terminal state):
//
//	creating     -> starting, migrating (an inbound migration), failed, destroyed, saga_unwound
//	starting     -> running, stopping, failed, destroyed
//	running      -> stopping, rebooting, migrating, failed, destroyed
//	stopping     -> stopped, failed, destroyed
//	stopped      -> destroyed, failed
//	rebooting    -> running, failed, destroyed, stopping
//	migrating    -> running, stopping, destroyed (a source handed off), failed
//	failed       (terminal; carries its FailureReason)
//	destroyed    (terminal)
//	saga_unwound (terminal; the control plane's own: never ran on a sled)
type VmmState struct {
	name   string
	reason FailureReason // set only when name == "failed"
}

// The VMM states but failed, which is VmmFailed(reason).
var (
	VmmCreating    = VmmState{name: "creating"}
	VmmStarting    = VmmState{name: "starting"}
	VmmRunning     = VmmState{name: "running"}
	VmmStopping    = VmmState{name: "stopping"}
	VmmStopped     = VmmState{name: "stopped"}
	VmmRebooting   = VmmState{name: "rebooting"}
	VmmMigrating   = VmmState{name: "migrating"}
	VmmDestroyed   = VmmState{name: "destroyed"}
	VmmSagaUnwound = VmmState{name: "saga_unwound"}
)

// VmmStateNames lists the name of every state, failed included, in a fixed
// order (the database's CHECK constraint lists the same).
var VmmStateNames = []string{"creating", "starting", "running", "stopping", "stopped", "rebooting",
	"migrating", "failed", "destroyed", "saga_unwound"}

// VmmFailed is the failed state with its reason.
func VmmFailed(r FailureReason) VmmState { return VmmState{name: "failed", reason: r} }

// ParseVmmState makes a state from its name, and from a reason that must be
// present for "failed" and absent otherwise: the one door from the wire or
// the database into the domain.
func ParseVmmState(name string, reason *FailureReason) (VmmState, error) {
	if name == "failed" {
		if reason == nil {
			return VmmState{}, fmt.Errorf("VMM state failed: a failure reason is required")
		}
		if reason.Kind == "" {
			return VmmState{}, fmt.Errorf("VMM state failed: the failure reason has no kind")
		}
		return VmmFailed(*reason), nil
	}
	for _, n := range VmmStateNames {
		if n == name {
			if reason != nil {
				return VmmState{}, fmt.Errorf("VMM state %s: only a failed VMM has a failure reason", name)
			}
			return VmmState{name: n}, nil
		}
	}
	return VmmState{}, fmt.Errorf("VMM state %q: unknown (known: %v)", name, VmmStateNames)
}

// Name is the state's name, as the wire and the database write it.
func (s VmmState) Name() string { return s.name }

func (s VmmState) String() string {
	if s.name == "failed" {
		return "failed (" + s.reason.String() + ")"
	}
	return s.name
}

// Valid says whether s is a state (not the zero value).
func (s VmmState) Valid() bool { return s.name != "" }

// FailureReason returns the reason of a failed state.
func (s VmmState) FailureReason() (FailureReason, bool) { return s.reason, s.name == "failed" }

// IsFailed says whether the VMM failed.
func (s VmmState) IsFailed() bool { return s.name == "failed" }

// IsTerminal says whether the VMM will never change state again on its
// sled: destroyed or failed (saga_unwound, which never reached a sled, too).
func (s VmmState) IsTerminal() bool {
	return s.name == "failed" || s.name == "destroyed" || s.name == "saga_unwound"
}

// IsDestroyable says whether the VMM's sled resources may be released and
// its record retired: it can no longer run.
func (s VmmState) IsDestroyable() bool { return s.IsTerminal() }

// ExistsOnSled says whether a sled agent holds the VMM: not before its
// registration (creating), not once destroyed, never for a VMM whose saga
// unwound. A failed VMM is kept by its agent until unregistered.
func (s VmmState) ExistsOnSled() bool {
	return s.Valid() && s.name != "creating" && s.name != "destroyed" && s.name != "saga_unwound"
}

// VmmRuntime is the part of a VMM's record that its sled agent reports.
type VmmRuntime struct {
	State       VmmState
	Gen         Generation
	TimeUpdated time.Time
}

// Transition returns r moved to state to at time now, with the next
// generation, and true; or r unchanged and false when r is already in to,
// or in a terminal state (which nothing leaves).
func (r VmmRuntime) Transition(to VmmState, now time.Time) (VmmRuntime, bool) {
	if to == r.State || r.State.IsTerminal() {
		return r, false
	}
	return VmmRuntime{State: to, Gen: r.Gen.Next(), TimeUpdated: now}, true
}
