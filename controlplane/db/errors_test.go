package db

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
)

func TestUnavailableTellsADownDatabaseFromARefusal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("query: %w", io.ErrUnexpectedEOF), true},
		{syscall.ECONNREFUSED, true},
		{&pgconn.PgError{Code: "57P01"}, true}, // admin_shutdown
		{&pgconn.PgError{Code: "08006"}, true}, // connection_failure
		{&pgconn.PgError{Code: "53300"}, true}, // too_many_connections
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "40001"}, false},
		{context.Canceled, false},
		{errors.New("some bug"), false},
		{nil, false},
	} {
		require.Equal(t, tc.want, unavailable(tc.err), "%v", tc.err)
		if tc.err != nil {
			require.Equal(t, tc.want, errors.Is(fail("op", tc.err), controlplane.ErrUnavailable), "%v", tc.err)
		}
	}
}

func TestConstraintErrorNamesTheConstraint(t *testing.T) {
	err := constraintError(&pgconn.PgError{Code: "23505", ConstraintName: "instance_name_unique", Message: "duplicate key"},
		map[string]string{"instance_name_unique": "the name is in use"})
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Equal(t, "conflict: the name is in use (constraint instance_name_unique)", err.Error())

	err = constraintError(&pgconn.PgError{Code: "23514", ConstraintName: "vmm_gen_positive", Message: "violates"}, nil)
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Contains(t, err.Error(), "vmm_gen_positive")

	other := &pgconn.PgError{Code: "42601"}
	require.Same(t, error(other), constraintError(other, nil), "a syntax error is no conflict")
}
