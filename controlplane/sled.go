package controlplane

import (
	"context"
	"errors"

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
}

// SledDialer returns the client of a sled's agent (its address and the
// versions it registered with), or an error when no version is shared.
type SledDialer func(s model.Sled) (SledClient, error)
