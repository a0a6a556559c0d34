package model_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/model"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func TestParseVmmStateRoundTrips(t *testing.T) {
	reason := model.FailureReason{Kind: model.FailureProcessExited, Message: "killed by signal 9"}
	for _, name := range model.VmmStateNames {
		var r *model.FailureReason
		if name == "failed" {
			r = &reason
		}
		s, err := model.ParseVmmState(name, r)
		require.NoError(t, err, name)
		require.Equal(t, name, s.Name())
		got, failed := s.FailureReason()
		require.Equal(t, name == "failed", failed)
		require.Equal(t, name == "failed", s.IsFailed())
		if failed {
			require.Equal(t, reason, got)
		}
	}
	_, err := model.ParseVmmState("failed", nil)
	require.ErrorContains(t, err, "failure reason is required")
	_, err = model.ParseVmmState("failed", &model.FailureReason{Message: "no kind"})
	require.ErrorContains(t, err, "no kind")
	_, err = model.ParseVmmState("running", &reason)
	require.ErrorContains(t, err, "only a failed VMM")
	_, err = model.ParseVmmState("paused", nil)
	require.ErrorContains(t, err, `"paused"`)
	require.False(t, model.VmmState{}.Valid())
}

func TestVmmStatePredicates(t *testing.T) {
	failed := model.VmmFailed(model.FailureReason{Kind: model.FailureVMMGone})
	cases := []struct {
		s                           model.VmmState
		terminal, destroyable, onSl bool
	}{
		{model.VmmCreating, false, false, false},
		{model.VmmStarting, false, false, true},
		{model.VmmRunning, false, false, true},
		{model.VmmStopping, false, false, true},
		{model.VmmStopped, false, false, true},
		{model.VmmRebooting, false, false, true},
		{model.VmmMigrating, false, false, true},
		{failed, true, true, true},
		{model.VmmDestroyed, true, true, false},
		{model.VmmSagaUnwound, true, true, false},
	}
	require.Len(t, cases, len(model.VmmStateNames), "a state without a row here")
	for _, c := range cases {
		require.Equal(t, c.terminal, c.s.IsTerminal(), c.s.String())
		require.Equal(t, c.destroyable, c.s.IsDestroyable(), c.s.String())
		require.Equal(t, c.onSl, c.s.ExistsOnSled(), c.s.String())
	}
	require.NotEqual(t, failed, model.VmmFailed(model.FailureReason{Kind: model.FailureSledLost}),
		"failed states with other reasons are other states")
}

func TestTransitionBumpsTheGenerationOnlyOnAChange(t *testing.T) {
	r := model.VmmRuntime{State: model.VmmStarting, Gen: 4, TimeUpdated: t0}
	same, changed := r.Transition(model.VmmStarting, t0.Add(time.Second))
	require.False(t, changed)
	require.Equal(t, r, same)

	next, changed := r.Transition(model.VmmRunning, t0.Add(time.Second))
	require.True(t, changed)
	require.Equal(t, model.VmmRuntime{State: model.VmmRunning, Gen: 5, TimeUpdated: t0.Add(time.Second)}, next)

	dead, changed := next.Transition(model.VmmFailed(model.FailureReason{Kind: model.FailureVMMFailed}), t0)
	require.True(t, changed)
	require.Equal(t, model.Generation(6), dead.Gen)
	for _, to := range []model.VmmState{model.VmmRunning, model.VmmDestroyed, model.VmmFailed(model.FailureReason{Kind: model.FailureSledLost})} {
		again, changed := dead.Transition(to, t0)
		require.False(t, changed, "a terminal state is left for %s", to)
		require.Equal(t, dead, again)
	}
}

// pool of ids the random cases draw from, so that they meet.
var (
	vmmIDs = []uuid.UUID{uuid.MustParse("00000000-0000-4000-8000-00000000000a"),
		uuid.MustParse("00000000-0000-4000-8000-00000000000b"), uuid.MustParse("00000000-0000-4000-8000-00000000000c")}
	migIDs = []uuid.UUID{uuid.MustParse("00000000-0000-4000-8000-0000000000f1"),
		uuid.MustParse("00000000-0000-4000-8000-0000000000f2")}
)

func some(id uuid.UUID) uuid.NullUUID { return uuid.NullUUID{UUID: id, Valid: true} }

func randomState(r *rand.Rand) model.VmmState {
	name := model.VmmStateNames[r.IntN(len(model.VmmStateNames))]
	if name == "failed" {
		return model.VmmFailed(model.FailureReason{Kind: model.FailureKinds[r.IntN(len(model.FailureKinds))], Message: "m"})
	}
	s, err := model.ParseVmmState(name, nil)
	if err != nil {
		panic(err)
	}
	return s
}

// randomInstance returns a runtime that keeps the invariants.
func randomInstance(r *rand.Rand) model.InstanceRuntime {
	in := model.InstanceRuntime{State: model.InstanceStates[r.IntN(len(model.InstanceStates))], Gen: model.Generation(1 + r.IntN(20)), TimeUpdated: t0}
	switch in.State {
	case model.InstanceVmm:
		a := r.IntN(len(vmmIDs))
		in.ActiveVmm = some(vmmIDs[a])
		if r.IntN(2) == 0 {
			in.TargetVmm = some(vmmIDs[(a+1+r.IntN(len(vmmIDs)-1))%len(vmmIDs)])
			in.Migration = some(migIDs[r.IntN(len(migIDs))])
		}
	case model.InstanceFailed:
		in.Failure = &model.FailureReason{Kind: model.FailureVMMFailed, Message: "earlier"}
	}
	return in
}

func randomMigration(r *rand.Rand) *model.MigrationObservation {
	if r.IntN(3) == 0 {
		return nil
	}
	return &model.MigrationObservation{ID: migIDs[r.IntN(len(migIDs))], MigrationRuntime: model.MigrationRuntime{
		State: model.MigrationStates[r.IntN(len(model.MigrationStates))], Gen: model.Generation(1 + r.IntN(5)), TimeUpdated: t0}}
}

func randomObservation(r *rand.Rand) model.SledVmmState {
	return model.SledVmmState{Vmm: model.VmmRuntime{State: randomState(r), Gen: model.Generation(1 + r.IntN(20)), TimeUpdated: t0},
		MigrationIn: randomMigration(r), MigrationOut: randomMigration(r)}
}

// TestApplyVmmLaws checks, over many random instances and reports, the
// rules every outcome of ApplyVmm keeps.
func TestApplyVmmLaws(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	now := t0.Add(time.Minute)
	seen := map[string]int{}
	for i := 0; i < 20000; i++ {
		in := randomInstance(r)
		require.NoError(t, in.Check())
		id := vmmIDs[r.IntN(len(vmmIDs))]
		obs := randomObservation(r)
		out, changed := model.ApplyVmm(in, id, obs, now)

		// The invariants hold after any report.
		require.NoError(t, out.Check(), "in %+v obs %+v", in, obs)
		// The generation moves iff a protected field does, by exactly one.
		if !changed {
			require.Equal(t, in, out)
			seen["unchanged"]++
			continue
		}
		require.Equal(t, in.Gen+1, out.Gen)
		require.Equal(t, now, out.TimeUpdated)
		require.False(t, out.State == in.State && out.ActiveVmm == in.ActiveVmm && out.TargetVmm == in.TargetVmm &&
			out.Migration == in.Migration && out.Failure == in.Failure, "the generation moved without a change")
		// Reports of a VMM the instance does not point at change nothing.
		require.True(t, in.ActiveVmm == some(id) || in.TargetVmm == some(id), "a stranger's report changed the instance")
		// Applying the same report again changes nothing more.
		again, changed2 := model.ApplyVmm(out, id, obs, now.Add(time.Second))
		if changed2 {
			// The one exception: after a hand-off the reporting target is
			// active, and its own terminal state then ends it.
			require.Equal(t, in.TargetVmm, some(id))
			require.True(t, obs.Vmm.State.IsTerminal())
			require.Equal(t, model.Generation(out.Gen+1), again.Gen)
		}
		switch {
		case out.ActiveVmm.Valid && in.TargetVmm.Valid && out.ActiveVmm == in.TargetVmm:
			seen["hand-off"]++
			require.False(t, out.Migration.Valid)
		case !out.ActiveVmm.Valid && in.ActiveVmm.Valid:
			seen["ended"]++
			require.Equal(t, some(id), in.ActiveVmm)
			require.True(t, obs.Vmm.State.IsTerminal())
			reason, failed := obs.Vmm.State.FailureReason()
			if failed {
				require.Equal(t, model.InstanceFailed, out.State)
				require.Equal(t, reason, *out.Failure)
			} else {
				require.Equal(t, model.InstanceNoVmm, out.State)
			}
		default:
			seen["migration dropped"]++
			require.Equal(t, in.ActiveVmm, out.ActiveVmm)
			require.False(t, out.TargetVmm.Valid)
			require.False(t, out.Migration.Valid)
		}
	}
	t.Logf("cases: %v", seen)
	for _, k := range []string{"unchanged", "hand-off", "ended", "migration dropped"} {
		require.Greater(t, seen[k], 50, "too few random cases of %q to trust the laws", k)
	}
}

func TestApplyVmmHandOffFromEitherSide(t *testing.T) {
	src, dst, mig := vmmIDs[0], vmmIDs[1], migIDs[0]
	in := model.InstanceRuntime{State: model.InstanceVmm, Gen: 7, ActiveVmm: some(src), TargetVmm: some(dst), Migration: some(mig)}
	done := &model.MigrationObservation{ID: mig, MigrationRuntime: model.MigrationRuntime{State: model.MigrationCompleted, Gen: 3}}
	want := model.InstanceRuntime{State: model.InstanceVmm, Gen: 8, TimeUpdated: t0, ActiveVmm: some(dst)}

	out, changed := model.ApplyVmm(in, src, model.SledVmmState{Vmm: model.VmmRuntime{State: model.VmmMigrating, Gen: 5}, MigrationOut: done}, t0)
	require.True(t, changed)
	require.Equal(t, want, out)
	out, changed = model.ApplyVmm(in, dst, model.SledVmmState{Vmm: model.VmmRuntime{State: model.VmmRunning, Gen: 5}, MigrationIn: done}, t0)
	require.True(t, changed)
	require.Equal(t, want, out)

	// The completion of another migration, or on the wrong side, is not ours.
	other := &model.MigrationObservation{ID: migIDs[1], MigrationRuntime: done.MigrationRuntime}
	_, changed = model.ApplyVmm(in, src, model.SledVmmState{Vmm: model.VmmRuntime{State: model.VmmRunning, Gen: 5}, MigrationOut: other}, t0)
	require.False(t, changed)
	_, changed = model.ApplyVmm(in, src, model.SledVmmState{Vmm: model.VmmRuntime{State: model.VmmRunning, Gen: 5}, MigrationIn: done}, t0)
	require.False(t, changed)

	// A failed migration drops the target; the source stays active.
	failed := &model.MigrationObservation{ID: mig, MigrationRuntime: model.MigrationRuntime{State: model.MigrationFailed, Gen: 3}}
	out, changed = model.ApplyVmm(in, dst, model.SledVmmState{Vmm: model.VmmRuntime{State: model.VmmRunning, Gen: 5}, MigrationIn: failed}, t0)
	require.True(t, changed)
	require.Equal(t, model.InstanceRuntime{State: model.InstanceVmm, Gen: 8, TimeUpdated: t0, ActiveVmm: some(src)}, out)
}

func TestDerive(t *testing.T) {
	active := model.InstanceRuntime{State: model.InstanceVmm, Gen: 2, ActiveVmm: some(vmmIDs[0])}
	migrating := active
	migrating.TargetVmm, migrating.Migration = some(vmmIDs[1]), some(migIDs[0])
	st := func(s model.VmmState) *model.VmmState { return &s }
	cases := []struct {
		r    model.InstanceRuntime
		vmm  *model.VmmState
		want model.VisibleState
	}{
		{model.InstanceRuntime{State: model.InstanceCreating, Gen: 1}, nil, model.VisibleCreating},
		{model.InstanceRuntime{State: model.InstanceNoVmm, Gen: 1}, nil, model.VisibleStopped},
		{model.InstanceRuntime{State: model.InstanceFailed, Gen: 1}, nil, model.VisibleFailed},
		{model.InstanceRuntime{State: model.InstanceDestroyed, Gen: 1}, nil, model.VisibleDestroyed},
		{active, st(model.VmmCreating), model.VisibleStarting},
		{active, st(model.VmmStarting), model.VisibleStarting},
		{active, st(model.VmmRunning), model.VisibleRunning},
		{migrating, st(model.VmmRunning), model.VisibleMigrating},
		{active, st(model.VmmMigrating), model.VisibleMigrating},
		{active, st(model.VmmStopping), model.VisibleStopping},
		{active, st(model.VmmStopped), model.VisibleStopping},
		{active, st(model.VmmRebooting), model.VisibleRebooting},
		{active, st(model.VmmFailed(model.FailureReason{Kind: model.FailureVMMFailed})), model.VisibleFailed},
		{active, st(model.VmmDestroyed), model.VisibleStopped},
		{active, nil, model.VisibleFailed},
	}
	for _, c := range cases {
		require.Equal(t, c.want, model.Derive(c.r, c.vmm), "%s with %v", c.r.State, c.vmm)
	}
}

func TestInstanceCheck(t *testing.T) {
	ok := model.InstanceRuntime{State: model.InstanceVmm, Gen: 1, ActiveVmm: some(vmmIDs[0])}
	require.NoError(t, ok.Check())
	bad := []model.InstanceRuntime{
		{State: model.InstanceVmm, Gen: 0, ActiveVmm: some(vmmIDs[0])},
		{State: model.InstanceVmm, Gen: 1},
		{State: model.InstanceNoVmm, Gen: 1, ActiveVmm: some(vmmIDs[0])},
		{State: model.InstanceVmm, Gen: 1, ActiveVmm: some(vmmIDs[0]), TargetVmm: some(vmmIDs[1])},
		{State: model.InstanceVmm, Gen: 1, ActiveVmm: some(vmmIDs[0]), TargetVmm: some(vmmIDs[0]), Migration: some(migIDs[0])},
		{State: model.InstanceFailed, Gen: 1},
		{State: model.InstanceNoVmm, Gen: 1, Failure: &model.FailureReason{Kind: model.FailureSledLost}},
	}
	for _, b := range bad {
		require.Error(t, b.Check(), "%+v", b)
	}
}
