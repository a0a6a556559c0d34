package model

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// InstanceState is the control plane's own state of an instance: the part
// that no sled reports. What users see is derived from it and the active
// VMM (Derive).
//
//	creating  -> no_vmm (created), destroyed (creation unwound)
//	no_vmm    -> vmm (a start gave it a VMM), destroyed (deleted)
//	vmm       -> no_vmm (its VMM ended), failed (its VMM failed)
//	failed    -> vmm (started again), destroyed (deleted)
//	destroyed (terminal)
type InstanceState string

const (
	InstanceCreating  InstanceState = "creating"
	InstanceNoVmm     InstanceState = "no_vmm"
	InstanceVmm       InstanceState = "vmm"
	InstanceFailed    InstanceState = "failed"
	InstanceDestroyed InstanceState = "destroyed"
)

// InstanceStates lists every instance state in a fixed order.
var InstanceStates = []InstanceState{InstanceCreating, InstanceNoVmm, InstanceVmm, InstanceFailed, InstanceDestroyed}

// ParseInstanceState checks a state from the database.
func ParseInstanceState(s string) (InstanceState, error) {
	for _, x := range InstanceStates {
		if string(x) == s {
			return x, nil
		}
	}
	return "", fmt.Errorf("instance state %q: unknown (known: %v)", s, InstanceStates)
}

// InstanceRuntime is the part of an instance's record that its generation
// protects: its state, its VMMs and its migration. Invariants (the database
// checks them too): ActiveVmm is set exactly in state vmm; a TargetVmm and a
// Migration come together, and only beside an ActiveVmm; Failure is set
// exactly in state failed.
type InstanceRuntime struct {
	State       InstanceState
	Gen         Generation
	TimeUpdated time.Time
	ActiveVmm   uuid.NullUUID
	TargetVmm   uuid.NullUUID
	Migration   uuid.NullUUID
	Failure     *FailureReason
}

// Check reports the first invariant r breaks, or nil.
func (r InstanceRuntime) Check() error {
	switch {
	case r.Gen < FirstGeneration:
		return fmt.Errorf("instance generation %d: below %d", r.Gen, FirstGeneration)
	case (r.State == InstanceVmm) != r.ActiveVmm.Valid:
		return fmt.Errorf("instance in state %s: an active VMM exactly in state vmm", r.State)
	case r.TargetVmm.Valid != r.Migration.Valid:
		return fmt.Errorf("instance: a target VMM and a migration come together")
	case r.TargetVmm.Valid && !r.ActiveVmm.Valid:
		return fmt.Errorf("instance: a migration target without an active VMM")
	case r.TargetVmm.Valid && r.TargetVmm.UUID == r.ActiveVmm.UUID:
		return fmt.Errorf("instance: the target VMM is the active VMM")
	case (r.State == InstanceFailed) != (r.Failure != nil):
		return fmt.Errorf("instance in state %s: a failure reason exactly in state failed", r.State)
	}
	return nil
}

// sameFields says whether a and b agree on every generation-protected
// field (not the generation or the time).
func sameFields(a, b InstanceRuntime) bool {
	if a.State != b.State || a.ActiveVmm != b.ActiveVmm || a.TargetVmm != b.TargetVmm || a.Migration != b.Migration {
		return false
	}
	if (a.Failure == nil) != (b.Failure == nil) {
		return false
	}
	return a.Failure == nil || *a.Failure == *b.Failure
}

// ApplyVmm works out what a sled agent's report of VMM vmmID means for its
// instance, as seed 001 lays it out:
//   - the migration of the instance completed (either side says so): the
//     target becomes the active VMM;
//   - it failed (either side), or its target VMM ended: the instance drops
//     the target and the migration, and the source runs on;
//   - the active VMM ended: the instance has no VMM (destroyed), or failed
//     with the VMM's reason (failed), and any migration is dropped;
//   - anything else, or a VMM the instance no longer points at: no change.
//
// It returns the new runtime with the next generation and true, or r and
// false when nothing protected changed (the generation moves iff a field
// does).
func ApplyVmm(r InstanceRuntime, vmmID uuid.UUID, obs SledVmmState, now time.Time) (InstanceRuntime, bool) {
	next := r
	isActive := r.ActiveVmm.Valid && r.ActiveVmm.UUID == vmmID
	isTarget := r.TargetVmm.Valid && r.TargetVmm.UUID == vmmID
	ours := func(m *MigrationObservation) bool {
		return m != nil && r.Migration.Valid && m.ID == r.Migration.UUID
	}
	var mig *MigrationObservation
	switch {
	case isActive && ours(obs.MigrationOut):
		mig = obs.MigrationOut
	case isTarget && ours(obs.MigrationIn):
		mig = obs.MigrationIn
	}
	switch {
	case mig != nil && mig.State == MigrationCompleted:
		next.ActiveVmm, next.TargetVmm, next.Migration = r.TargetVmm, uuid.NullUUID{}, uuid.NullUUID{}
	case isActive && obs.Vmm.State.IsTerminal():
		next.ActiveVmm, next.TargetVmm, next.Migration = uuid.NullUUID{}, uuid.NullUUID{}, uuid.NullUUID{}
		if reason, failed := obs.Vmm.State.FailureReason(); failed {
			next.State, next.Failure = InstanceFailed, &reason
		} else {
			next.State, next.Failure = InstanceNoVmm, nil
		}
	case (mig != nil && mig.State == MigrationFailed) || (isTarget && obs.Vmm.State.IsTerminal()):
		next.TargetVmm, next.Migration = uuid.NullUUID{}, uuid.NullUUID{}
	}
	if sameFields(r, next) {
		return r, false
	}
	next.Gen, next.TimeUpdated = r.Gen.Next(), now
	return next, true
}

// VisibleState is an instance's state as users see it.
type VisibleState string

const (
	VisibleCreating  VisibleState = "creating"
	VisibleStarting  VisibleState = "starting"
	VisibleRunning   VisibleState = "running"
	VisibleStopping  VisibleState = "stopping"
	VisibleStopped   VisibleState = "stopped"
	VisibleRebooting VisibleState = "rebooting"
	VisibleMigrating VisibleState = "migrating"
	VisibleFailed    VisibleState = "failed"
	VisibleDestroyed VisibleState = "destroyed"
)

// Derive works out what users see of an instance from its record and its
// active VMM's state (nil when it has none, or it could not be read):
//   - an instance without a VMM shows its own state (creating, stopped,
//     failed, destroyed);
//   - with one, the VMM's: a VMM being created shows starting; one stopped
//     but not yet gone shows stopping (the instance is not stopped until its
//     VMM is retired); a running VMM with a migration under way shows
//     migrating;
//   - an instance that points at a VMM whose state is unknown shows failed:
//     the invariant the database keeps says this cannot happen.
func Derive(r InstanceRuntime, active *VmmState) VisibleState {
	switch r.State {
	case InstanceCreating:
		return VisibleCreating
	case InstanceNoVmm:
		return VisibleStopped
	case InstanceFailed:
		return VisibleFailed
	case InstanceDestroyed:
		return VisibleDestroyed
	}
	if active == nil || !active.Valid() {
		return VisibleFailed
	}
	switch active.Name() {
	case "creating", "starting":
		return VisibleStarting
	case "running":
		if r.Migration.Valid {
			return VisibleMigrating
		}
		return VisibleRunning
	case "stopping", "stopped":
		return VisibleStopping
	case "rebooting":
		return VisibleRebooting
	case "migrating":
		return VisibleMigrating
	case "failed":
		return VisibleFailed
	default: // destroyed, saga_unwound: retired in the same write that stores it
		return VisibleStopped
	}
}
