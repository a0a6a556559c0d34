package kvm

import "fmt"

// Error is a failed KVM operation: Op names the ioctl (or the step, such as
// "open /dev/kvm"), Err is the errno or other cause.
type Error struct {
	Op  string
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("kvm: %s: %v", e.Op, e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Err: err}
}
