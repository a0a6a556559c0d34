// Package db keeps the control plane's records in PostgreSQL: it is the
// controlplane.Store of the runtime, on pgx v5.
//
// The schema lives in migrations/ as SQL files applied by goose at Open,
// which refuses a database whose schema is newer than this code knows.
// CHECK constraints, foreign keys and a partial unique index hold the
// model's invariants (states in their enums, generations from 1, a failure
// reason exactly in the failed state, an instance's active VMM exactly in
// state vmm, a migration target only beside an active VMM, retired VMMs only
// terminal), so that a bug in the runtime is refused by the database rather
// than stored.
//
// Every generation-checked write is one statement that both tries the
// update and tells whether the row exists, so the caller learns whether it
// applied, was stale, or found nothing (model.WriteResult); a terminal VMM
// or migration side is final, and later reports of it are stale. The writes
// that span records (a VMM and its sled's reservation, a sled agent's
// report and the instance it moves, a lost sled and its VMMs) each run in
// one transaction, retried when the database asks (serialization failures,
// deadlocks).
//
// Conversions between rows and controlplane/model types happen here and
// nowhere else. Times come back in UTC, to the microsecond (PostgreSQL's
// precision); an instance's spec, kept as JSONB, comes back as the same
// JSON value, not necessarily the same bytes; a row that does not convert is an error naming its table,
// row and column. Errors wrap controlplane.ErrUnavailable when the database
// cannot be reached, ErrConflict when an invariant refuses a write, and
// ErrNotFound for a missing record. Database passwords are never logged or
// put in errors.
//
// The SQL is kept to what CockroachDB also runs (no triggers, stored
// functions, advisory locks or sequences; goose's lock is table-based).
package db
