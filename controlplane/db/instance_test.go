package db

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

func TestInstanceRoundTrip(t *testing.T) {
	f := newFixture(t)
	got, err := f.d.Instance(f.ctx, f.inst.ID)
	require.NoError(t, err)
	require.JSONEq(t, string(f.inst.Spec), string(got.Spec))
	got.Spec = f.inst.Spec
	require.Equal(t, f.inst, got)

	failed := model.Instance{ID: uuid.New(), Name: "failed-one", SpecVersion: "v2", Spec: []byte(`{}`),
		Resources: model.Resources{CPUs: 1, MemoryMiB: 1}, TimeCreated: at(0),
		Runtime: model.InstanceRuntime{State: model.InstanceFailed, Gen: 7, TimeUpdated: at(7),
			Failure: &model.FailureReason{Kind: model.FailureVMMGone}}}
	require.NoError(t, f.d.CreateInstance(f.ctx, failed))
	got, err = f.d.Instance(f.ctx, failed.ID)
	require.NoError(t, err)
	require.Equal(t, failed, got, "an empty failure message is kept as empty")

	_, err = f.d.Instance(f.ctx, uuid.New())
	require.ErrorIs(t, err, controlplane.ErrNotFound)
}

func TestCreateInstanceConflicts(t *testing.T) {
	f := newFixture(t)
	dupID := f.inst
	dupID.Name = "another"
	err := f.d.CreateInstance(f.ctx, dupID)
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Contains(t, err.Error(), "instance_pkey")

	dupName := f.inst
	dupName.ID = uuid.New()
	err = f.d.CreateInstance(f.ctx, dupName)
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Contains(t, err.Error(), `"vm-1" is in use`)

	// Once the first is destroyed, its name is free.
	r := f.inst.Runtime
	r.State, r.Gen = model.InstanceDestroyed, 2
	res, err := f.d.UpdateInstanceRuntime(f.ctx, f.inst.ID, r)
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, res)
	require.NoError(t, f.d.CreateInstance(f.ctx, dupName))
}

func TestCreateInstanceRefusesBadInputNamingTheField(t *testing.T) {
	f := newFixture(t)
	base := f.inst
	base.ID, base.Name = uuid.New(), "fresh"
	for name, tc := range map[string]struct {
		edit  func(*model.Instance)
		field string
	}{
		"nil id":       {func(in *model.Instance) { in.ID = uuid.Nil }, "id"},
		"no name":      {func(in *model.Instance) { in.Name = "" }, "name"},
		"no version":   {func(in *model.Instance) { in.SpecVersion = "" }, "spec_version"},
		"no spec":      {func(in *model.Instance) { in.Spec = nil }, "spec"},
		"bad spec":     {func(in *model.Instance) { in.Spec = []byte("{") }, "spec: not JSON"},
		"no cpus":      {func(in *model.Instance) { in.Resources.CPUs = 0 }, "resources.cpus"},
		"bad state":    {func(in *model.Instance) { in.Runtime.State = "sleeping" }, "runtime.state"},
		"gen 0":        {func(in *model.Instance) { in.Runtime.Gen = 0 }, "generation"},
		"vmm, none":    {func(in *model.Instance) { in.Runtime.State = model.InstanceVmm }, "active VMM"},
		"failed, why?": {func(in *model.Instance) { in.Runtime.State = model.InstanceFailed }, "failure reason"},
		"unknown kind": {func(in *model.Instance) {
			in.Runtime.State, in.Runtime.Failure = model.InstanceFailed, &model.FailureReason{Kind: "meteor"}
		}, "runtime.failure.kind"},
	} {
		in := base
		tc.edit(&in)
		err := f.d.CreateInstance(f.ctx, in)
		require.ErrorContains(t, err, tc.field, name)
	}
}

func TestUpdateInstanceRuntimeGenerations(t *testing.T) {
	f := newFixture(t)
	r := f.inst.Runtime
	failedAt := func(gen model.Generation, msg string) model.InstanceRuntime {
		return model.InstanceRuntime{State: model.InstanceFailed, Gen: gen, TimeUpdated: at(int(gen)),
			Failure: &model.FailureReason{Kind: model.FailureVMMFailed, Message: msg}}
	}
	res, err := f.d.UpdateInstanceRuntime(f.ctx, f.inst.ID, failedAt(3, "newer"))
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, res)
	for _, g := range []model.Generation{3, 2, 1} {
		res, err = f.d.UpdateInstanceRuntime(f.ctx, f.inst.ID, failedAt(g, "older or equal"))
		require.NoError(t, err)
		require.Equal(t, model.WriteStale, res, "gen %d", g)
	}
	require.Equal(t, failedAt(3, "newer"), f.instanceRuntime(t, f.inst.ID))

	res, err = f.d.UpdateInstanceRuntime(f.ctx, uuid.New(), r)
	require.NoError(t, err)
	require.Equal(t, model.WriteMissing, res)

	// A VMM that does not exist is refused by its foreign key.
	bad := model.InstanceRuntime{State: model.InstanceVmm, Gen: 9, TimeUpdated: at(9), ActiveVmm: nu(uuid.New())}
	_, err = f.d.UpdateInstanceRuntime(f.ctx, f.inst.ID, bad)
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Contains(t, err.Error(), "instance_active_vmm_fk")
}

func TestCreateMigrationPointsTheInstanceAtTheTarget(t *testing.T) {
	f := newFixture(t)
	src := f.start(t, f.inst, f.sled)
	tgt := f.addVmm(t, f.inst, f.sled)
	before := f.instanceRuntime(t, f.inst.ID)
	m := model.Migration{ID: uuid.New(), InstanceID: f.inst.ID, SourceVmm: src.ID, TargetVmm: tgt.ID, TimeCreated: at(5)}
	require.NoError(t, f.d.CreateMigration(f.ctx, m))

	got, err := f.d.Migration(f.ctx, m.ID)
	require.NoError(t, err)
	pending := model.MigrationRuntime{State: model.MigrationPending, Gen: 1, TimeUpdated: at(5)}
	m.Source, m.Target = pending, pending
	require.Equal(t, m, got)
	r := f.instanceRuntime(t, f.inst.ID)
	require.Equal(t, before.Gen.Next(), r.Gen)
	require.Equal(t, nu(tgt.ID), r.TargetVmm)
	require.Equal(t, nu(m.ID), r.Migration)
	require.Equal(t, nu(src.ID), r.ActiveVmm)

	// A second migration of a migrating instance.
	other := f.addVmm(t, f.inst, f.sled)
	err = f.d.CreateMigration(f.ctx, model.Migration{ID: uuid.New(), InstanceID: f.inst.ID, SourceVmm: src.ID,
		TargetVmm: other.ID, TimeCreated: at(6)})
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Contains(t, err.Error(), "migrates already")

	_, err = f.d.Migration(f.ctx, uuid.New())
	require.ErrorIs(t, err, controlplane.ErrNotFound)
}

func TestCreateMigrationConflicts(t *testing.T) {
	f := newFixture(t)
	idle := f.addVmm(t, f.inst, f.sled)
	tgt := f.addVmm(t, f.inst, f.sled)
	m := model.Migration{ID: uuid.New(), InstanceID: f.inst.ID, SourceVmm: idle.ID, TargetVmm: tgt.ID, TimeCreated: at(5)}
	err := f.d.CreateMigration(f.ctx, m)
	require.ErrorIs(t, err, controlplane.ErrConflict, "an instance without an active VMM")
	require.Contains(t, err.Error(), "does not run on the source")

	src := f.start(t, f.inst, f.sled)
	in2 := f.addInstance(t, "vm-2")
	foreign := f.addVmm(t, in2, f.sled)
	m = model.Migration{ID: uuid.New(), InstanceID: f.inst.ID, SourceVmm: src.ID, TargetVmm: foreign.ID, TimeCreated: at(5)}
	err = f.d.CreateMigration(f.ctx, m)
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Contains(t, err.Error(), "belongs to instance")

	m.TargetVmm = uuid.New()
	err = f.d.CreateMigration(f.ctx, m)
	require.ErrorIs(t, err, controlplane.ErrConflict)

	m.InstanceID = uuid.New()
	err = f.d.CreateMigration(f.ctx, m)
	require.ErrorIs(t, err, controlplane.ErrNotFound)

	var n int
	require.NoError(t, f.d.Pool().QueryRow(f.ctx, "SELECT count(*) FROM migration").Scan(&n))
	require.Zero(t, n, "a refused migration left a row")
}
