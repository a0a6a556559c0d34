package server

import (
	"errors"
	"fmt"
)

// Errors a Core returns, each mapped to a stable error_code.
var (
	// ErrNoInstance: nothing was ensured yet (404 no_instance).
	ErrNoInstance = errors.New("no instance has been created; ensure one with PUT /instance")
	// ErrInstanceExists: a different instance was ensured before (409 instance_exists).
	ErrInstanceExists = errors.New("a different instance already exists")
	// ErrNoSuchMigration: the source expects no migration with that id (404 no_such_migration).
	ErrNoSuchMigration = errors.New("no such migration is expected")
	// ErrTooManyConsoles: every console place is taken (429
	// too_many_consoles); the client may try again once one is closed.
	ErrTooManyConsoles = errors.New("too many serial consoles are attached; close one and try again")
	// ErrEnsureInProgress: the server is still building a VM (for another
	// ensure) or letting the previous instance's VM go, and the request gave
	// up waiting (409 ensure_in_progress); asking again later gets the usual
	// answer.
	ErrEnsureInProgress = errors.New("the server is still building or releasing a VM; ask again shortly")
	// ErrShuttingDown: the server is stopping and takes no new instance
	// (503 shutting_down).
	ErrShuttingDown = errors.New("the server is shutting down")
)

// TransitionError is a request the instance cannot honour in its current
// state (409 invalid_transition).
type TransitionError struct {
	State     State
	Requested string
	// Note says what happened instead, if anything.
	Note string
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("cannot %s an instance that is %s", e.Requested, e.State)
	if e.Note != "" {
		msg += ": " + e.Note
	}
	return msg
}

// VMError is a failure to build or run the VM, such as a disk file that does
// not exist or more vCPUs than the host has (400 vm_error). Component is the
// path of the spec field at fault ("components.disk0-be.path",
// "board.cpus"), when there is one.
type VMError struct {
	Component string
	Err       error
}

func (e *VMError) Error() string {
	if e.Component == "" {
		return "vm: " + e.Err.Error()
	}
	return fmt.Sprintf("vm: %s: %v", e.Component, e.Err)
}

func (e *VMError) Unwrap() error { return e.Err }

// CapacityError is a VM this host cannot back (409 insufficient_capacity):
// Field is the spec field at fault ("board.memory_mb", "board.cpus"), Asked
// what the spec asks and Max the most this host can give, in Unit.
type CapacityError struct {
	Field      string
	Asked, Max uint64
	Unit       string
}

func (e *CapacityError) Error() string {
	unit := ""
	if e.Unit != "" {
		unit = " " + e.Unit
	}
	return fmt.Sprintf("%s: %d%s asked, this host can back at most %d%s", e.Field, e.Asked, unit, e.Max, unit)
}
