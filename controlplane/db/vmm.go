package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane/model"
)

var vmmConstraints = map[string]string{
	"vmm_pkey":        "a VMM with this id exists",
	"vmm_instance_fk": "the VMM's instance does not exist",
	"vmm_sled_fk":     "the VMM's sled does not exist",
}

// writeVmmSQL is the generation-checked write of a VMM's runtime: it
// applies when the generation is newer and the stored state is not
// terminal, stores the address when one is given, releases the VMM's
// reservation when asked ($8) and the write applied, and tells whether it
// applied and whether the VMM exists.
const writeVmmSQL = `
	WITH cur AS (SELECT 1 FROM vmm WHERE id = $1),
	upd AS (
		UPDATE vmm SET state = $2, failure_kind = $3, failure_message = $4, gen = $5, time_updated = $6,
			address = CASE WHEN $7::TEXT = '' THEN address ELSE $7::TEXT END
		WHERE id = $1 AND gen < $5 AND state NOT IN ` + terminalVmmStates + `
		RETURNING id),
	rel AS (DELETE FROM sled_reservation WHERE $8::BOOL AND vmm_id IN (SELECT id FROM upd) RETURNING 1)
	SELECT EXISTS (SELECT 1 FROM upd), EXISTS (SELECT 1 FROM cur)`

// writeVmm runs writeVmmSQL; release asks it to release the reservation
// when it applies.
func writeVmm(ctx context.Context, q querier, id uuid.UUID, r model.VmmRuntime, addr string, release bool) (model.WriteResult, error) {
	name, kind, msg, gen, err := vmmRuntimeArgs("runtime", r)
	if err != nil {
		return 0, err
	}
	var updated, exists bool
	if err := q.QueryRow(ctx, writeVmmSQL, id, name, kind, msg, gen, r.TimeUpdated, addr, release).Scan(&updated, &exists); err != nil {
		return 0, err
	}
	return writeResult(updated, exists), nil
}

// writeResult reads the two answers of a generation-checked write.
func writeResult(updated, exists bool) model.WriteResult {
	switch {
	case updated:
		return model.WriteUpdated
	case exists:
		return model.WriteStale
	}
	return model.WriteMissing
}

// CreateVmm inserts a VMM and reserves its resources on its sled, in one
// transaction. It locks the sled's row first, so that two VMMs created at
// once on one sled cannot both take its last room. ErrConflict when the
// sled does not exist, is not active or lacks room, when the instance does
// not exist or is destroyed, or when the id is taken. A VMM created in a
// destroyable state reserves nothing.
func (d *DB) CreateVmm(ctx context.Context, v model.Vmm) error {
	op := fmt.Sprintf("db: create VMM %s", v.ID)
	if v.ID == uuid.Nil || v.InstanceID == uuid.Nil || v.SledID == uuid.Nil {
		return fmt.Errorf("%s: id, instance id and sled id must not be nil", op)
	}
	cpus, mem, err := resourcesArgs("resources", v.Resources)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	name, kind, msg, gen, err := vmmRuntimeArgs("runtime", v.Runtime)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if v.TimeRetired != nil && !v.Runtime.State.IsTerminal() {
		return fmt.Errorf("%s: time_retired: set on a VMM in state %s, which is not terminal", op, v.Runtime.State.Name())
	}
	return d.inTx(ctx, op, func(tx pgx.Tx) error {
		var (
			state             string
			capCPUs, capMem   int64
			usedCPUs, usedMem int64
		)
		err := tx.QueryRow(ctx, "SELECT state, cpus, memory_mib FROM sled WHERE id = $1 FOR UPDATE", v.SledID).
			Scan(&state, &capCPUs, &capMem)
		if errors.Is(err, pgx.ErrNoRows) {
			return conflictf("sled %s does not exist", v.SledID)
		}
		if err != nil {
			return err
		}
		if model.SledState(state) != model.SledActive {
			return conflictf("sled %s is %s, not active", v.SledID, state)
		}
		var instState string
		err = tx.QueryRow(ctx, "SELECT state FROM instance WHERE id = $1", v.InstanceID).Scan(&instState)
		if errors.Is(err, pgx.ErrNoRows) {
			return conflictf("instance %s does not exist", v.InstanceID)
		}
		if err != nil {
			return err
		}
		if model.InstanceState(instState) == model.InstanceDestroyed {
			return conflictf("instance %s is destroyed", v.InstanceID)
		}
		reserve := !v.Runtime.State.IsDestroyable()
		if reserve {
			if err := tx.QueryRow(ctx, `SELECT COALESCE(SUM(cpus), 0)::INT8, COALESCE(SUM(memory_mib), 0)::INT8
				FROM sled_reservation WHERE sled_id = $1`, v.SledID).Scan(&usedCPUs, &usedMem); err != nil {
				return err
			}
			if usedCPUs+cpus > capCPUs || usedMem+mem > capMem {
				return conflictf("sled %s lacks room: %d of %d CPUs and %d of %d MiB reserved, the VMM asks %d CPUs and %d MiB",
					v.SledID, usedCPUs, capCPUs, usedMem, capMem, cpus, mem)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO vmm (id, instance_id, sled_id, address, cpus, memory_mib, time_created,
				state, gen, time_updated, failure_kind, failure_message, time_retired)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			v.ID, v.InstanceID, v.SledID, v.Address, cpus, mem, v.TimeCreated, name, gen, v.Runtime.TimeUpdated,
			kind, msg, v.TimeRetired)
		if err != nil {
			return constraintError(err, vmmConstraints)
		}
		if reserve {
			_, err = tx.Exec(ctx, `INSERT INTO sled_reservation (vmm_id, sled_id, cpus, memory_mib, time_created)
				VALUES ($1, $2, $3, $4, $5)`, v.ID, v.SledID, cpus, mem, v.TimeCreated)
			if err != nil {
				return constraintError(err, nil)
			}
		}
		return nil
	})
}

// Vmm reads one VMM (ErrNotFound).
func (d *DB) Vmm(ctx context.Context, id uuid.UUID) (model.Vmm, error) {
	v, err := readVmm(ctx, d.pool, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Vmm{}, notFoundf("db: read VMM %s", id)
	}
	if err != nil {
		return model.Vmm{}, fail(fmt.Sprintf("db: read VMM %s", id), err)
	}
	return v, nil
}

func readVmm(ctx context.Context, q querier, id uuid.UUID) (model.Vmm, error) {
	return scanVmm(q.QueryRow(ctx, "SELECT "+vmmCols+" FROM vmm WHERE id = $1", id))
}

// VmmsOnSled lists the VMMs of a sled not yet retired, by id.
func (d *DB) VmmsOnSled(ctx context.Context, sled uuid.UUID) ([]model.Vmm, error) {
	out, err := vmmsOnSled(ctx, d.pool, sled)
	if err != nil {
		return nil, fail(fmt.Sprintf("db: list the VMMs of sled %s", sled), err)
	}
	return out, nil
}

func vmmsOnSled(ctx context.Context, q querier, sled uuid.UUID) ([]model.Vmm, error) {
	rows, err := q.Query(ctx, "SELECT "+vmmCols+" FROM vmm WHERE sled_id = $1 AND time_retired IS NULL ORDER BY id", sled)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Vmm, error) { return scanVmm(r) })
}

// UpdateVmmRuntime writes r when r.Gen is newer than the stored generation
// and the stored state is not terminal (a terminal state is final: the
// write is stale), in one statement that also releases the VMM's
// reservation when r.State is destroyable.
func (d *DB) UpdateVmmRuntime(ctx context.Context, id uuid.UUID, r model.VmmRuntime) (model.WriteResult, error) {
	op := fmt.Sprintf("db: update VMM %s", id)
	res, err := writeVmm(ctx, d.pool, id, r, "", r.State.IsDestroyable())
	if err != nil {
		return 0, fail(op, constraintError(err, nil))
	}
	return res, nil
}

// RetireVmm records that a terminal VMM's final state is stored and its
// sled agent told to forget it (releasing its reservation, should it hold
// one still). Retiring a retired VMM does nothing; ErrConflict for a VMM
// that is not terminal, ErrNotFound for an unknown one.
func (d *DB) RetireVmm(ctx context.Context, id uuid.UUID, at time.Time) error {
	op := fmt.Sprintf("db: retire VMM %s", id)
	var (
		state   *string
		retired *bool
	)
	err := d.pool.QueryRow(ctx, `
		WITH cur AS (SELECT state, time_retired FROM vmm WHERE id = $1),
		upd AS (UPDATE vmm SET time_retired = $2
			WHERE id = $1 AND time_retired IS NULL AND state IN `+terminalVmmStates+` RETURNING id),
		rel AS (DELETE FROM sled_reservation WHERE vmm_id IN (SELECT id FROM upd) RETURNING 1)
		SELECT (SELECT state FROM cur), (SELECT time_retired IS NOT NULL FROM cur)`, id, at).Scan(&state, &retired)
	if err != nil {
		return fail(op, err)
	}
	switch {
	case state == nil:
		return notFoundf("%s: no such VMM", op)
	case *retired:
		return nil
	case *state != "failed" && *state != "destroyed" && *state != "saga_unwound":
		return conflictf("%s: it is %s, not terminal", op, *state)
	}
	return nil
}

// Reserved sums the reservations held on a sled.
func (d *DB) Reserved(ctx context.Context, sled uuid.UUID) (model.Resources, error) {
	var cpus, mem int64
	err := d.pool.QueryRow(ctx, `SELECT COALESCE(SUM(cpus), 0)::INT8, COALESCE(SUM(memory_mib), 0)::INT8
		FROM sled_reservation WHERE sled_id = $1`, sled).Scan(&cpus, &mem)
	if err != nil {
		return model.Resources{}, fail(fmt.Sprintf("db: sum the reservations of sled %s", sled), err)
	}
	return resourcesCol("sled_reservation sum of sled", sled, cpus, mem)
}
