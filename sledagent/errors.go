package sledagent

import (
	"errors"
	"fmt"
)

// Domain errors; the API's version handlers map them to status codes.
var (
	// ErrNoSuchVmm: no VMM with that id is registered.
	ErrNoSuchVmm = errors.New("no such VMM is registered on this sled")
	// ErrVmmExists: the id is registered with another request.
	ErrVmmExists = errors.New("the VMM id is registered with another request; unregister it first")
	// ErrNotTerminal: unregistering a VMM that is neither failed nor
	// destroyed, without force.
	ErrNotTerminal = errors.New("the VMM is neither failed nor destroyed; stop it first, or unregister with force")
	// ErrNoFreePort: every port of the agent's range is taken.
	ErrNoFreePort = errors.New("every port of the agent's VMM port range is taken")
	// ErrVMMUnavailable: the VMM's server does not answer, or its process
	// is gone.
	ErrVMMUnavailable = errors.New("the VMM's server does not answer")
	// ErrRootLocked: another sled agent runs over the same root.
	ErrRootLocked = errors.New("another sled agent holds this root's lock (two agents over one root would each start and kill the other's VMMs)")
	// ErrTokenRefused: a VMM server refused the token the agent holds for
	// it (401): whoever answers at its address is not that VMM's server.
	ErrTokenRefused = errors.New("the VMM server does not accept the token the agent holds for it")
	// ErrClosed: the agent is shutting down.
	ErrClosed = errors.New("the sled agent is shutting down")
)

// CapacityError says that a VMM does not fit in what is free on the sled.
type CapacityError struct {
	Need, Free Resources
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("the VMM needs %d CPUs and %d MiB; the sled has %d CPUs and %d MiB free",
		e.Need.CPUs, e.Need.MemoryMiB, e.Free.CPUs, e.Free.MemoryMiB)
}

// RefusedError is a VMM server's refusal (a 4xx) with its status, code
// and message. The API answers it with a code of the agent's own and
// names the server's in the message.
type RefusedError struct {
	Status  int
	Code    string
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the VMM server refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// FieldError is a request the agent refuses, naming the field at fault.
type FieldError struct {
	Field, Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }
