package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

// migrationSide names the columns of one side of a migration: the source
// VMM's report of its outbound migration moves the source side, the target
// VMM's of its inbound one the target side.
type migrationSide string

const (
	sourceSide migrationSide = "source"
	targetSide migrationSide = "target"
)

// ApplySledVmmState stores a sled agent's report of VMM id in one
// transaction:
//   - it locks the VMM's instance (SELECT ... FOR UPDATE), so reports of
//     one instance's VMMs apply one at a time;
//   - it writes the VMM's state, and addr when not empty, with the
//     generation check (a terminal VMM's state is final);
//   - it writes the source side of st.MigrationOut and the target side of
//     st.MigrationIn, each with its generation check and only when that
//     migration's source (target) is this VMM;
//   - it works out model.ApplyVmm for the instance from the VMM and the
//     migration sides as stored after those writes, and writes the result
//     with the generation check;
//   - it releases the VMM's reservation when the stored state is
//     destroyable.
//
// A stale or duplicate report changes nothing. Applied.Vmm is WriteMissing
// (and the error nil) for an unknown VMM.
func (d *DB) ApplySledVmmState(ctx context.Context, id uuid.UUID, addr string, st model.SledVmmState, now time.Time) (controlplane.Applied, error) {
	op := fmt.Sprintf("db: apply the state of VMM %s", id)
	if _, _, _, _, err := vmmRuntimeArgs("vmm", st.Vmm); err != nil {
		return controlplane.Applied{}, fmt.Errorf("%s: %w", op, err)
	}
	for _, m := range []struct {
		field string
		obs   *model.MigrationObservation
	}{{"migration_out", st.MigrationOut}, {"migration_in", st.MigrationIn}} {
		if m.obs == nil {
			continue
		}
		if _, _, err := migrationRuntimeArgs(m.field, m.obs.MigrationRuntime); err != nil {
			return controlplane.Applied{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	var applied controlplane.Applied
	err := d.inTx(ctx, op, func(tx pgx.Tx) error {
		applied = controlplane.Applied{}
		var instanceID uuid.UUID
		err := tx.QueryRow(ctx, "SELECT instance_id FROM vmm WHERE id = $1", id).Scan(&instanceID)
		if errors.Is(err, pgx.ErrNoRows) {
			applied.Vmm = model.WriteMissing
			return nil
		}
		if err != nil {
			return err
		}
		ir, err := lockInstance(ctx, tx, instanceID)
		if err != nil {
			return err
		}
		if applied.Vmm, err = writeVmm(ctx, tx, id, st.Vmm, addr, false); err != nil {
			return err
		}
		obs := model.SledVmmState{}
		if st.MigrationOut != nil {
			moved, stored, err := writeMigrationSide(ctx, tx, sourceSide, id, *st.MigrationOut)
			if err != nil {
				return err
			}
			applied.Migrations += moved
			obs.MigrationOut = stored
		}
		if st.MigrationIn != nil {
			moved, stored, err := writeMigrationSide(ctx, tx, targetSide, id, *st.MigrationIn)
			if err != nil {
				return err
			}
			applied.Migrations += moved
			obs.MigrationIn = stored
		}
		if applied.Stored, err = readVmm(ctx, tx, id); err != nil {
			return err
		}
		obs.Vmm = applied.Stored.Runtime
		if next, changed := model.ApplyVmm(ir, id, obs, now); changed {
			res, err := writeInstance(ctx, tx, instanceID, next)
			if err != nil {
				return constraintError(err, instanceConstraints)
			}
			applied.Instance = res == model.WriteUpdated
		}
		if applied.Stored.Runtime.State.IsDestroyable() {
			if _, err := tx.Exec(ctx, "DELETE FROM sled_reservation WHERE vmm_id = $1", id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return controlplane.Applied{}, err
	}
	return applied, nil
}

// writeMigrationSide writes one side of a migration as VMM vmm reports it
// (generation-checked; a terminal side is final), when that side is
// vmm's. It returns 1 when the side moved, and the side as stored
// afterwards (nil when the migration does not exist or that side is
// another VMM's).
func writeMigrationSide(ctx context.Context, tx pgx.Tx, side migrationSide, vmm uuid.UUID, o model.MigrationObservation) (int, *model.MigrationObservation, error) {
	state, gen, err := migrationRuntimeArgs(string(side), o.MigrationRuntime)
	if err != nil {
		return 0, nil, err
	}
	s := string(side)
	tag, err := tx.Exec(ctx, `UPDATE migration SET `+s+`_state = $3, `+s+`_gen = $4, `+s+`_time_updated = $5
		WHERE id = $1 AND `+s+`_vmm_id = $2 AND `+s+`_gen < $4 AND `+s+`_state NOT IN ('completed', 'failed')`,
		o.ID, vmm, state, gen, o.TimeUpdated)
	if err != nil {
		return 0, nil, err
	}
	stored := model.MigrationObservation{ID: o.ID}
	var (
		storedState string
		storedGen   int64
	)
	err = tx.QueryRow(ctx, `SELECT `+s+`_state, `+s+`_gen, `+s+`_time_updated FROM migration
		WHERE id = $1 AND `+s+`_vmm_id = $2`, o.ID, vmm).Scan(&storedState, &storedGen, &stored.TimeUpdated)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	if stored.State, err = model.ParseMigrationState(storedState); err != nil {
		return 0, nil, fmt.Errorf("migration %s: column %s_state: %w", o.ID, s, err)
	}
	if stored.Gen, err = genCol("migration", o.ID, s+"_gen", storedGen); err != nil {
		return 0, nil, err
	}
	stored.TimeUpdated = stored.TimeUpdated.UTC()
	return int(tag.RowsAffected()), &stored, nil
}
