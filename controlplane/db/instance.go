package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane/model"
)

var instanceConstraints = map[string]string{
	"instance_pkey":          "an instance with this id exists",
	"instance_name_unique":   "an instance that is not destroyed has this name",
	"instance_active_vmm_fk": "the active VMM does not exist",
	"instance_target_vmm_fk": "the target VMM does not exist",
	"instance_migration_fk":  "the migration does not exist",
}

// CreateInstance inserts an instance in its given runtime state
// (ErrConflict when the id is taken, or the name by an instance not
// destroyed). The spec is stored as JSONB: read back, it is the same JSON
// value, not necessarily the same bytes (key order and spacing are the
// database's).
func (d *DB) CreateInstance(ctx context.Context, in model.Instance) error {
	op := fmt.Sprintf("db: create instance %s", in.ID)
	if in.ID == uuid.Nil {
		return fmt.Errorf("%s: id: nil", op)
	}
	if in.Name == "" {
		return fmt.Errorf("%s: name: empty", op)
	}
	if in.SpecVersion == "" {
		return fmt.Errorf("%s: spec_version: empty", op)
	}
	if err := validSpec(in.Spec); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	cpus, mem, err := resourcesArgs("resources", in.Resources)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	rt, err := instanceRuntimeArgs(in.Runtime)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	args := append([]any{in.ID, in.Name, in.Description, in.SpecVersion, string(in.Spec), cpus, mem, in.TimeCreated}, rt...)
	_, err = d.pool.Exec(ctx, `INSERT INTO instance (id, name, description, spec_version, spec, cpus, memory_mib,
			time_created, `+instanceRuntimeCols+`)
		VALUES ($1, $2, $3, $4, $5::JSONB, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`, args...)
	if err != nil {
		describe := map[string]string{"instance_name_unique": fmt.Sprintf("the name %q is in use by an instance not destroyed", in.Name)}
		for k, v := range instanceConstraints {
			if describe[k] == "" {
				describe[k] = v
			}
		}
		return fail(op, constraintError(err, describe))
	}
	return nil
}

// Instance reads one instance (ErrNotFound).
func (d *DB) Instance(ctx context.Context, id uuid.UUID) (model.Instance, error) {
	in, err := scanInstance(d.pool.QueryRow(ctx, "SELECT "+instanceCols+" FROM instance WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Instance{}, notFoundf("db: read instance %s", id)
	}
	if err != nil {
		return model.Instance{}, fail(fmt.Sprintf("db: read instance %s", id), err)
	}
	return in, nil
}

// UpdateInstanceRuntime writes r when r.Gen is newer than the stored
// generation, in one statement. ErrConflict when a constraint refuses r
// (a VMM or migration that does not exist).
func (d *DB) UpdateInstanceRuntime(ctx context.Context, id uuid.UUID, r model.InstanceRuntime) (model.WriteResult, error) {
	op := fmt.Sprintf("db: update instance %s", id)
	res, err := writeInstance(ctx, d.pool, id, r)
	if err != nil {
		return 0, fail(op, constraintError(err, instanceConstraints))
	}
	return res, nil
}

// writeInstance is the generation-checked write of an instance's runtime.
func writeInstance(ctx context.Context, q querier, id uuid.UUID, r model.InstanceRuntime) (model.WriteResult, error) {
	rt, err := instanceRuntimeArgs(r)
	if err != nil {
		return 0, err
	}
	var updated, exists bool
	err = q.QueryRow(ctx, `
		WITH cur AS (SELECT 1 FROM instance WHERE id = $1),
		upd AS (UPDATE instance SET state = $2, gen = $3, time_updated = $4, active_vmm_id = $5,
				target_vmm_id = $6, migration_id = $7, failure_kind = $8, failure_message = $9
			WHERE id = $1 AND gen < $3 RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM upd), EXISTS (SELECT 1 FROM cur)`, append([]any{id}, rt...)...).Scan(&updated, &exists)
	if err != nil {
		return 0, err
	}
	return writeResult(updated, exists), nil
}

// lockInstance reads an instance's runtime FOR UPDATE (pgx.ErrNoRows when
// there is none).
func lockInstance(ctx context.Context, q querier, id uuid.UUID) (model.InstanceRuntime, error) {
	dest, finish := instanceRuntimeDest(&id)
	if err := q.QueryRow(ctx, "SELECT "+instanceRuntimeCols+" FROM instance WHERE id = $1 FOR UPDATE", id).Scan(dest...); err != nil {
		return model.InstanceRuntime{}, err
	}
	return finish()
}
