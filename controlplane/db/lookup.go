package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/wagglevm/waggle/controlplane/model"
)

// Instances lists the instances not destroyed, by name.
func (d *DB) Instances(ctx context.Context) ([]model.Instance, error) {
	rows, err := d.pool.Query(ctx, "SELECT "+instanceCols+" FROM instance WHERE state <> 'destroyed' ORDER BY name, id")
	if err != nil {
		return nil, fail("db: list instances", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Instance, error) { return scanInstance(r) })
	if err != nil {
		return nil, fail("db: list instances", err)
	}
	return out, nil
}

// InstancesAfter lists at most limit instances not destroyed whose names
// sort after after ("" for the first page), by name: one page of a keyset
// pagination, served by the index on the names of instances not destroyed.
func (d *DB) InstancesAfter(ctx context.Context, after string, limit int) ([]model.Instance, error) {
	if limit < 1 {
		return nil, fmt.Errorf("db: list instances after %q: limit %d: want at least 1", after, limit)
	}
	rows, err := d.pool.Query(ctx, "SELECT "+instanceCols+" FROM instance WHERE state <> 'destroyed' AND name > $1 ORDER BY name LIMIT $2",
		after, int64(limit))
	if err != nil {
		return nil, fail("db: list instances", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.Instance, error) { return scanInstance(r) })
	if err != nil {
		return nil, fail("db: list instances", err)
	}
	return out, nil
}

// InstanceByName reads the instance not destroyed that has name
// (ErrNotFound).
func (d *DB) InstanceByName(ctx context.Context, name string) (model.Instance, error) {
	in, err := scanInstance(d.pool.QueryRow(ctx, "SELECT "+instanceCols+" FROM instance WHERE name = $1 AND state <> 'destroyed'", name))
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Instance{}, notFoundf("db: no instance is named %q", name)
	}
	if err != nil {
		return model.Instance{}, fail(fmt.Sprintf("db: read instance %q", name), err)
	}
	return in, nil
}
