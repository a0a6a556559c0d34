// Package server is the VMM server's HTTP layer: it mounts every supported
// version of the vmm-server contract (today /v1), validates each request
// against that version's OpenAPI document, converts wire types to domain
// types at the handler, and calls one Core that runs the VM. Every failure
// answers the contract's Error schema with a stable error_code.
package server

import (
	"context"
	"crypto/subtle"
	"io"
	"maps"
	"net"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/spec"
)

// State is an instance's lifecycle state. The states and what may follow
// each (decide in runtime.go says which requests do what):
//
//	Creating  -> Starting (run), Stopping (stop), Migrating (as a migration target)
//	Starting  -> Running, Failed
//	Running   -> Stopping (stop, or the guest powered off), Rebooting, Migrating (outbound), Failed
//	Rebooting -> Running, Stopping (the guest powered off), Failed
//	Migrating -> Running (target after the hand-off; source after a failed migration),
//	             Destroyed (source after the hand-off), Stopping (stop, or the guest
//	             powered off, during an outbound migration), Failed
//	Stopping  -> Stopped
//	Stopped   -> Destroyed (once the VM is released)
//	Failed, Destroyed: final; a new ensure may replace the instance then.
//
// A stop during an outbound migration (before its hand-off) is honoured:
// the migration is aborted (its failure reason says a stop was requested)
// and the instance goes migrating -> stopping at once; once the aborted
// migration has resumed the VM and let go of what it held, the VM is
// stopped: stopping -> stopped -> destroyed, as any stop. After the
// hand-off a stop is refused: the VM is no longer here.
type State uint8

// The lifecycle states.
const (
	StateCreating State = iota + 1
	StateStarting
	StateRunning
	StateStopping
	StateStopped
	StateRebooting
	StateMigrating
	StateFailed
	StateDestroyed
)

var stateNames = map[State]string{
	StateCreating: "creating", StateStarting: "starting", StateRunning: "running",
	StateStopping: "stopping", StateStopped: "stopped", StateRebooting: "rebooting",
	StateMigrating: "migrating", StateFailed: "failed", StateDestroyed: "destroyed",
}

// String returns the state in snake case, as the contracts spell it.
func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return "unknown"
}

// Requested is a state change a client asks for.
type Requested uint8

// The requests.
const (
	RequestRun Requested = iota + 1
	RequestStop
	RequestReboot
)

// String returns "run", "stop" or "reboot".
func (r Requested) String() string {
	return map[Requested]string{RequestRun: "run", RequestStop: "stop", RequestReboot: "reboot"}[r]
}

// Properties identify an instance.
type Properties struct {
	ID          uuid.UUID
	Name        string
	Description string
}

// Instance is an instance as it is at one generation.
type Instance struct {
	Properties Properties
	State      State
	// Gen grows by one at every change of State.
	Gen uint64
	// FailureReason says why, in state Failed, in words.
	FailureReason string
	// FailureKind says why, in state Failed, as data; empty in every
	// other state.
	FailureKind FailureKind
}

// FailureKind is why an instance failed, as data a client can act on (the
// message beside it, FailureReason, is for people). The kinds are stable,
// in snake case, as the contracts spell them.
type FailureKind string

// The failure kinds.
const (
	// FailureGuestPanicked: the guest reported a panic through its
	// pvpanic device.
	FailureGuestPanicked FailureKind = "guest_panicked"
	// FailureGuestTripleFault: the guest triple-faulted (KVM's shutdown
	// exit).
	FailureGuestTripleFault FailureKind = "guest_triple_fault"
	// FailureGuestError: the guest did something the VMM cannot handle
	// (an exit it does not handle, an instruction KVM cannot emulate).
	FailureGuestError FailureKind = "guest_error"
	// FailureMigrationFailed: an inbound migration failed on the target,
	// or the source could not resume its VM after an outbound migration
	// failed.
	FailureMigrationFailed FailureKind = "migration_failed"
	// FailureHostError: the VMM or KVM failed (the VM did not start, an
	// ioctl failed, a reset could not be done), or anything else.
	FailureHostError FailureKind = "host_error"
)

// failureKinds lists every FailureKind: each API version that reports
// kinds names every one.
var failureKinds = []FailureKind{FailureGuestPanicked, FailureGuestTripleFault, FailureGuestError,
	FailureMigrationFailed, FailureHostError}

// Transition is one change of an instance's state, as the state monitor
// reports it.
type Transition struct {
	// Gen is the generation the change made.
	Gen   uint64
	State State
	// FailureReason says why, when State is Failed (and what ended the VM
	// in some other states).
	FailureReason string
	// FailureKind says why as data, when State is Failed; empty in every
	// other state.
	FailureKind FailureKind
	// At is when the change happened.
	At time.Time
}

// MigrateInit makes a new instance the target of a live migration.
type MigrateInit struct {
	MigrationID uuid.UUID
	SrcAddr     string
	// Secret is the migration's one-time secret, which the source was armed
	// with; the two prove to each other inside the stream that they hold it.
	// It is never logged or answered.
	Secret string
	// Replace amends the source's spec: each entry replaces the component
	// of that key (a storage backend, by one of the same kind).
	Replace map[spec.Key]spec.Component
}

// Equal reports whether two migration inits are the same.
func (m MigrateInit) Equal(o MigrateInit) bool {
	return m.MigrationID == o.MigrationID && m.SrcAddr == o.SrcAddr &&
		subtle.ConstantTimeCompare([]byte(m.Secret), []byte(o.Secret)) == 1 && maps.Equal(m.Replace, o.Replace)
}

// EnsureRequest creates the instance: exactly one of Spec and Migrate is set.
type EnsureRequest struct {
	Properties Properties
	Spec       *spec.Spec
	Migrate    *MigrateInit
}

// Equal reports whether two ensure requests ask for the same instance.
func (r EnsureRequest) Equal(o EnsureRequest) bool {
	if r.Properties != o.Properties || (r.Spec == nil) != (o.Spec == nil) || (r.Migrate == nil) != (o.Migrate == nil) {
		return false
	}
	if r.Spec != nil && !r.Spec.Equal(*o.Spec) {
		return false
	}
	return r.Migrate == nil || r.Migrate.Equal(*o.Migrate)
}

// SerialQuery selects part of the serial history: bytes from the absolute
// offset FromStart, or the MostRecent bytes; at most MaxBytes.
type SerialQuery struct {
	FromStart  *uint64
	MostRecent *uint64
	MaxBytes   int
}

// SerialHistory is a piece of serial output with its absolute offsets.
type SerialHistory struct {
	Data       []byte
	Start, End uint64
}

// SerialConn is one attached console: Output yields guest output (closed when
// the console ends or the reader fell too far behind), End says which of
// the two closed it, Write sends input to the guest, Close detaches.
type SerialConn interface {
	Output() <-chan []byte
	// End says why Output was closed; it is meaningful only once Output
	// is closed.
	End() ConsoleEnd
	io.WriteCloser
}

// ConsoleEnd is why a console's output ended.
type ConsoleEnd struct {
	// Behind says the reader fell too far behind and was cut off; false:
	// the instance's console ended (its VM stopped, failed or migrated
	// away, or the server is shutting down).
	Behind bool
	// Reason says what happened, in a few words fit for a client ("the VM
	// stopped").
	Reason string
}

// MigrationArm arms a running instance as the source of one migration.
type MigrationArm struct {
	ID uuid.UUID
	// Secret is the one-time secret to bind to ID; empty: the server makes
	// one and answers it in ArmedMigration.
	Secret string
	// TTL is how long the arm holds; zero: DefaultArmTTL.
	TTL time.Duration
}

// ArmedMigration is an armed migration.
type ArmedMigration struct {
	ID uuid.UUID
	// Secret is set only when the server made it.
	Secret    string
	ExpiresAt time.Time
}

// MigrationPhase is where a migration is.
type MigrationPhase string

// The migration phases, in order; Completed and Failed are final.
const (
	PhaseNegotiate   MigrationPhase = "negotiate"
	PhasePreamble    MigrationPhase = "preamble"
	PhaseRAMPrecopy  MigrationPhase = "ram_precopy"
	PhasePause       MigrationPhase = "pause"
	PhaseRAMFinal    MigrationPhase = "ram_final"
	PhaseDeviceState MigrationPhase = "device_state"
	PhaseClock       MigrationPhase = "clock"
	PhaseHandoff     MigrationPhase = "handoff"
	PhaseCompleted   MigrationPhase = "completed"
	PhaseFailed      MigrationPhase = "failed"
)

// migrationPhases lists every MigrationPhase, in order: each API version
// names every one (TestV1MigrationPhasesComplete).
var migrationPhases = []MigrationPhase{PhaseNegotiate, PhasePreamble, PhaseRAMPrecopy, PhasePause, PhaseRAMFinal,
	PhaseDeviceState, PhaseClock, PhaseHandoff, PhaseCompleted, PhaseFailed}

// MigrationProgress is one migration's progress.
type MigrationProgress struct {
	MigrationID uuid.UUID
	Phase       MigrationPhase
	BytesSent   uint64
	PagesLeft   uint64
	Rounds      uint32
	// Total is the time from start to end, once the migration ended.
	Total time.Duration
	// Downtime is how long the guest did not run, once the migration
	// completed: on the target the whole of it (the source's pause to the
	// hand-off, carried by the hand-off, plus the target's resume); on the
	// source its part, pause to hand-off.
	Downtime      time.Duration
	FailureReason string
}

// MigrationStatus holds the migrations into and out of an instance; nil
// where there is none.
type MigrationStatus struct {
	In, Out *MigrationProgress
}

// Core runs the one instance of a VMM server. The HTTP layer calls it with
// domain types only. Errors it returns are matched with errors.Is/As against
// the errors of this package (ErrNoInstance, *TransitionError, ...) and
// *spec.ValidationError; anything else is an internal error.
type Core interface {
	// Ensure creates the instance, or reports created=false when an identical
	// request already did; a different request gets ErrInstanceExists.
	Ensure(ctx context.Context, req EnsureRequest) (inst Instance, created bool, err error)
	// Instance returns the instance now.
	Instance(ctx context.Context) (Instance, error)
	// Spec returns the instance and its spec; nil while a migration target
	// waits for its source.
	Spec(ctx context.Context) (Instance, *spec.Spec, error)
	// DerivedSMBIOS is the SMBIOS table this server shows an instance with
	// properties p whose spec sets none: a version that cannot carry an
	// explicit table may still answer a spec whose table equals it.
	DerivedSMBIOS(p Properties) spec.SMBIOS
	// RequestState asks for a state change and returns without waiting,
	// with the generation at which the request took effect (the current
	// one for a request already done or under way).
	RequestState(ctx context.Context, r Requested) (uint64, error)
	// WaitGen blocks until the generation passes gen or ctx ends, and returns
	// the instance and its migrations as they are then, with the
	// instance's transitions after gen, oldest first (the most recent ones
	// only: a server keeps a few dozen; a first Gen above gen+1 says some
	// were missed).
	WaitGen(ctx context.Context, gen uint64) (Instance, MigrationStatus, []Transition, error)
	// SerialHistory reads kept serial output.
	SerialHistory(ctx context.Context, q SerialQuery) (SerialHistory, error)
	// SerialAttach attaches a console.
	SerialAttach(ctx context.Context) (SerialConn, error)
	// MigrationStatus returns the migrations' progress.
	MigrationStatus(ctx context.Context) (MigrationStatus, error)
	// MigrateExpect arms the running instance as the source of one
	// migration, binding a one-time secret with an expiry to its id.
	MigrateExpect(ctx context.Context, arm MigrationArm) (ArmedMigration, error)
	// MigrateSource checks that a migration with this id is armed (not
	// expired, no other target proving itself for it: else a
	// *TransitionError) and returns the function that serves it over the
	// upgraded connection; the connection is the caller's to close once
	// serve returns. Nothing changes before serve has had the target prove
	// that it holds the arm's secret: a failed proof leaves the instance
	// running and the arm as it was. The caller must call serve exactly
	// once: with a nil connection when the upgrade failed, which frees the
	// arm for the next target.
	MigrateSource(ctx context.Context, id uuid.UUID) (serve func(ctx context.Context, conn net.Conn) error, err error)
}
