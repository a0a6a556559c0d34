package vmm

import (
	"errors"
	"fmt"
)

// Error is a failed Machine operation: Op says what was being done ("new",
// "pause", "export state", ...), Err why. Callers look inside with
// errors.Is and errors.As (for a *NotNowError, a *ComponentError or a
// *kvm.Error).
type Error struct {
	Op  string
	Err error
}

func (e *Error) Error() string { return "vmm: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Err: err}
}

// NotNowError is an action the machine's lifecycle phase does not allow.
// It is not retryable as such: the caller must first move the machine into
// a phase that allows the action (see Phase).
type NotNowError struct {
	Action Action
	Phase  Phase
}

func (e *NotNowError) Error() string {
	return fmt.Sprintf("%s is not allowed while the machine is %s", e.Action, e.Phase)
}

// ErrNotNow is matched by every *NotNowError: errors.Is(err, ErrNotNow).
var ErrNotNow = errors.New("action not allowed in this state")

// Is makes errors.Is(err, ErrNotNow) true.
func (e *NotNowError) Is(target error) bool { return target == ErrNotNow }

// ComponentError is a part of the spec or configuration the VMM cannot
// build on this host: too many vCPUs, memory that cannot be mapped, a disk
// file that is missing or too small. Component names the part the way spec
// problems do ("board.cpus", "board.memory_mb", "boot.image",
// "components.<key>.path", "properties.name").
type ComponentError struct {
	Component string
	Err       error
}

func (e *ComponentError) Error() string { return e.Component + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *ComponentError) Unwrap() error { return e.Err }

// Errors wrapped by ComponentError and Exit.Err, for errors.Is.
var (
	// ErrTooManyVCPUs: the board asks for more vCPUs than the host offers.
	ErrTooManyVCPUs = errors.New("more vCPUs than this host supports")
	// ErrMemory: guest memory could not be mapped or registered.
	ErrMemory = errors.New("guest memory cannot be mapped")
	// ErrDiskMissing: a storage backend's file does not exist.
	ErrDiskMissing = errors.New("disk file does not exist")
	// ErrDiskTooSmall: a storage backend's file holds less than one block.
	ErrDiskTooSmall = errors.New("disk file is too small")
	// ErrNoImage: the boot image is unknown or not a Multiboot image.
	ErrNoImage = errors.New("boot image unusable")
	// ErrTripleFault: the guest triple-faulted (KVM_EXIT_SHUTDOWN).
	ErrTripleFault = errors.New("guest triple fault (KVM_EXIT_SHUTDOWN)")
	// ErrEmulation: KVM could not emulate an instruction or deliver an
	// event (KVM_EXIT_INTERNAL_ERROR).
	ErrEmulation = errors.New("KVM internal error (KVM_EXIT_INTERNAL_ERROR)")
	// ErrEntryFailed: the hardware refused to enter the guest
	// (KVM_EXIT_FAIL_ENTRY).
	ErrEntryFailed = errors.New("VM entry failed (KVM_EXIT_FAIL_ENTRY)")
	// ErrGuestPanicked: the guest wrote "panicked" to its pvpanic device.
	ErrGuestPanicked = errors.New("the guest reported a panic (pvpanic)")
	// ErrUnhandledExit: the guest made KVM exit for something the VMM
	// does not handle (an unknown exit reason or system event). The
	// error that matches it says which, in its own words.
	ErrUnhandledExit = errors.New("unhandled KVM exit")
)

// unhandledExitError is an exit the VMM does not handle: its text is the
// message alone, and errors.Is matches ErrUnhandledExit.
type unhandledExitError struct{ msg string }

func (e *unhandledExitError) Error() string { return e.msg }

// Is makes errors.Is(err, ErrUnhandledExit) true.
func (e *unhandledExitError) Is(target error) bool { return target == ErrUnhandledExit }

func unhandledExit(format string, args ...any) error {
	return &unhandledExitError{msg: fmt.Sprintf(format, args...)}
}
