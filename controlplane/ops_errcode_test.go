package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/saga"
)

// Every error a saga's step fails with has its code, wrapped as deep as
// the steps wrap it; what is no domain error is internal.
func TestSagaErrorCodeOfEachError(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("step x: register VMM y: %w", err) }
	for _, tc := range []struct {
		err  error
		want SagaErrorCode
	}{
		{ErrInvalidSpec, SagaCodeInvalidSpec},
		{ErrNoCapacity, SagaCodeInsufficientCapacity},
		{ErrSameSled, SagaCodeSameSled},
		{ErrInvalidState, SagaCodeInvalidState},
		{ErrVmmGone, SagaCodeInvalidState},
		{ErrInstanceBusy, SagaCodeInstanceBusy},
		{saga.ErrLocked, SagaCodeInstanceBusy},
		{ErrSledUnreachable, SagaCodeSledUnavailable},
		{ErrUnavailable, SagaCodeUnavailable},
		{errVmmEnded, SagaCodeVmmFailed},
		{errMigrationFailed, SagaCodeMigrationFailed},
		{errWaitTimedOut, SagaCodeTimeout},
		{context.DeadlineExceeded, SagaCodeTimeout},
		// A wait that timed out while the database was away is a timeout.
		{fmt.Errorf("%w: %w", errWaitTimedOut, ErrUnavailable), SagaCodeTimeout},
		{errors.New("injected failure"), SagaCodeInternal},
		{ErrNotFound, SagaCodeInternal},
	} {
		require.Equal(t, tc.want, sagaErrorCode(wrap(tc.err)), "%v", tc.err)
		require.Contains(t, SagaErrorCodes, tc.want)
	}
}

// The view reads the code a failing step stored in its saga's data (the
// fleet tests see it stored: TestSagaErrorCodeThroughTheAPI); a saga with
// no code stored, one this build does not know, or data that does not
// decode shows internal.
func TestSagaErrorCodeRead(t *testing.T) {
	for _, tc := range []struct {
		data string
		want SagaErrorCode
	}{
		{`{"error_code":"insufficient_capacity","other":1}`, SagaCodeInsufficientCapacity},
		{`{}`, SagaCodeInternal},
		{``, SagaCodeInternal},
		{`{"error_code":"from_the_future"}`, SagaCodeInternal},
		{`{"error_code":7}`, SagaCodeInternal},
		{`not json`, SagaCodeInternal},
	} {
		require.Equal(t, tc.want, storedErrorCode(saga.Record{Data: json.RawMessage(tc.data)}), tc.data)
	}
}
