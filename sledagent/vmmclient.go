package sledagent

import (
	"context"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/wagglevm/waggle/spec"
)

// VMMClient drives one VMM server. Package sledagent/vmmclient implements
// it over the generated client of the newest API version the server
// speaks; unit tests give fakes. Refusals are *RefusedError; a server that
// does not answer is an error wrapping ErrVMMUnavailable.
type VMMClient interface {
	// Ensure creates the server's instance, from a spec or as a migration
	// target.
	Ensure(ctx context.Context, p Properties, s *spec.Spec, m *MigrationTarget) error
	// Observe answers the instance's state as soon as its generation is
	// greater than gen, or after wait, whichever comes first.
	Observe(ctx context.Context, gen uint64, wait time.Duration) (Observation, error)
	// Request asks the instance to run, stop or reboot.
	Request(ctx context.Context, r Requested) error
	// Arm arms the instance as a migration source.
	Arm(ctx context.Context, a MigrationArm) (MigrationArmed, error)
	// Serial reads the serial console's history.
	Serial(ctx context.Context, q SerialQuery) (SerialChunk, error)
	// SpecBoard answers the resources of the instance's spec (its board's
	// CPUs and memory), or nil while the server does not know its spec
	// yet (a migration target before the source sent it; no instance).
	SpecBoard(ctx context.Context) (*Resources, error)
	// Console attaches to the serial console: reads are guest output
	// (the kept bytes first), writes are guest input; it reads io.EOF when
	// the console ends.
	Console(ctx context.Context) (io.ReadWriteCloser, error)
}

// Observation is a VMM server's report of its instance.
type Observation struct {
	// Gen is the server's own generation (not the agent's).
	Gen           uint64
	State         VmmState
	FailureReason string
	MigrationIn   *MigrationProgress
	MigrationOut  *MigrationProgress
	// History lists the state changes after the asked generation, oldest
	// first, the last being the current state; empty when the server
	// reports none (then State is the only step).
	History []Transition
	// NoInstance: the server answers but has no instance (yet).
	NoInstance bool
}

// Transition is one state change a VMM server reports.
type Transition struct {
	State         VmmState
	FailureReason string
}

// MigrationProgress is a VMM server's report of one migration.
type MigrationProgress struct {
	ID uuid.UUID
	// Phase is the server's phase name; "completed" and "failed" end it.
	Phase string
}

// Dialer connects to a VMM server at addr with its token, choosing the
// newest API version the server speaks. It fails wrapping
// ErrVMMUnavailable when the server does not answer (or answers 5xx), and
// wrapping ErrTokenRefused when it refuses the token (401): the agent
// kills an adopted process only for the latter.
type Dialer func(ctx context.Context, addr, token string) (VMMClient, error)
