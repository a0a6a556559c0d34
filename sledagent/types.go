package sledagent

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/spec"
)

// VmmState is a VMM's state as the agent keeps it: the state its server
// reports, or StateFailed when the agent found its process gone.
type VmmState string

// The VMM states. StateFailed and StateDestroyed are terminal.
const (
	StateCreating  VmmState = "creating"
	StateStarting  VmmState = "starting"
	StateRunning   VmmState = "running"
	StateStopping  VmmState = "stopping"
	StateStopped   VmmState = "stopped"
	StateRebooting VmmState = "rebooting"
	StateMigrating VmmState = "migrating"
	StateFailed    VmmState = "failed"
	StateDestroyed VmmState = "destroyed"
)

// AllStates lists every VmmState, for exhaustive tables and metrics.
var AllStates = []VmmState{StateCreating, StateStarting, StateRunning, StateStopping, StateStopped,
	StateRebooting, StateMigrating, StateFailed, StateDestroyed}

// Terminal says whether a VMM in state s never changes again.
func (s VmmState) Terminal() bool { return s == StateFailed || s == StateDestroyed }

// FailureKind says why a VMM failed.
type FailureKind string

// The failure kinds.
const (
	// FailureProcessExited: the VMM's server process exited or was killed,
	// or was gone when the agent restarted.
	FailureProcessExited FailureKind = "vmm_process_exited"
	// FailureVMMFailed: the VMM's server reported its VM failed.
	FailureVMMFailed FailureKind = "vmm_failed"
	// FailureExceedsReservation: a migration target's spec, as it came
	// from the source, needs more CPUs or memory than the target
	// reserved; the agent killed its server.
	FailureExceedsReservation FailureKind = "exceeds_reservation"
)

// FailureReason is why a VMM failed, as data.
type FailureReason struct {
	Kind    FailureKind
	Message string
}

// MigrationState is a migration's state as the agent reports it.
type MigrationState string

// The migration states.
const (
	MigrationPending    MigrationState = "pending"
	MigrationInProgress MigrationState = "in_progress"
	MigrationCompleted  MigrationState = "completed"
	MigrationFailed     MigrationState = "failed"
)

// MigrationRuntime is one migration into or out of a VMM, with a
// generation of its own.
type MigrationRuntime struct {
	ID          uuid.UUID
	State       MigrationState
	Gen         uint64
	TimeUpdated time.Time
}

// SledVmmState is everything the agent reports of a VMM. Gen grows by one
// at every change of any other field (TimeUpdated aside).
type SledVmmState struct {
	State        VmmState
	Gen          uint64
	TimeUpdated  time.Time
	Failure      *FailureReason // only in StateFailed
	MigrationIn  *MigrationRuntime
	MigrationOut *MigrationRuntime
}

// Properties identify the instance a VMM incarnates.
type Properties struct {
	ID          uuid.UUID
	Name        string
	Description string
}

// Resources are the CPUs and memory a VMM reserves.
type Resources struct {
	CPUs      uint32
	MemoryMiB uint64
}

// MigrationTarget makes a new VMM the target of a live migration.
type MigrationTarget struct {
	SrcAddr     string
	MigrationID uuid.UUID
	Secret      string
	// Replace holds host-local storage backends by the name of the source's
	// component each replaces, each as JSON of the spec version
	// ReplaceVersion names (checked by the API handler, passed on as is).
	Replace        map[string]json.RawMessage
	ReplaceVersion string
}

// EnsureRequest registers a VMM: exactly one of Spec and Migrate is set.
type EnsureRequest struct {
	Properties Properties
	Spec       *spec.Spec
	Migrate    *MigrationTarget
	// Resources is what the VMM reserves: the spec's board, or given with
	// a migration target.
	Resources Resources
	// Fingerprint identifies the request for idempotency: two requests
	// with the same fingerprint are the same registration. The version
	// handler computes it from the canonical wire form (without secrets'
	// plain text).
	Fingerprint string
}

// Vmm is a registered VMM as the API answers it.
type Vmm struct {
	ID         uuid.UUID
	Properties Properties
	Addr       string
	Resources  Resources
	State      SledVmmState
}

// Requested is a state change the control plane asks of a VMM.
type Requested string

// The state changes passed to a VMM's server.
const (
	RequestRun    Requested = "run"
	RequestStop   Requested = "stop"
	RequestReboot Requested = "reboot"
)

// MigrationArm arms a VMM as the source of a live migration.
type MigrationArm struct {
	MigrationID uuid.UUID
	Secret      string // empty: the VMM server makes one
	TTL         time.Duration
}

// MigrationArmed is an armed source; Secret is set only when the VMM server
// made it.
type MigrationArmed struct {
	MigrationID uuid.UUID
	ExpiresAt   time.Time
	Secret      string
}

// SerialQuery asks for a piece of the serial console's history.
type SerialQuery struct {
	FromStart  *uint64
	MostRecent *uint64
	MaxBytes   *uint32
}

// SerialChunk is a piece of the serial console's history.
type SerialChunk struct {
	Data       []byte
	Start, End uint64
}

// Inventory is the sled's id and capacity.
type Inventory struct {
	SledID    uuid.UUID
	CPUs      Amount
	MemoryMiB Amount
	VMMs      int
}

// Amount is one resource: what is offered, reserved and free.
type Amount struct {
	Total, Reserved, Free uint64
}
