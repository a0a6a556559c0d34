package db

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane/model"
)

var sledConstraints = map[string]string{
	"sled_address_present": "a sled needs an address",
	"sled_cpus_positive":   "a sled's capacity needs CPUs",
	"sled_memory_positive": "a sled's capacity needs memory",
}

// RegisterSled inserts or updates a sled (address, versions, capacity),
// marks it active and its last contact s.LastContact (now, when zero).
// A sled registered again keeps its time of creation; its reservations
// stay, even beyond a capacity that shrank.
func (d *DB) RegisterSled(ctx context.Context, s model.Sled) error {
	op := fmt.Sprintf("db: register sled %s", s.ID)
	if s.ID == uuid.Nil {
		return fmt.Errorf("%s: id: nil", op)
	}
	if s.Address == "" {
		return fmt.Errorf("%s: address: empty", op)
	}
	cpus, mem, err := resourcesArgs("capacity", s.Capacity)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	now := time.Now()
	contact, created := s.LastContact, s.TimeCreated
	if contact.IsZero() {
		contact = now
	}
	if created.IsZero() {
		created = contact
	}
	versions := s.APIVersions
	if versions == nil {
		versions = []string{}
	}
	_, err = d.pool.Exec(ctx, `
		INSERT INTO sled (id, address, api_versions, cpus, memory_mib, state, time_created, last_contact)
		VALUES ($1, $2, $3, $4, $5, 'active', $6, $7)
		ON CONFLICT (id) DO UPDATE SET address = excluded.address, api_versions = excluded.api_versions,
			cpus = excluded.cpus, memory_mib = excluded.memory_mib, state = 'active',
			last_contact = excluded.last_contact`,
		s.ID, s.Address, versions, cpus, mem, created, contact)
	if err != nil {
		return fail(op, constraintError(err, sledConstraints))
	}
	return nil
}

// TouchSled moves a sled's last contact to at, when later.
func (d *DB) TouchSled(ctx context.Context, id uuid.UUID, at time.Time) error {
	op := fmt.Sprintf("db: touch sled %s", id)
	var exists bool
	err := d.pool.QueryRow(ctx, `
		WITH cur AS (SELECT 1 FROM sled WHERE id = $1),
		upd AS (UPDATE sled SET last_contact = $2 WHERE id = $1 AND last_contact < $2 RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM cur)`, id, at).Scan(&exists)
	if err != nil {
		return fail(op, err)
	}
	if !exists {
		return notFoundf("%s: no such sled", op)
	}
	return nil
}

// ReviveSled marks a lost sled active and moves its last contact to at,
// when later. It says whether the sled was lost; ErrNotFound for an
// unknown sled.
func (d *DB) ReviveSled(ctx context.Context, id uuid.UUID, at time.Time) (bool, error) {
	op := fmt.Sprintf("db: revive sled %s", id)
	var exists, revived bool
	err := d.pool.QueryRow(ctx, `
		WITH cur AS (SELECT 1 FROM sled WHERE id = $1),
		upd AS (UPDATE sled SET state = 'active', last_contact = GREATEST(last_contact, $2)
			WHERE id = $1 AND state = 'lost' RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM cur), EXISTS (SELECT 1 FROM upd)`, id, at).Scan(&exists, &revived)
	if err != nil {
		return false, fail(op, err)
	}
	if !exists {
		return false, notFoundf("%s: no such sled", op)
	}
	return revived, nil
}

// Sled reads one sled (ErrNotFound).
func (d *DB) Sled(ctx context.Context, id uuid.UUID) (model.Sled, error) {
	s, err := scanSled(d.pool.QueryRow(ctx, "SELECT "+sledCols+" FROM sled WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Sled{}, notFoundf("db: read sled %s", id)
	}
	if err != nil {
		return model.Sled{}, fail(fmt.Sprintf("db: read sled %s", id), err)
	}
	return s, nil
}

// Sleds lists every sled, by id.
func (d *DB) Sleds(ctx context.Context) ([]model.Sled, error) {
	rows, err := d.pool.Query(ctx, "SELECT "+sledCols+" FROM sled ORDER BY id")
	if err != nil {
		return nil, fail("db: list sleds", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Sled, error) { return scanSled(r) })
	if err != nil {
		return nil, fail("db: list sleds", err)
	}
	return out, nil
}

// SledsAfter lists at most limit sleds whose ids sort after after (every
// sled from the first when after is not Valid), by id: one page of a
// keyset pagination over the sleds' primary key.
func (d *DB) SledsAfter(ctx context.Context, after uuid.NullUUID, limit int) ([]model.Sled, error) {
	if limit < 1 {
		return nil, fmt.Errorf("db: list sleds: limit %d: want at least 1", limit)
	}
	var (
		rows pgx.Rows
		err  error
	)
	if after.Valid {
		rows, err = d.pool.Query(ctx, "SELECT "+sledCols+" FROM sled WHERE id > $1 ORDER BY id LIMIT $2", after.UUID, int64(limit))
	} else {
		rows, err = d.pool.Query(ctx, "SELECT "+sledCols+" FROM sled ORDER BY id LIMIT $1", int64(limit))
	}
	if err != nil {
		return nil, fail("db: list sleds", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Sled, error) { return scanSled(r) })
	if err != nil {
		return nil, fail("db: list sleds", err)
	}
	return out, nil
}

// MarkSledLost marks an active sled lost when its last contact is before
// silentSince, and fails every VMM on it that still exists on the sled and
// is not terminal, with reason sled_lost: each moves to its next
// generation, its instance as model.ApplyVmm says, its reservation
// released, all in one transaction. It returns the VMMs it failed (by id)
// and true; none and false when the sled was heard from since or is lost
// already; ErrNotFound for an unknown sled.
func (d *DB) MarkSledLost(ctx context.Context, id uuid.UUID, silentSince time.Time, now time.Time) ([]uuid.UUID, bool, error) {
	op := fmt.Sprintf("db: mark sled %s lost", id)
	var (
		failed []uuid.UUID
		marked bool
	)
	err := d.inTx(ctx, op, func(tx pgx.Tx) error {
		failed, marked = nil, false
		var (
			exists      bool
			lastContact *time.Time
		)
		err := tx.QueryRow(ctx, `
			WITH cur AS (SELECT 1 FROM sled WHERE id = $1),
			upd AS (UPDATE sled SET state = 'lost' WHERE id = $1 AND state = 'active' AND last_contact < $2
				RETURNING last_contact)
			SELECT EXISTS (SELECT 1 FROM cur), (SELECT last_contact FROM upd)`, id, silentSince).Scan(&exists, &lastContact)
		if err != nil {
			return err
		}
		if !exists {
			return notFoundf("no such sled")
		}
		if lastContact == nil {
			return nil
		}
		marked = true
		vmms, err := vmmsOnSled(ctx, tx, id)
		if err != nil {
			return err
		}
		var doomed []model.Vmm
		instanceIDs := map[uuid.UUID]bool{}
		for _, v := range vmms {
			if v.Runtime.State.ExistsOnSled() && !v.Runtime.State.IsTerminal() {
				doomed = append(doomed, v)
				instanceIDs[v.InstanceID] = true
			}
		}
		if len(doomed) == 0 {
			return nil
		}
		instances, err := lockInstances(ctx, tx, instanceIDs)
		if err != nil {
			return err
		}
		reason := model.FailureReason{Kind: model.FailureSledLost,
			Message: fmt.Sprintf("sled %s not heard from since %s", id, lastContact.UTC().Format(time.RFC3339))}
		for _, v := range doomed {
			next, ok := v.Runtime.Transition(model.VmmFailed(reason), now)
			if !ok {
				continue
			}
			res, err := writeVmm(ctx, tx, v.ID, next, "", true)
			if err != nil {
				return err
			}
			if res != model.WriteUpdated {
				continue // moved meanwhile: its own report tells
			}
			failed = append(failed, v.ID)
			ir := instances[v.InstanceID]
			nr, changed := model.ApplyVmm(ir, v.ID, model.SledVmmState{Vmm: next}, now)
			if !changed {
				continue
			}
			if _, err := writeInstance(ctx, tx, v.InstanceID, nr); err != nil {
				return err
			}
			instances[v.InstanceID] = nr
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return failed, marked, nil
}

// lockInstances reads the runtimes of instances ids FOR UPDATE, in the
// order of their ids, so that two transactions that lock several never
// deadlock on each other.
func lockInstances(ctx context.Context, q querier, ids map[uuid.UUID]bool) (map[uuid.UUID]model.InstanceRuntime, error) {
	list := make([]uuid.UUID, 0, len(ids))
	for id := range ids {
		list = append(list, id)
	}
	sort.Slice(list, func(i, j int) bool { return string(list[i][:]) < string(list[j][:]) })
	out := map[uuid.UUID]model.InstanceRuntime{}
	for _, id := range list {
		r, err := lockInstance(ctx, q, id)
		if err != nil {
			return nil, err
		}
		out[id] = r
	}
	return out, nil
}
