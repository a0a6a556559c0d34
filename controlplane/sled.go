package controlplane

import (
	"context"
	"errors"
	"io"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
)

// ErrVmmGone is the error of a SledClient call for a VMM that the sled's
// agent answers it does not know (errors.Is).
var ErrVmmGone = errors.New("the sled agent does not know the VMM")

// ErrSledUnreachable wraps the errors of a SledClient call that got no
// answer from the agent at all: refused, reset, timed out (errors.Is).
var ErrSledUnreachable = errors.New("the sled agent did not answer")

// SledClient is one sled agent, as the control plane uses it. Package
// controlplane/sledclient implements it over the generated clients of the
// sled-agent API, in the newest version both sides speak.
type SledClient interface {
	// Ping asks the agent for its inventory, to learn that it answers
	// (ErrSledUnreachable).
	Ping(ctx context.Context) error
	// VmmState reads a VMM's address (its server's host:port) and state
	// (ErrVmmGone, ErrSledUnreachable).
	VmmState(ctx context.Context, id uuid.UUID) (addr string, st model.SledVmmState, err error)
	// Unregister tells the agent to forget a VMM the control plane holds
	// terminal, with force (DELETE ?force=true): a VMM that the control
	// plane failed (its sled was lost, then came back) must not run on.
	// Forgetting one the agent does not know is no error.
	Unregister(ctx context.Context, id uuid.UUID) error
	// Register registers a VMM and ensures it on the sled (PUT /vmms/{id}):
	// from its instance's spec, or as a migration target. Repeating an
	// identical registration is no error. ErrInvalidSpec when the agent or
	// its VMM server refuses the spec, ErrNoCapacity when the sled lacks
	// room.
	Register(ctx context.Context, id uuid.UUID, r VmmRegistration) error
	// Request asks a VMM to run, stop or reboot (ErrVmmGone).
	Request(ctx context.Context, id uuid.UUID, what VmmRequest) error
	// ArmMigrationSource arms a running VMM as the source of migration
	// with the given one-time secret (ErrVmmGone).
	ArmMigrationSource(ctx context.Context, id, migration uuid.UUID, secret string) error
	// Serial attaches to a VMM's serial console (a WebSocket through the
	// agent): reads are the guest's output, writes its input.
	Serial(ctx context.Context, id uuid.UUID) (io.ReadWriteCloser, error)
}

// VmmRequest is a state change asked of a VMM.
type VmmRequest string

// The state changes a VMM may be asked for.
const (
	RequestRun    VmmRequest = "run"
	RequestStop   VmmRequest = "stop"
	RequestReboot VmmRequest = "reboot"
)

// VmmRegistration is what registers a VMM on its sled: its instance, and
// either the instance's spec or Migrate.
type VmmRegistration struct {
	InstanceID  uuid.UUID
	Name        string
	Description string
	SpecVersion string // with Spec: the envelope's version
	Spec        []byte // the spec, JSON; nil with Migrate
	Migrate     *MigrationTarget
}

// MigrationTarget makes a VMM the target of a live migration. Secret is
// never logged.
type MigrationTarget struct {
	SourceAddr  string // the source VMM server's host:port
	MigrationID uuid.UUID
	Secret      string
	Resources   model.Resources
}

// SledDialer returns the client of a sled's agent (its address and the
// versions it registered with), or an error when no version is shared.
type SledDialer func(s model.Sled) (SledClient, error)
