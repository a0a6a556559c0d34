package model

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// MigrationState is one side's view of a migration.
//
//	pending     -> in_progress, completed, failed
//	in_progress -> completed, failed
//	completed   (terminal)
//	failed      (terminal)
type MigrationState string

const (
	MigrationPending    MigrationState = "pending"     // armed, or registered as target; not started
	MigrationInProgress MigrationState = "in_progress" // the stream runs
	MigrationCompleted  MigrationState = "completed"   // the target has the VM
	MigrationFailed     MigrationState = "failed"      // the source keeps the VM
)

// MigrationStates lists every migration state in a fixed order.
var MigrationStates = []MigrationState{MigrationPending, MigrationInProgress, MigrationCompleted, MigrationFailed}

// ParseMigrationState checks a state from the wire or the database.
func ParseMigrationState(s string) (MigrationState, error) {
	for _, m := range MigrationStates {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("migration state %q: unknown (known: %v)", s, MigrationStates)
}

// IsTerminal says whether the migration is over on this side.
func (m MigrationState) IsTerminal() bool { return m == MigrationCompleted || m == MigrationFailed }

// MigrationRuntime is one side's state of a migration and its generation.
type MigrationRuntime struct {
	State       MigrationState
	Gen         Generation
	TimeUpdated time.Time
}

// MigrationObservation is a migration as one VMM's sled agent reports it.
type MigrationObservation struct {
	ID uuid.UUID
	MigrationRuntime
}

// SledVmmState is everything a sled agent reports of a VMM: its own state
// and its inbound and outbound migrations, each with its generation.
type SledVmmState struct {
	Vmm          VmmRuntime
	MigrationIn  *MigrationObservation
	MigrationOut *MigrationObservation
}

// Migration is the control plane's record of one migration: both sides,
// each with the state and generation its VMM's agent last reported.
type Migration struct {
	ID          uuid.UUID
	InstanceID  uuid.UUID
	SourceVmm   uuid.UUID
	TargetVmm   uuid.UUID
	Source      MigrationRuntime
	Target      MigrationRuntime
	TimeCreated time.Time
}
