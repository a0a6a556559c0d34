package db

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wagglevm/waggle/controlplane"
)

// fail wraps err with what was being done, and with
// controlplane.ErrUnavailable when the database could not be reached.
func fail(op string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, controlplane.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unavailable says whether err means the database could not be reached
// (or stopped answering): connection refused, reset or closed, a server
// shutting down, a deadline that ran out.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection_exception
			pgErr.Code == "57P01", // admin_shutdown
			pgErr.Code == "57P02", // crash_shutdown
			pgErr.Code == "57P03", // cannot_connect_now
			pgErr.Code == "53300": // too_many_connections
			return true
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	return pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

// retryable says whether a transaction failed for a serialization failure
// or a deadlock, which a new attempt may not meet.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// constraintError turns a unique, check, foreign key or not-null violation
// into an error wrapping controlplane.ErrConflict that names the
// constraint, with what it means when describe knows (describe may be
// nil); any other error is returned as it is.
func constraintError(err error, describe map[string]string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "23505", "23514", "23503", "23502": // unique, check, foreign key, not null
	default:
		return err
	}
	what := describe[pgErr.ConstraintName]
	if what == "" {
		what = pgErr.Message
	}
	name := pgErr.ConstraintName
	if name == "" {
		name = pgErr.ColumnName
	}
	return fmt.Errorf("%w: %s (constraint %s)", controlplane.ErrConflict, what, name)
}

// conflictf is an error wrapping controlplane.ErrConflict.
func conflictf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", controlplane.ErrConflict, fmt.Sprintf(format, args...))
}

// notFoundf is an error wrapping controlplane.ErrNotFound.
func notFoundf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", controlplane.ErrNotFound, fmt.Sprintf(format, args...))
}
