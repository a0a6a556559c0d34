package db

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

func TestRegisterSledInsertsThenUpdatesAndReactivates(t *testing.T) {
	d, ctx := openT(t)
	s := model.Sled{ID: uuid.New(), Address: "10.0.0.1:12345", APIVersions: []string{"v1"}, Capacity: capacity16,
		TimeCreated: at(0), LastContact: at(0)}
	require.NoError(t, d.RegisterSled(ctx, s))
	got, err := d.Sled(ctx, s.ID)
	require.NoError(t, err)
	want := s
	want.State = model.SledActive
	require.Equal(t, want, got)

	// Lost, then registered again with new facts: active, its creation kept.
	_, lost, err := d.MarkSledLost(ctx, s.ID, at(10), at(10))
	require.NoError(t, err)
	require.True(t, lost)
	again := model.Sled{ID: s.ID, Address: "10.0.0.2:999", APIVersions: []string{"v1", "v2"},
		Capacity: model.Resources{CPUs: 8, MemoryMiB: 1024}, TimeCreated: at(50), LastContact: at(50)}
	require.NoError(t, d.RegisterSled(ctx, again))
	got, err = d.Sled(ctx, s.ID)
	require.NoError(t, err)
	want = again
	want.State, want.TimeCreated = model.SledActive, at(0)
	require.Equal(t, want, got)
}

func TestRegisterSledRefusesBadInputNamingTheField(t *testing.T) {
	d, ctx := openT(t)
	for name, tc := range map[string]struct {
		s     model.Sled
		field string
	}{
		"nil id":     {model.Sled{Address: "a:1", Capacity: capacity16}, "id"},
		"no address": {model.Sled{ID: uuid.New(), Capacity: capacity16}, "address"},
		"no cpus":    {model.Sled{ID: uuid.New(), Address: "a:1", Capacity: model.Resources{MemoryMiB: 1}}, "capacity.cpus"},
		"no memory":  {model.Sled{ID: uuid.New(), Address: "a:1", Capacity: model.Resources{CPUs: 1}}, "capacity.memory_mib"},
	} {
		err := d.RegisterSled(ctx, tc.s)
		require.ErrorContains(t, err, tc.field, name)
	}
	sleds, err := d.Sleds(ctx)
	require.NoError(t, err)
	require.Empty(t, sleds)
}

func TestTouchSledOnlyMovesForward(t *testing.T) {
	f := newFixture(t)
	require.NoError(t, f.d.TouchSled(f.ctx, f.sled.ID, at(30)))
	require.NoError(t, f.d.TouchSled(f.ctx, f.sled.ID, at(20)), "an older contact is no error")
	got, err := f.d.Sled(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, at(30), got.LastContact)

	err = f.d.TouchSled(f.ctx, uuid.New(), at(40))
	require.ErrorIs(t, err, controlplane.ErrNotFound)
}

func TestSledsAreListedByID(t *testing.T) {
	f := newFixture(t)
	for range 4 {
		f.addSled(t, capacity16)
	}
	sleds, err := f.d.Sleds(f.ctx)
	require.NoError(t, err)
	require.Len(t, sleds, 5)
	for i := 1; i < len(sleds); i++ {
		require.Less(t, sleds[i-1].ID.String(), sleds[i].ID.String())
	}
	_, err = f.d.Sled(f.ctx, uuid.New())
	require.ErrorIs(t, err, controlplane.ErrNotFound)
}

func TestMarkSledLostFailsItsLiveVmms(t *testing.T) {
	f := newFixture(t)
	other := f.addSled(t, capacity16)
	// On the sled: a running active VMM, a VMM still being created (not
	// on the sled yet), a destroyed one; elsewhere: a running one.
	active := f.start(t, f.inst, f.sled)
	in2 := f.addInstance(t, "vm-2")
	creating := f.addVmm(t, in2, f.sled)
	in3 := f.addInstance(t, "vm-3")
	gone := f.addVmm(t, in3, f.sled)
	res, err := f.d.UpdateVmmRuntime(f.ctx, gone.ID, vmmRT(model.VmmDestroyed, 2))
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, res)
	in4 := f.addInstance(t, "vm-4")
	elsewhere := f.start(t, in4, other)

	// Heard from since: nothing.
	ids, lost, err := f.d.MarkSledLost(f.ctx, f.sled.ID, at(0), at(100))
	require.NoError(t, err)
	require.False(t, lost)
	require.Empty(t, ids)

	ids, lost, err = f.d.MarkSledLost(f.ctx, f.sled.ID, at(60), at(100))
	require.NoError(t, err)
	require.True(t, lost)
	require.Equal(t, []uuid.UUID{active.ID}, ids)

	v, err := f.d.Vmm(f.ctx, active.ID)
	require.NoError(t, err)
	reason, failed := v.Runtime.State.FailureReason()
	require.True(t, failed)
	require.Equal(t, model.FailureSledLost, reason.Kind)
	require.Equal(t, model.Generation(4), v.Runtime.Gen, "the next generation")
	require.Equal(t, at(100), v.Runtime.TimeUpdated)

	r := f.instanceRuntime(t, f.inst.ID)
	require.Equal(t, model.InstanceFailed, r.State)
	require.Equal(t, model.FailureSledLost, r.Failure.Kind)
	require.False(t, r.ActiveVmm.Valid)

	c, err := f.d.Vmm(f.ctx, creating.ID)
	require.NoError(t, err)
	require.Equal(t, model.VmmCreating, c.Runtime.State, "a VMM not yet on the sled is left to its saga")
	e, err := f.d.Vmm(f.ctx, elsewhere.ID)
	require.NoError(t, err)
	require.Equal(t, model.VmmRunning, e.Runtime.State)

	// Only the creating VMM's reservation stays on the lost sled.
	reserved, err := f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, in2.Resources, reserved)
	s, err := f.d.Sled(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, model.SledLost, s.State)

	// Lost already: nothing more.
	before := snapshot(t, f.ctx, f.d.Pool())
	ids, lost, err = f.d.MarkSledLost(f.ctx, f.sled.ID, at(200), at(200))
	require.NoError(t, err)
	require.False(t, lost)
	require.Empty(t, ids)
	require.Equal(t, before, snapshot(t, f.ctx, f.d.Pool()))

	_, _, err = f.d.MarkSledLost(f.ctx, uuid.New(), at(200), at(200))
	require.ErrorIs(t, err, controlplane.ErrNotFound)
}

// A lost sled heard again is active, its last contact moved forward only;
// the VMMs failed when it was lost stay failed; an active sled is left as
// it is.
func TestReviveSled(t *testing.T) {
	f := newFixture(t)
	v := f.start(t, f.inst, f.sled)
	before, err := f.d.Sled(f.ctx, f.sled.ID)
	require.NoError(t, err)
	revived, err := f.d.ReviveSled(f.ctx, f.sled.ID, at(50))
	require.NoError(t, err)
	require.False(t, revived, "an active sled is not revived")
	got, err := f.d.Sled(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, before, got)

	// loseAndRevive marks the sled lost at lostAt, revives it at heard and
	// returns it as stored.
	loseAndRevive := func(lostAt, heard time.Time) model.Sled {
		t.Helper()
		_, lost, err := f.d.MarkSledLost(f.ctx, f.sled.ID, lostAt, lostAt)
		require.NoError(t, err)
		require.True(t, lost)
		revived, err := f.d.ReviveSled(f.ctx, f.sled.ID, heard)
		require.NoError(t, err)
		require.True(t, revived)
		got, err := f.d.Sled(f.ctx, f.sled.ID)
		require.NoError(t, err)
		require.Equal(t, model.SledActive, got.State)
		return got
	}
	require.Equal(t, at(200), loseAndRevive(at(100), at(200)).LastContact)
	failed, err := f.d.Vmm(f.ctx, v.ID)
	require.NoError(t, err)
	reason, isFailed := failed.Runtime.State.FailureReason()
	require.True(t, isFailed, "a VMM failed with its sled stays failed")
	require.Equal(t, model.FailureSledLost, reason.Kind)

	// Lost again, then revived with an older contact: active, the contact
	// where it was.
	require.Equal(t, at(200), loseAndRevive(at(300), at(10)).LastContact)

	_, err = f.d.ReviveSled(f.ctx, uuid.New(), at(400))
	require.ErrorIs(t, err, controlplane.ErrNotFound)
}

// A migration whose source and target are both on the lost sled: both
// fail, and the instance fails with the active VMM's reason.
func TestMarkSledLostWithBothSidesOfAMigration(t *testing.T) {
	f := newFixture(t)
	src := f.start(t, f.inst, f.sled)
	tgt := f.addVmm(t, f.inst, f.sled)
	mig := uuid.New()
	require.NoError(t, f.d.CreateMigration(f.ctx, model.Migration{ID: mig, InstanceID: f.inst.ID, SourceVmm: src.ID,
		TargetVmm: tgt.ID, TimeCreated: at(5)}))
	_, err := f.d.ApplySledVmmState(f.ctx, tgt.ID, "", model.SledVmmState{Vmm: vmmRT(model.VmmMigrating, 2)}, at(6))
	require.NoError(t, err)

	ids, lost, err := f.d.MarkSledLost(f.ctx, f.sled.ID, at(60), at(100))
	require.NoError(t, err)
	require.True(t, lost)
	require.ElementsMatch(t, []uuid.UUID{src.ID, tgt.ID}, ids)
	r := f.instanceRuntime(t, f.inst.ID)
	require.Equal(t, model.InstanceFailed, r.State)
	require.False(t, r.TargetVmm.Valid)
	require.False(t, r.Migration.Valid)
	reserved, err := f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Zero(t, reserved)
}
