package db

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/model"
)

// rowSQL builds an INSERT of one row of table from default column values
// (SQL literals) with some replaced.
func rowSQL(table string, defaults, set map[string]string) string {
	cols := make([]string, 0, len(defaults))
	for c := range defaults {
		cols = append(cols, c)
	}
	for c := range set {
		if _, ok := defaults[c]; !ok {
			cols = append(cols, c)
		}
	}
	sort.Strings(cols)
	vals := make([]string, len(cols))
	for i, c := range cols {
		v, ok := set[c]
		if !ok {
			v = defaults[c]
		}
		vals[i] = v
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", table, strings.Join(cols, ", "), strings.Join(vals, ", "))
}

func q(s string) string { return "'" + s + "'" }

// Every CHECK constraint, foreign key and the unique name index refuses a
// row that breaks it, inserted with plain SQL behind the store's back; the
// same row without the fault goes in.
func TestConstraintsRefuseBadRows(t *testing.T) {
	f := newFixture(t)
	v := f.addVmm(t, f.inst, f.sled)
	v2 := f.addVmm(t, f.inst, f.sled)
	loose := f.addVmm(t, f.inst, f.sled)
	_, err := f.d.UpdateVmmRuntime(f.ctx, loose.ID, vmmRT(model.VmmDestroyed, 2)) // no reservation left
	require.NoError(t, err)
	src := f.start(t, f.addInstance(t, "migrating"), f.sled)
	mig := uuid.New()
	srcInst, err := f.d.Vmm(f.ctx, src.ID)
	require.NoError(t, err)
	tgt := f.addVmm(t, model.Instance{ID: srcInst.InstanceID, Resources: f.inst.Resources}, f.sled)
	require.NoError(t, f.d.CreateMigration(f.ctx, model.Migration{ID: mig, InstanceID: srcInst.InstanceID,
		SourceVmm: src.ID, TargetVmm: tgt.ID, TimeCreated: at(4)}))

	defaults := map[string]map[string]string{
		"sled": {"id": "gen_random_uuid()", "address": q("a:1"), "api_versions": q("{v1}"), "cpus": "1",
			"memory_mib": "1", "state": q("active"), "time_created": "now()", "last_contact": "now()"},
		"instance": {"id": "gen_random_uuid()", "name": "gen_random_uuid()::TEXT", "description": q(""),
			"spec_version": q("v1"), "spec": q("{}"), "cpus": "1", "memory_mib": "1", "time_created": "now()",
			"state": q("no_vmm"), "gen": "1", "time_updated": "now()"},
		"vmm": {"id": "gen_random_uuid()", "instance_id": q(f.inst.ID.String()), "sled_id": q(f.sled.ID.String()),
			"cpus": "1", "memory_mib": "1", "time_created": "now()", "state": q("creating"), "gen": "1",
			"time_updated": "now()"},
		"migration": {"id": "gen_random_uuid()", "instance_id": q(f.inst.ID.String()),
			"source_vmm_id": q(v.ID.String()), "target_vmm_id": q(v2.ID.String()), "source_state": q("pending"),
			"source_gen": "1", "source_time_updated": "now()", "target_state": q("pending"), "target_gen": "1",
			"target_time_updated": "now()", "time_created": "now()"},
		"sled_reservation": {"vmm_id": q(loose.ID.String()), "sled_id": q(f.sled.ID.String()), "cpus": "1",
			"memory_mib": "1", "time_created": "now()"},
	}
	V, V2, M := q(v.ID.String()), q(v2.ID.String()), q(mig.String())
	failed := map[string]string{"state": q("failed"), "failure_kind": q("vmm_failed"), "failure_message": q("")}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	cases := []struct {
		table      string
		set        map[string]string
		constraint string
	}{
		{"sled", map[string]string{"state": q("gone")}, "sled_state_known"},
		{"sled", map[string]string{"cpus": "0"}, "sled_cpus_positive"},
		{"sled", map[string]string{"memory_mib": "0"}, "sled_memory_positive"},
		{"sled", map[string]string{"address": q("")}, "sled_address_present"},

		{"instance", map[string]string{"state": q("sleeping")}, "instance_state_known"},
		{"instance", map[string]string{"gen": "0"}, "instance_gen_positive"},
		{"instance", map[string]string{"cpus": "0"}, "instance_cpus_positive"},
		{"instance", map[string]string{"memory_mib": "0"}, "instance_memory_positive"},
		{"instance", map[string]string{"name": q("")}, "instance_name_present"},
		{"instance", map[string]string{"spec_version": q("")}, "instance_spec_version_present"},
		{"instance", map[string]string{"name": q(f.inst.Name)}, "instance_name_unique"},
		{"instance", map[string]string{"state": q("vmm")}, "instance_active_vmm_iff_vmm"},
		{"instance", map[string]string{"active_vmm_id": V}, "instance_active_vmm_iff_vmm"},
		{"instance", map[string]string{"state": q("vmm"), "active_vmm_id": V, "target_vmm_id": V2}, "instance_target_with_migration"},
		{"instance", map[string]string{"state": q("vmm"), "active_vmm_id": V, "migration_id": M}, "instance_target_with_migration"},
		{"instance", map[string]string{"target_vmm_id": V2, "migration_id": M}, "instance_target_beside_active"},
		{"instance", map[string]string{"state": q("vmm"), "active_vmm_id": V, "target_vmm_id": V, "migration_id": M}, "instance_target_beside_active"},
		{"instance", map[string]string{"state": q("failed")}, "instance_failure_iff_failed"},
		{"instance", map[string]string{"failure_kind": q("vmm_failed"), "failure_message": q("x")}, "instance_failure_iff_failed"},
		{"instance", with(failed, "failure_kind", q("")), "instance_failure_iff_failed"},
		{"instance", with(failed, "failure_message", "NULL"), "instance_failure_iff_failed"},
		{"instance", with(failed, "failure_kind", q("meteor")), "instance_failure_kind_known"},
		{"instance", map[string]string{"state": q("vmm"), "active_vmm_id": q(uuid.NewString())}, "instance_active_vmm_fk"},
		{"instance", map[string]string{"updater_gen": "-1"}, "instance_updater_gen_nonnegative"},

		{"vmm", map[string]string{"state": q("paused")}, "vmm_state_known"},
		{"vmm", map[string]string{"gen": "0"}, "vmm_gen_positive"},
		{"vmm", map[string]string{"cpus": "0"}, "vmm_cpus_positive"},
		{"vmm", map[string]string{"memory_mib": "0"}, "vmm_memory_positive"},
		{"vmm", map[string]string{"state": q("failed")}, "vmm_failure_iff_failed"},
		{"vmm", map[string]string{"state": q("running"), "failure_kind": q("vmm_failed"), "failure_message": q("")}, "vmm_failure_iff_failed"},
		{"vmm", with(failed, "failure_kind", q("meteor")), "vmm_failure_kind_known"},
		{"vmm", map[string]string{"state": q("running"), "time_retired": "now()"}, "vmm_retired_only_terminal"},
		{"vmm", map[string]string{"instance_id": q(uuid.NewString())}, "vmm_instance_fk"},
		{"vmm", map[string]string{"sled_id": q(uuid.NewString())}, "vmm_sled_fk"},

		{"migration", map[string]string{"target_vmm_id": V}, "migration_vmms_differ"},
		{"migration", map[string]string{"source_state": q("halfway")}, "migration_source_state_known"},
		{"migration", map[string]string{"target_state": q("halfway")}, "migration_target_state_known"},
		{"migration", map[string]string{"source_gen": "0"}, "migration_source_gen_positive"},
		{"migration", map[string]string{"target_gen": "0"}, "migration_target_gen_positive"},
		{"migration", map[string]string{"source_vmm_id": q(uuid.NewString())}, "migration_source_fk"},
		{"migration", map[string]string{"instance_id": q(uuid.NewString())}, "migration_instance_fk"},

		{"sled_reservation", map[string]string{"cpus": "0"}, "sled_reservation_cpus_positive"},
		{"sled_reservation", map[string]string{"memory_mib": "0"}, "sled_reservation_memory_positive"},
		{"sled_reservation", map[string]string{"vmm_id": q(uuid.NewString())}, "sled_reservation_vmm_fk"},
		{"sled_reservation", map[string]string{"sled_id": q(uuid.NewString())}, "sled_reservation_sled_fk"},
	}
	for _, tc := range cases {
		sql := rowSQL(tc.table, defaults[tc.table], tc.set)
		_, err := f.d.Pool().Exec(f.ctx, sql)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%s: not refused: %v", sql, err)
		require.Equal(t, tc.constraint, pgErr.ConstraintName, sql)
	}

	// The defaults themselves, and the good neighbours of the bad rows, go
	// in: each refusal above is the fault's.
	for _, good := range []struct {
		table string
		set   map[string]string
	}{
		{"sled", nil},
		{"instance", nil},
		{"instance", failed},
		{"instance", map[string]string{"name": q(f.inst.Name), "state": q("destroyed")}},
		{"instance", map[string]string{"state": q("vmm"), "active_vmm_id": V}},
		{"vmm", nil},
		{"vmm", with(failed, "time_retired", "now()")},
		{"migration", nil},
		{"sled_reservation", nil},
	} {
		_, err := f.d.Pool().Exec(f.ctx, rowSQL(good.table, defaults[good.table], good.set))
		require.NoError(t, err, "%s %v", good.table, good.set)
	}
}

// The enums of the schema are the model's: every state and failure kind
// the model knows goes in.
func TestSchemaEnumsMatchTheModel(t *testing.T) {
	f := newFixture(t)
	for _, name := range model.VmmStateNames {
		kind, msg := "NULL", "NULL"
		if name == "failed" {
			kind, msg = q("vmm_failed"), q("")
		}
		_, err := f.d.Pool().Exec(f.ctx, `INSERT INTO vmm (id, instance_id, sled_id, cpus, memory_mib, time_created,
			state, gen, time_updated, failure_kind, failure_message) VALUES ($1, $2, $3, 1, 1, now(), $4, 1, now(), `+
			kind+`, `+msg+`)`, uuid.New(), f.inst.ID, f.sled.ID, name)
		require.NoError(t, err, name)
	}
	for _, k := range model.FailureKinds {
		_, err := f.d.Pool().Exec(f.ctx, `INSERT INTO vmm (id, instance_id, sled_id, cpus, memory_mib, time_created,
			state, gen, time_updated, failure_kind, failure_message) VALUES ($1, $2, $3, 1, 1, now(), 'failed', 1, now(), $4, '')`,
			uuid.New(), f.inst.ID, f.sled.ID, string(k))
		require.NoError(t, err, k)
	}
	v := f.addVmm(t, f.inst, f.sled)
	for _, s := range model.InstanceStates {
		in := model.Instance{ID: uuid.New(), Name: uuid.NewString(), SpecVersion: "v1", Spec: []byte(`{}`),
			Resources: model.Resources{CPUs: 1, MemoryMiB: 1}, TimeCreated: at(0),
			Runtime: model.InstanceRuntime{State: s, Gen: 1, TimeUpdated: at(0)}}
		switch s {
		case model.InstanceVmm:
			in.Runtime.ActiveVmm = nu(v.ID)
		case model.InstanceFailed:
			in.Runtime.Failure = &model.FailureReason{Kind: model.FailureVMMGone}
		}
		require.NoError(t, f.d.CreateInstance(f.ctx, in), s)
	}
	v2 := f.addVmm(t, f.inst, f.sled)
	for _, s := range model.MigrationStates {
		_, err := f.d.Pool().Exec(f.ctx, `INSERT INTO migration (id, instance_id, source_vmm_id, target_vmm_id,
			source_state, source_gen, source_time_updated, target_state, target_gen, target_time_updated, time_created)
			VALUES ($1, $2, $3, $4, $5, 1, now(), $5, 1, now(), now())`, uuid.New(), f.inst.ID, v.ID, v2.ID, string(s))
		require.NoError(t, err, s)
	}
}

// A row the model cannot read is an error naming its table, row and
// column, never a panic or a zero value.
func TestUnreadableRowsAreNamed(t *testing.T) {
	f := newFixture(t)
	v := f.addVmm(t, f.inst, f.sled)
	// Drop the constraint that would refuse it, as an older or foreign
	// writer might have.
	_, err := f.d.Pool().Exec(f.ctx, "ALTER TABLE vmm DROP CONSTRAINT vmm_state_known")
	require.NoError(t, err)
	_, err = f.d.Pool().Exec(f.ctx, "UPDATE vmm SET state = 'paused' WHERE id = $1", v.ID)
	require.NoError(t, err)
	_, err = f.d.Vmm(f.ctx, v.ID)
	require.Error(t, err)
	require.Contains(t, err.Error(), "vmm "+v.ID.String())
	require.Contains(t, err.Error(), "state")
	require.Contains(t, err.Error(), "paused")

	_, err = f.d.Pool().Exec(f.ctx, "ALTER TABLE instance DROP CONSTRAINT instance_gen_positive")
	require.NoError(t, err)
	_, err = f.d.Pool().Exec(f.ctx, "UPDATE instance SET gen = 0 WHERE id = $1", f.inst.ID)
	require.NoError(t, err)
	_, err = f.d.Instance(f.ctx, f.inst.ID)
	require.ErrorContains(t, err, "instance "+f.inst.ID.String()+": column gen")
}
