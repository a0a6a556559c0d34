package db

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

// migrating sets up a migration of the fixture's instance from a running
// source to a fresh target on another sled.
func (f *fixture) migrating(t *testing.T) (src, tgt model.Vmm, mig uuid.UUID, other model.Sled) {
	t.Helper()
	src = f.start(t, f.inst, f.sled)
	other = f.addSled(t, capacity16)
	tgt = f.addVmm(t, f.inst, other)
	mig = uuid.New()
	require.NoError(t, f.d.CreateMigration(f.ctx, model.Migration{ID: mig, InstanceID: f.inst.ID, SourceVmm: src.ID,
		TargetVmm: tgt.ID, TimeCreated: at(5)}))
	return src, tgt, mig, other
}

func migObs(id uuid.UUID, s model.MigrationState, gen model.Generation) *model.MigrationObservation {
	return &model.MigrationObservation{ID: id, MigrationRuntime: model.MigrationRuntime{State: s, Gen: gen, TimeUpdated: at(int(gen) + 10)}}
}

func TestApplyMigrationHandOff(t *testing.T) {
	f := newFixture(t)
	src, tgt, mig, other := f.migrating(t)
	start := f.instanceRuntime(t, f.inst.ID)

	// Both sides under way: no change for the instance.
	ap, err := f.d.ApplySledVmmState(f.ctx, tgt.ID, "10.0.0.9:5000", model.SledVmmState{
		Vmm: vmmRT(model.VmmMigrating, 2), MigrationIn: migObs(mig, model.MigrationInProgress, 2)}, at(20))
	require.NoError(t, err)
	require.Equal(t, controlplane.Applied{Vmm: model.WriteUpdated, Migrations: 1, Instance: false, Stored: ap.Stored}, ap)
	require.Equal(t, "10.0.0.9:5000", ap.Stored.Address)
	ap, err = f.d.ApplySledVmmState(f.ctx, src.ID, "", model.SledVmmState{
		Vmm: vmmRT(model.VmmMigrating, 4), MigrationOut: migObs(mig, model.MigrationInProgress, 2)}, at(21))
	require.NoError(t, err)
	require.Equal(t, 1, ap.Migrations)
	require.False(t, ap.Instance)
	require.Equal(t, "127.0.0.1:4000", ap.Stored.Address, "an empty address keeps the stored one")
	require.Equal(t, start, f.instanceRuntime(t, f.inst.ID))

	// The target says it completed: it becomes the active VMM.
	ap, err = f.d.ApplySledVmmState(f.ctx, tgt.ID, "", model.SledVmmState{
		Vmm: running(3), MigrationIn: migObs(mig, model.MigrationCompleted, 3)}, at(30))
	require.NoError(t, err)
	require.True(t, ap.Instance)
	r := f.instanceRuntime(t, f.inst.ID)
	require.Equal(t, model.InstanceRuntime{State: model.InstanceVmm, Gen: start.Gen.Next(), TimeUpdated: at(30),
		ActiveVmm: nu(tgt.ID)}, r)
	m, err := f.d.Migration(f.ctx, mig)
	require.NoError(t, err)
	require.Equal(t, model.MigrationCompleted, m.Target.State)
	require.Equal(t, model.MigrationInProgress, m.Source.State)

	// The source hands off and is destroyed: its reservation goes, the
	// instance (no longer its) stays.
	ap, err = f.d.ApplySledVmmState(f.ctx, src.ID, "", model.SledVmmState{
		Vmm: vmmRT(model.VmmDestroyed, 5), MigrationOut: migObs(mig, model.MigrationCompleted, 3)}, at(31))
	require.NoError(t, err)
	require.False(t, ap.Instance)
	require.Equal(t, r, f.instanceRuntime(t, f.inst.ID))
	reserved, err := f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Zero(t, reserved)
	reserved, err = f.d.Reserved(f.ctx, other.ID)
	require.NoError(t, err)
	require.Equal(t, f.inst.Resources, reserved)
	m, err = f.d.Migration(f.ctx, mig)
	require.NoError(t, err)
	require.Equal(t, model.MigrationRuntime{State: model.MigrationCompleted, Gen: 3, TimeUpdated: at(13)}, m.Source)
}

// A side is written only by its own VMM: the target's report of an
// outbound migration it is not the source of moves nothing.
func TestApplyMigrationSideOnlyFromItsVmm(t *testing.T) {
	f := newFixture(t)
	_, tgt, mig, _ := f.migrating(t)
	ap, err := f.d.ApplySledVmmState(f.ctx, tgt.ID, "", model.SledVmmState{
		Vmm: vmmRT(model.VmmMigrating, 2), MigrationOut: migObs(mig, model.MigrationCompleted, 9)}, at(20))
	require.NoError(t, err)
	require.Zero(t, ap.Migrations)
	require.False(t, ap.Instance)
	m, err := f.d.Migration(f.ctx, mig)
	require.NoError(t, err)
	require.Equal(t, model.MigrationPending, m.Source.State)
	require.Equal(t, model.Generation(1), m.Source.Gen)
}

func TestApplyFailedMigrationDropsTheTarget(t *testing.T) {
	f := newFixture(t)
	src, tgt, mig, other := f.migrating(t)
	start := f.instanceRuntime(t, f.inst.ID)
	why := model.FailureReason{Kind: model.FailureExceedsReservation, Message: "asked 4 CPUs"}
	ap, err := f.d.ApplySledVmmState(f.ctx, tgt.ID, "", model.SledVmmState{
		Vmm: vmmRT(model.VmmFailed(why), 3), MigrationIn: migObs(mig, model.MigrationFailed, 2)}, at(40))
	require.NoError(t, err)
	require.True(t, ap.Instance)
	require.Equal(t, model.InstanceRuntime{State: model.InstanceVmm, Gen: start.Gen.Next(), TimeUpdated: at(40),
		ActiveVmm: nu(src.ID)}, f.instanceRuntime(t, f.inst.ID))
	reserved, err := f.d.Reserved(f.ctx, other.ID)
	require.NoError(t, err)
	require.Zero(t, reserved, "the failed target's reservation is released")
	reserved, err = f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, f.inst.Resources, reserved, "the source keeps its reservation")
	v, err := f.d.Vmm(f.ctx, tgt.ID)
	require.NoError(t, err)
	require.Equal(t, vmmRT(model.VmmFailed(why), 3), v.Runtime)
}

func TestApplyActiveVmmFailedFailsTheInstance(t *testing.T) {
	f := newFixture(t)
	v := f.start(t, f.inst, f.sled)
	start := f.instanceRuntime(t, f.inst.ID)
	why := model.FailureReason{Kind: model.FailureProcessExited, Message: "signal: killed"}
	ap, err := f.d.ApplySledVmmState(f.ctx, v.ID, "", sledState(vmmRT(model.VmmFailed(why), 4)), at(50))
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, ap.Vmm)
	require.True(t, ap.Instance)
	require.Equal(t, model.InstanceRuntime{State: model.InstanceFailed, Gen: start.Gen.Next(), TimeUpdated: at(50),
		Failure: &why}, f.instanceRuntime(t, f.inst.ID))
	reserved, err := f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Zero(t, reserved)
}

func TestApplyActiveVmmStoppedLeavesNoVmm(t *testing.T) {
	f := newFixture(t)
	v := f.start(t, f.inst, f.sled)
	_, err := f.d.ApplySledVmmState(f.ctx, v.ID, "", sledState(vmmRT(model.VmmStopping, 4)), at(60))
	require.NoError(t, err)
	require.Equal(t, model.InstanceVmm, f.instanceRuntime(t, f.inst.ID).State, "stopping is no change")
	ap, err := f.d.ApplySledVmmState(f.ctx, v.ID, "", sledState(vmmRT(model.VmmDestroyed, 5)), at(61))
	require.NoError(t, err)
	require.True(t, ap.Instance)
	r := f.instanceRuntime(t, f.inst.ID)
	require.Equal(t, model.InstanceNoVmm, r.State)
	require.False(t, r.ActiveVmm.Valid)
}

// Stale and duplicate reports change nothing at all: every row of every
// table is the same afterwards.
func TestApplyStaleAndDuplicateReportsChangeNothing(t *testing.T) {
	f := newFixture(t)
	_, tgt, mig, _ := f.migrating(t)
	report := model.SledVmmState{Vmm: running(3), MigrationIn: migObs(mig, model.MigrationCompleted, 3)}
	ap, err := f.d.ApplySledVmmState(f.ctx, tgt.ID, "10.0.0.9:5000", report, at(30))
	require.NoError(t, err)
	require.True(t, ap.Instance)
	before := snapshot(t, f.ctx, f.d.Pool())

	for name, tc := range map[string]struct {
		addr string
		st   model.SledVmmState
	}{
		"duplicate":                      {"10.0.0.9:5000", report},
		"duplicate with another address": {"10.0.0.10:1", report},
		"stale": {"", model.SledVmmState{Vmm: vmmRT(model.VmmMigrating, 2),
			MigrationIn: migObs(mig, model.MigrationInProgress, 2)}},
		"stale claiming failure": {"", model.SledVmmState{
			Vmm:         vmmRT(model.VmmFailed(model.FailureReason{Kind: model.FailureVMMFailed}), 3),
			MigrationIn: migObs(mig, model.MigrationFailed, 3)}},
	} {
		ap, err := f.d.ApplySledVmmState(f.ctx, tgt.ID, tc.addr, tc.st, at(99))
		require.NoError(t, err, name)
		require.Equal(t, model.WriteStale, ap.Vmm, name)
		require.Zero(t, ap.Migrations, name)
		require.False(t, ap.Instance, name)
		require.Equal(t, running(3), ap.Stored.Runtime, name)
		require.Equal(t, before, snapshot(t, f.ctx, f.d.Pool()), name)
	}

	ap, err = f.d.ApplySledVmmState(f.ctx, uuid.New(), "x:1", report, at(99))
	require.NoError(t, err, "an unknown VMM is no error")
	require.Equal(t, model.WriteMissing, ap.Vmm)
	require.Equal(t, before, snapshot(t, f.ctx, f.d.Pool()))
}

func TestApplyRefusesBadReportsNamingTheField(t *testing.T) {
	f := newFixture(t)
	v := f.start(t, f.inst, f.sled)
	before := snapshot(t, f.ctx, f.d.Pool())
	for name, tc := range map[string]struct {
		st    model.SledVmmState
		field string
	}{
		"zero state": {model.SledVmmState{Vmm: model.VmmRuntime{Gen: 9}}, "vmm.state"},
		"gen 0":      {sledState(vmmRT(model.VmmRunning, 0)), "vmm.gen"},
		"kind":       {sledState(vmmRT(model.VmmFailed(model.FailureReason{Kind: "meteor"}), 9)), "vmm.state.failure.kind"},
		"migration":  {model.SledVmmState{Vmm: running(9), MigrationOut: migObs(uuid.New(), "halfway", 2)}, "migration_out.state"},
	} {
		_, err := f.d.ApplySledVmmState(f.ctx, v.ID, "", tc.st, at(9))
		require.ErrorContains(t, err, tc.field, name)
	}
	require.Equal(t, before, snapshot(t, f.ctx, f.d.Pool()))
}
