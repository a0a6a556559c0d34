package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/saga"
)

var _ saga.Log = (*DB)(nil)

var sagaConstraints = map[string]string{
	"saga_pkey":                "a saga with this id exists",
	"saga_instance_fk":         "the saga's instance does not exist",
	"saga_step_within":         "the saga's step is beyond its steps",
	"saga_error_when_unwound":  "an unwinding, unwound or stuck saga says why",
	"saga_state_known":         "the saga's state is not known",
	"saga_step_from_minus_one": "the saga's step is below -1",
}

const sagaCols = `id, kind, instance_id, params, data, state, step, step_states, error, owner_id, lease_until,
	time_created, time_updated`

// CreateSaga inserts a new saga, unowned with its lease expired so that
// any executor claims it. With lock it also takes the updater lock of
// r.InstanceID for the saga, in the same transaction (saga.ErrLocked,
// wrapped with controlplane.ErrInstanceBusy, when another saga holds it;
// ErrNotFound for an unknown instance).
func (d *DB) CreateSaga(ctx context.Context, r saga.Record, lock bool) error {
	op := fmt.Sprintf("db: create saga %s (%s)", r.ID, r.Kind)
	if lock && !r.InstanceID.Valid {
		return fmt.Errorf("%s: a lock asked without an instance", op)
	}
	steps := make([]string, len(r.Steps))
	for i, s := range r.Steps {
		steps[i] = string(s)
	}
	return d.inTx(ctx, op, func(tx pgx.Tx) error {
		if lock {
			if err := lockInstanceFor(ctx, tx, r.InstanceID.UUID, r.ID); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO saga (`+sagaCols+`)
			VALUES ($1, $2, $3, $4::JSONB, $5::JSONB, $6, $7, $8, $9, NULL, $10, $11, $12)`,
			r.ID, r.Kind, r.InstanceID, string(r.Params), string(r.Data), string(r.State), r.Step, steps, r.Error,
			r.LeaseUntil, r.TimeCreated, r.TimeUpdated)
		return constraintError(err, sagaConstraints)
	})
}

// Saga reads one saga (ErrNotFound).
func (d *DB) Saga(ctx context.Context, id uuid.UUID) (saga.Record, error) {
	r, err := scanSaga(d.pool.QueryRow(ctx, "SELECT "+sagaCols+" FROM saga WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return saga.Record{}, notFoundf("db: read saga %s", id)
	}
	if err != nil {
		return saga.Record{}, fail(fmt.Sprintf("db: read saga %s", id), err)
	}
	return r, nil
}

// SagasOfInstance lists the sagas of an instance, oldest first.
func (d *DB) SagasOfInstance(ctx context.Context, instance uuid.UUID) ([]saga.Record, error) {
	rows, err := d.pool.Query(ctx, "SELECT "+sagaCols+" FROM saga WHERE instance_id = $1 ORDER BY time_created, id", instance)
	if err != nil {
		return nil, fail(fmt.Sprintf("db: list the sagas of instance %s", instance), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (saga.Record, error) { return scanSaga(r) })
	if err != nil {
		return nil, fail(fmt.Sprintf("db: list the sagas of instance %s", instance), err)
	}
	return out, nil
}

// ClaimSagas makes owner the owner of at most limit sagas in flight whose
// lease expired before now, or that owner holds already and are not in
// skip, leased until leaseUntil, in one statement; it returns them, oldest
// first.
func (d *DB) ClaimSagas(ctx context.Context, owner uuid.UUID, skip []uuid.UUID, now, leaseUntil time.Time, limit int) ([]saga.Record, error) {
	if skip == nil {
		skip = []uuid.UUID{}
	}
	rows, err := d.pool.Query(ctx, `
		UPDATE saga SET owner_id = $1, lease_until = $3
		WHERE id IN (
			SELECT id FROM saga
			WHERE state IN ('running', 'unwinding')
				AND (lease_until < $2 OR (owner_id = $1 AND NOT (id = ANY ($4::UUID[]))))
			ORDER BY time_created, id
			LIMIT $5)
			AND state IN ('running', 'unwinding')
			AND (lease_until < $2 OR (owner_id = $1 AND NOT (id = ANY ($4::UUID[]))))
		RETURNING `+sagaCols, owner, now, leaseUntil, skip, limit)
	if err != nil {
		return nil, fail("db: claim sagas", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (saga.Record, error) { return scanSaga(r) })
	if err != nil {
		return nil, fail("db: claim sagas", err)
	}
	return out, nil
}

// RenewLeases extends to leaseUntil the leases owner holds on ids, and
// returns the ids it still owns.
func (d *DB) RenewLeases(ctx context.Context, owner uuid.UUID, ids []uuid.UUID, leaseUntil time.Time) ([]uuid.UUID, error) {
	rows, err := d.pool.Query(ctx, `UPDATE saga SET lease_until = $3
		WHERE owner_id = $1 AND id = ANY ($2::UUID[]) AND state IN ('running', 'unwinding') RETURNING id`,
		owner, ids, leaseUntil)
	if err != nil {
		return nil, fail("db: renew saga leases", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fail("db: renew saga leases", err)
	}
	return out, nil
}

// SaveSaga stores a saga's progress and extends its lease, when owner
// owns it (saga.ErrLeaseLost otherwise), in one statement.
func (d *DB) SaveSaga(ctx context.Context, r saga.Record, owner uuid.UUID, leaseUntil time.Time) error {
	op := fmt.Sprintf("db: save saga %s", r.ID)
	steps := make([]string, len(r.Steps))
	for i, s := range r.Steps {
		steps[i] = string(s)
	}
	tag, err := d.pool.Exec(ctx, `UPDATE saga SET data = $3::JSONB, state = $4, step = $5, step_states = $6,
			error = $7, time_updated = $8, lease_until = $9
		WHERE id = $1 AND owner_id = $2`,
		r.ID, owner, string(r.Data), string(r.State), r.Step, steps, r.Error, r.TimeUpdated, leaseUntil)
	if err != nil {
		return fail(op, constraintError(err, sagaConstraints))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, saga.ErrLeaseLost)
	}
	return nil
}

// scanSaga reads one row of sagaCols.
func scanSaga(row pgx.Row) (saga.Record, error) {
	var (
		r             saga.Record
		params, data  []byte
		state         string
		step          int64
		steps         []string
		owner         uuid.NullUUID
		instance      uuid.NullUUID
		lease, tc, tu time.Time
	)
	if err := row.Scan(&r.ID, &r.Kind, &instance, &params, &data, &state, &step, &steps, &r.Error, &owner, &lease, &tc, &tu); err != nil {
		return saga.Record{}, err
	}
	r.InstanceID, r.Owner = instance, owner
	r.Params, r.Data = json.RawMessage(params), json.RawMessage(data)
	r.State, r.Step = saga.State(state), int(step)
	r.Steps = make([]saga.StepState, len(steps))
	for i, s := range steps {
		r.Steps[i] = saga.StepState(s)
	}
	r.LeaseUntil, r.TimeCreated, r.TimeUpdated = lease.UTC(), tc.UTC(), tu.UTC()
	return r, nil
}

// LockInstance takes the updater lock of an instance for holder (a saga),
// in one generation-bumping statement: it applies when no saga holds the
// lock or holder does already. controlplane.ErrInstanceBusy when another
// holds it, ErrNotFound for an unknown instance.
func (d *DB) LockInstance(ctx context.Context, id, holder uuid.UUID) error {
	if err := lockInstanceFor(ctx, d.pool, id, holder); err != nil {
		return fail(fmt.Sprintf("db: lock instance %s for saga %s", id, holder), err)
	}
	return nil
}

func lockInstanceFor(ctx context.Context, q querier, id, holder uuid.UUID) error {
	var (
		held    bool
		current uuid.NullUUID
		exists  bool
	)
	err := q.QueryRow(ctx, `
		WITH cur AS (SELECT updater_id FROM instance WHERE id = $1),
		upd AS (UPDATE instance SET updater_id = $2, updater_gen = updater_gen + 1
			WHERE id = $1 AND (updater_id IS NULL OR updater_id = $2) RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM upd), (SELECT updater_id FROM cur), EXISTS (SELECT 1 FROM cur)`, id, holder).
		Scan(&held, &current, &exists)
	switch {
	case err != nil:
		return err
	case !exists:
		return notFoundf("instance %s does not exist", id)
	case !held:
		return fmt.Errorf("instance %s: saga %s holds its updater lock: %w: %w", id, current.UUID,
			controlplane.ErrInstanceBusy, saga.ErrLocked)
	}
	return nil
}

// UnlockInstance releases the updater lock of an instance that holder
// holds, bumping its generation; releasing a lock holder does not hold
// does nothing.
func (d *DB) UnlockInstance(ctx context.Context, id, holder uuid.UUID) error {
	_, err := d.pool.Exec(ctx, `UPDATE instance SET updater_id = NULL, updater_gen = updater_gen + 1
		WHERE id = $1 AND updater_id = $2`, id, holder)
	if err != nil {
		return fail(fmt.Sprintf("db: unlock instance %s for saga %s", id, holder), err)
	}
	return nil
}

// InstanceUpdater reads who holds an instance's updater lock (not Valid
// when nobody does) and the lock's generation (ErrNotFound).
func (d *DB) InstanceUpdater(ctx context.Context, id uuid.UUID) (uuid.NullUUID, int64, error) {
	var (
		holder uuid.NullUUID
		gen    int64
	)
	err := d.pool.QueryRow(ctx, "SELECT updater_id, updater_gen FROM instance WHERE id = $1", id).Scan(&holder, &gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.NullUUID{}, 0, notFoundf("db: read the updater of instance %s", id)
	}
	if err != nil {
		return uuid.NullUUID{}, 0, fail(fmt.Sprintf("db: read the updater of instance %s", id), err)
	}
	return holder, gen, nil
}
