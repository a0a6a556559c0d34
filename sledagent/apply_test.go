package sledagent

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// bareAgent is an agent with one registered VMM and no processes, for the
// rules of apply.
func bareAgent(t *testing.T, st SledVmmState) (*Agent, *vmm) {
	a := &Agent{opts: Options{Root: t.TempDir()}, log: quiet(), m: newMetrics(), vmms: map[uuid.UUID]*vmm{}}
	a.bell = newDoorbell(nil, DefaultBackoff, a.log, a.m)
	v := &vmm{rec: vmmRecord{ID: uuid.New()}, state: st}
	a.vmms[v.rec.ID] = v
	return a, v
}

func TestApplyBumpsOncePerObservedChange(t *testing.T) {
	a, v := bareAgent(t, SledVmmState{State: StateRunning, Gen: 3})
	// A quick reboot: the server's history shows both steps.
	a.apply(v, Observation{Gen: 5, State: StateRunning, History: []Transition{{State: StateRebooting}, {State: StateRunning}}})
	require.Equal(t, StateRunning, v.state.State)
	require.EqualValues(t, 5, v.state.Gen, "rebooting and running: two changes")
	require.EqualValues(t, 5, v.rec.ServerGen)
	require.False(t, v.state.TimeUpdated.IsZero())
	// Nothing new: no bump.
	a.apply(v, Observation{Gen: 6, State: StateRunning})
	require.EqualValues(t, 5, v.state.Gen)
	// Two steps reported without history: the current state only.
	a.apply(v, Observation{Gen: 8, State: StateStopping})
	require.EqualValues(t, 6, v.state.Gen)
	require.Nil(t, v.state.Failure)
}

func TestApplyFailureIsTerminal(t *testing.T) {
	a, v := bareAgent(t, SledVmmState{State: StateRunning, Gen: 3})
	a.apply(v, Observation{Gen: 4, State: StateFailed, FailureReason: "triple fault"})
	require.Equal(t, StateFailed, v.state.State)
	require.Equal(t, &FailureReason{Kind: FailureVMMFailed, Message: "triple fault"}, v.state.Failure)
	require.EqualValues(t, 4, v.state.Gen)
	a.apply(v, Observation{Gen: 5, State: StateRunning})
	require.Equal(t, StateFailed, v.state.State, "terminal states stay")
	require.EqualValues(t, 4, v.state.Gen)
}

func TestApplyMigrations(t *testing.T) {
	mid := uuid.New()
	a, v := bareAgent(t, SledVmmState{State: StateCreating, Gen: 1,
		MigrationIn: &MigrationRuntime{ID: mid, State: MigrationPending, Gen: 1}})
	a.apply(v, Observation{Gen: 2, State: StateMigrating, MigrationIn: &MigrationProgress{ID: mid, Phase: "ram_precopy"}})
	require.EqualValues(t, 2, v.state.Gen, "state and migration change together: one bump")
	require.Equal(t, MigrationInProgress, v.state.MigrationIn.State)
	require.EqualValues(t, 2, v.state.MigrationIn.Gen)
	a.apply(v, Observation{Gen: 3, State: StateMigrating, MigrationIn: &MigrationProgress{ID: mid, Phase: "device_state"}})
	require.EqualValues(t, 2, v.state.Gen, "another phase of the same state is no change")
	a.apply(v, Observation{Gen: 4, State: StateMigrating, MigrationIn: &MigrationProgress{ID: mid, Phase: "completed"}})
	require.EqualValues(t, 3, v.state.Gen, "a migration's change alone bumps")
	require.Equal(t, MigrationCompleted, v.state.MigrationIn.State)
	require.EqualValues(t, 3, v.state.MigrationIn.Gen)
	other := uuid.New()
	a.apply(v, Observation{Gen: 5, State: StateRunning, MigrationOut: &MigrationProgress{ID: other, Phase: "failed"}})
	require.EqualValues(t, 4, v.state.Gen)
	require.Equal(t, MigrationFailed, v.state.MigrationOut.State)
	require.Equal(t, MigrationCompleted, v.state.MigrationIn.State)
}

func TestFailMigration(t *testing.T) {
	now := time.Now()
	require.Nil(t, failMigration(nil))
	done := &MigrationRuntime{State: MigrationCompleted, Gen: 3, TimeUpdated: now}
	require.Same(t, done, failMigration(done))
	got := failMigration(&MigrationRuntime{State: MigrationInProgress, Gen: 2})
	require.Equal(t, MigrationFailed, got.State)
	require.EqualValues(t, 3, got.Gen)
}

// armClient is a VMM server that arms anything.
type armClient struct{ VMMClient }

func (armClient) Arm(ctx context.Context, m MigrationArm) (MigrationArmed, error) {
	return MigrationArmed{MigrationID: m.MigrationID, ExpiresAt: time.Now().Add(time.Minute)}, nil
}

// Arm records a new outbound migration as pending, but never moves one
// the agent already follows backwards (its progress was applied before
// Arm took the lock), nor bumps the generation for it.
func TestArmNeverMovesMigrationBack(t *testing.T) {
	mig := uuid.New()
	for _, st := range []MigrationState{MigrationInProgress, MigrationCompleted, MigrationFailed, MigrationPending} {
		a, v := bareAgent(t, SledVmmState{State: StateRunning, Gen: 7,
			MigrationOut: &MigrationRuntime{ID: mig, State: st, Gen: 2}})
		v.client, v.proc = armClient{}, &Process{done: make(chan struct{})}
		got, _, err := a.Arm(context.Background(), v.rec.ID, MigrationArm{MigrationID: mig})
		require.NoError(t, err)
		require.Equal(t, st, got.MigrationOut.State, "from %s", st)
		require.EqualValues(t, 2, got.MigrationOut.Gen)
		require.EqualValues(t, 7, got.Gen, "no change, no new generation")
	}
	// Another migration's record is replaced by the new one, pending.
	a, v := bareAgent(t, SledVmmState{State: StateRunning, Gen: 7,
		MigrationOut: &MigrationRuntime{ID: mig, State: MigrationFailed, Gen: 3}})
	v.client, v.proc = armClient{}, &Process{done: make(chan struct{})}
	next := uuid.New()
	got, _, err := a.Arm(context.Background(), v.rec.ID, MigrationArm{MigrationID: next})
	require.NoError(t, err)
	require.Equal(t, MigrationRuntime{ID: next, State: MigrationPending, Gen: 4, TimeUpdated: got.MigrationOut.TimeUpdated}, *got.MigrationOut)
	require.EqualValues(t, 8, got.Gen)
}
