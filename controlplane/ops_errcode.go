package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/wagglevm/waggle/controlplane/saga"
)

// SagaErrorCode says, for programs, why a saga unwound (or, for one stuck,
// why it began to unwind): the code of the error that failed its step.
// The codes are stable; where the external API answers the same domain
// error with an error code, the saga's code is that one.
type SagaErrorCode string

// The codes of a saga's failure.
const (
	// SagaCodeInvalidSpec: the sled's agent or its VMM server refused the
	// instance's spec (ErrInvalidSpec).
	SagaCodeInvalidSpec SagaErrorCode = "invalid_spec"
	// SagaCodeInsufficientCapacity: no sled (or not the one named) had room
	// (ErrNoCapacity).
	SagaCodeInsufficientCapacity SagaErrorCode = "insufficient_capacity"
	// SagaCodeSameSled: a migration to the sled the instance runs on
	// (ErrSameSled).
	SagaCodeSameSled SagaErrorCode = "same_sled"
	// SagaCodeInvalidState: the instance (or its VMM) was no longer in a
	// state that allows the saga (ErrInvalidState, ErrVmmGone).
	SagaCodeInvalidState SagaErrorCode = "invalid_state"
	// SagaCodeInstanceBusy: another saga held the instance (ErrInstanceBusy).
	SagaCodeInstanceBusy SagaErrorCode = "instance_busy"
	// SagaCodeSledUnavailable: a sled agent did not answer
	// (ErrSledUnreachable).
	SagaCodeSledUnavailable SagaErrorCode = "sled_unavailable"
	// SagaCodeUnavailable: the control plane's database was away
	// (ErrUnavailable).
	SagaCodeUnavailable SagaErrorCode = "unavailable"
	// SagaCodeVmmFailed: the VMM ended (failed, destroyed) while the saga
	// waited for it to run.
	SagaCodeVmmFailed SagaErrorCode = "vmm_failed"
	// SagaCodeMigrationFailed: the migration failed before its hand-off.
	SagaCodeMigrationFailed SagaErrorCode = "migration_failed"
	// SagaCodeTimeout: what the saga waited for did not happen within
	// SagaWait (or a step outlived its time).
	SagaCodeTimeout SagaErrorCode = "timeout"
	// SagaCodeInternal: anything else (the error says what).
	SagaCodeInternal SagaErrorCode = "internal"
)

// SagaErrorCodes lists every SagaErrorCode.
var SagaErrorCodes = []SagaErrorCode{SagaCodeInvalidSpec, SagaCodeInsufficientCapacity, SagaCodeSameSled,
	SagaCodeInvalidState, SagaCodeInstanceBusy, SagaCodeSledUnavailable, SagaCodeUnavailable, SagaCodeVmmFailed,
	SagaCodeMigrationFailed, SagaCodeTimeout, SagaCodeInternal}

// The errors of the sagas' waits, for their codes (errors.Is).
var (
	errWaitTimedOut    = errors.New("it did not happen")
	errVmmEnded        = errors.New("the VMM ended")
	errMigrationFailed = errors.New("the migration failed")
)

// sagaErrorCode is the code of a step's error.
func sagaErrorCode(err error) SagaErrorCode {
	is := func(targets ...error) bool {
		return slices.ContainsFunc(targets, func(t error) bool { return errors.Is(err, t) })
	}
	switch {
	case is(errWaitTimedOut):
		return SagaCodeTimeout
	case is(ErrInvalidSpec):
		return SagaCodeInvalidSpec
	case is(ErrNoCapacity):
		return SagaCodeInsufficientCapacity
	case is(ErrSameSled):
		return SagaCodeSameSled
	case is(ErrInvalidState, ErrVmmGone):
		return SagaCodeInvalidState
	case is(ErrInstanceBusy, saga.ErrLocked):
		return SagaCodeInstanceBusy
	case is(errVmmEnded):
		return SagaCodeVmmFailed
	case is(errMigrationFailed):
		return SagaCodeMigrationFailed
	case is(ErrSledUnreachable):
		return SagaCodeSledUnavailable
	case is(ErrUnavailable):
		return SagaCodeUnavailable
	case is(context.DeadlineExceeded):
		return SagaCodeTimeout
	}
	return SagaCodeInternal
}

// errorCodeKey is the key of a failed step's code in its saga's data.
const errorCodeKey = "error_code"

// withErrorCodes wraps every step's Do of kind k so that its failure
// records its code in the saga's data, which the executor stores with the
// failure (the error itself is stored as text only). A step failed by a
// fault injected before or after its Do records nothing: its saga's code
// is internal.
func withErrorCodes(k saga.Kind) saga.Kind {
	steps := make([]saga.Step, len(k.Steps))
	for i, st := range k.Steps {
		do := st.Do
		st.Do = func(ctx context.Context, s *saga.Ctx) error {
			err := do(ctx, s)
			if err != nil {
				if perr := s.Put(errorCodeKey, sagaErrorCode(err)); perr != nil {
					return errors.Join(err, perr)
				}
			}
			return err
		}
		steps[i] = st
	}
	k.Steps = steps
	return k
}

// storedErrorCode reads the code a saga that unwound (or got stuck)
// stored; internal when it stored none or one this build does not know.
func storedErrorCode(r saga.Record) SagaErrorCode {
	var data struct {
		Code SagaErrorCode `json:"error_code"`
	}
	if len(r.Data) > 0 {
		_ = json.Unmarshal(r.Data, &data) // undecodable data: internal, below
	}
	if !slices.Contains(SagaErrorCodes, data.Code) {
		return SagaCodeInternal
	}
	return data.Code
}
