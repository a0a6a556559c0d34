package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane/model"
)

var migrationConstraints = map[string]string{
	"migration_pkey":        "a migration with this id exists",
	"migration_vmms_differ": "a migration's source and target are two VMMs",
	"migration_source_fk":   "the source VMM does not exist",
	"migration_target_fk":   "the target VMM does not exist",
}

// CreateMigration inserts a migration (both sides pending, generation 1,
// updated at m.TimeCreated) and points its instance at the target VMM and
// the migration, with the instance's next generation, in one transaction.
// ErrNotFound for an unknown instance; ErrConflict when the instance's
// active VMM is not the source, when it migrates already, or when the
// target is not a VMM of the instance.
func (d *DB) CreateMigration(ctx context.Context, m model.Migration) error {
	op := fmt.Sprintf("db: create migration %s", m.ID)
	if m.ID == uuid.Nil || m.InstanceID == uuid.Nil || m.SourceVmm == uuid.Nil || m.TargetVmm == uuid.Nil {
		return fmt.Errorf("%s: id, instance id, source and target VMM must not be nil", op)
	}
	if m.SourceVmm == m.TargetVmm {
		return fmt.Errorf("%s: source and target VMM are both %s", op, m.SourceVmm)
	}
	return d.inTx(ctx, op, func(tx pgx.Tx) error {
		ir, err := lockInstance(ctx, tx, m.InstanceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFoundf("instance %s does not exist", m.InstanceID)
		}
		if err != nil {
			return err
		}
		switch {
		case ir.State != model.InstanceVmm || ir.ActiveVmm.UUID != m.SourceVmm:
			return conflictf("instance %s (state %s, active VMM %v) does not run on the source VMM %s",
				m.InstanceID, ir.State, nullString(ir.ActiveVmm), m.SourceVmm)
		case ir.Migration.Valid:
			return conflictf("instance %s migrates already (migration %s)", m.InstanceID, ir.Migration.UUID)
		}
		var (
			targetInstance uuid.UUID
			targetState    string
		)
		err = tx.QueryRow(ctx, "SELECT instance_id, state FROM vmm WHERE id = $1", m.TargetVmm).Scan(&targetInstance, &targetState)
		if errors.Is(err, pgx.ErrNoRows) {
			return conflictf("the target VMM %s does not exist", m.TargetVmm)
		}
		if err != nil {
			return err
		}
		if targetInstance != m.InstanceID {
			return conflictf("the target VMM %s belongs to instance %s, not %s", m.TargetVmm, targetInstance, m.InstanceID)
		}
		_, err = tx.Exec(ctx, `INSERT INTO migration (id, instance_id, source_vmm_id, target_vmm_id,
				source_state, source_gen, source_time_updated, target_state, target_gen, target_time_updated, time_created)
			VALUES ($1, $2, $3, $4, 'pending', 1, $5, 'pending', 1, $5, $5)`,
			m.ID, m.InstanceID, m.SourceVmm, m.TargetVmm, m.TimeCreated)
		if err != nil {
			return constraintError(err, migrationConstraints)
		}
		next := ir
		next.TargetVmm = uuid.NullUUID{UUID: m.TargetVmm, Valid: true}
		next.Migration = uuid.NullUUID{UUID: m.ID, Valid: true}
		next.Gen, next.TimeUpdated = ir.Gen.Next(), m.TimeCreated
		if _, err := writeInstance(ctx, tx, m.InstanceID, next); err != nil {
			return constraintError(err, instanceConstraints)
		}
		return nil
	})
}

// Migration reads one migration (ErrNotFound).
func (d *DB) Migration(ctx context.Context, id uuid.UUID) (model.Migration, error) {
	m, err := scanMigration(d.pool.QueryRow(ctx, "SELECT "+migrationCols+" FROM migration WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Migration{}, notFoundf("db: read migration %s", id)
	}
	if err != nil {
		return model.Migration{}, fail(fmt.Sprintf("db: read migration %s", id), err)
	}
	return m, nil
}

// nullString shows a NullUUID for a message.
func nullString(u uuid.NullUUID) string {
	if !u.Valid {
		return "none"
	}
	return u.UUID.String()
}
