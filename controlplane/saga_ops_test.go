package controlplane_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
)

// An instance created, started, rebooted, stopped and deleted through the
// Operations, over real sled agents and VMM server processes: each saga is
// done with every step done, each state shows in the view, and nothing
// leaks in between.
func TestInstanceLifecycleThroughSagas(t *testing.T) {
	f := newSagaFleet(t, 1)
	ctx := context.Background()
	s := f.sleds[0]
	in := f.create("life")
	require.Equal(t, model.Resources{CPUs: 1, MemoryMiB: 64}, in.Resources, "resources come from the spec's board")
	require.Equal(t, model.VisibleStopped, f.get(in.ID).State)

	v := f.run(in.ID)
	require.Equal(t, model.VisibleRunning, v.State)
	require.NotNil(t, v.ActiveVmm)
	require.Equal(t, s.id, v.ActiveVmm.SledID)
	st, err := s.agent.State(v.ActiveVmm.ID)
	require.NoError(t, err)
	require.Equal(t, "running", string(st.State))
	reserved, err := f.store.Reserved(ctx, s.id)
	require.NoError(t, err)
	require.Equal(t, in.Resources, reserved)
	f.requireNoLeaks()

	// Reboot: running again at a later generation, through rebooting.
	before := v.ActiveVmm.Runtime.Gen
	sv, err := f.ops().RebootInstance(ctx, "life")
	require.NoError(t, err)
	require.Equal(t, controlplane.KindInstanceReboot, sv.Kind)
	got := f.waitSaga(sv.ID)
	require.Equal(t, controlplane.SagaDone, got.State, got.Error)
	for _, step := range got.Steps {
		require.Equal(t, controlplane.StepDone, step.State, step.Name)
	}
	after := f.get(in.ID)
	require.Equal(t, model.VisibleRunning, after.State)
	require.Greater(t, after.ActiveVmm.Runtime.Gen, before+1, "a reboot passes through rebooting")
	require.Equal(t, v.ActiveVmm.ID, after.ActiveVmm.ID, "a reboot keeps the VMM")

	// Stop: the VMM ends (destroyed), is retired, and releases its room.
	f.halt(in.ID)
	require.Equal(t, model.VisibleStopped, f.get(in.ID).State)
	f.requireNoLeaks()
	require.Empty(t, s.agent.List())
	reserved, err = f.store.Reserved(ctx, s.id)
	require.NoError(t, err)
	require.Equal(t, model.Resources{}, reserved)

	// Started again, it gets a new VMM; stopped, deleted, its name is free.
	v2 := f.run(in.ID)
	require.NotEqual(t, v.ActiveVmm.ID, v2.ActiveVmm.ID)
	f.halt(in.ID)
	sv, err = f.ops().DeleteInstance(ctx, "life")
	require.NoError(t, err)
	require.Equal(t, controlplane.SagaDone, f.waitSaga(sv.ID).State)
	_, err = f.ops().GetInstance(ctx, in.ID.String())
	require.ErrorIs(t, err, controlplane.ErrNotFound)
	list, err := f.ops().ListInstances(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
	again := f.create("life")
	require.NotEqual(t, in.ID, again.ID)
	f.requireNoLeaks()
}

// Create with Start answers the start saga, which ends with the instance
// running; the saga's view names its steps in order.
func TestCreateAndStart(t *testing.T) {
	f := newSagaFleet(t, 2)
	v, sv, err := f.ops().CreateInstance(context.Background(), controlplane.InstanceCreate{Name: "quick", Description: "a ticker",
		SpecVersion: "vmm-server/v1", Spec: []byte(tickerSpec), Start: true})
	require.NoError(t, err)
	require.NotNil(t, sv)
	require.Equal(t, v.Instance.ID, sv.InstanceID)
	got := f.waitSaga(sv.ID)
	require.Equal(t, controlplane.SagaDone, got.State, got.Error)
	var names []string
	for _, s := range got.Steps {
		names = append(names, s.Name)
	}
	require.Equal(t, []string{"lock", "reserve", "point", "register", "run", "wait_running", "unlock"}, names)
	require.Equal(t, model.VisibleRunning, f.get(v.Instance.ID).State)
	sleds, err := f.ops().ListSleds(context.Background())
	require.NoError(t, err)
	require.Len(t, sleds, 2)
	total := 0
	for _, s := range sleds {
		total += s.Vmms
	}
	require.Equal(t, 1, total)
	f.requireNoLeaks()
}

// Bad requests: a clear domain error naming the field, and nothing
// stored.
func TestBadRequests(t *testing.T) {
	f := newSagaFleet(t, 2)
	ctx := context.Background()
	f.create("taken")
	create := func(name, version, spec string) error {
		_, _, err := f.ops().CreateInstance(ctx, controlplane.InstanceCreate{Name: name, SpecVersion: version, Spec: []byte(spec)})
		return err
	}
	require.ErrorIs(t, create("taken", "vmm-server/v1", tickerSpec), controlplane.ErrNameInUse)
	for _, c := range []struct{ name, version, spec, field string }{
		{"", "vmm-server/v1", tickerSpec, "name"},
		{"-dash", "vmm-server/v1", tickerSpec, "name"},
		{"Upper", "vmm-server/v1", tickerSpec, "name"},
		{"under_score", "vmm-server/v1", tickerSpec, "name"},
		{"dash-", "vmm-server/v1", tickerSpec, "name"},
		{"abcdefab-cdef-4abc-8def-abcdefabcdef", "vmm-server/v1", tickerSpec, "name"},
		{"ok", "vmm-server/v9", tickerSpec, "spec_version"},
		{"ok", "vmm-server/v1", `{"board":{"cpus":0,"memory_mb":64,"chipset":"i440fx"}}`, "spec"},
		{"ok", "vmm-server/v1", `not json`, "spec"},
	} {
		err := create(c.name, c.version, c.spec)
		require.ErrorIs(t, err, controlplane.ErrInvalidSpec, "%+v", c)
		require.Contains(t, err.Error(), c.field+":", "%+v", c)
	}
	list, err := f.ops().ListInstances(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)

	// Operations that the instance's state does not allow.
	in := f.create("stopped")
	_, err = f.ops().StopInstance(ctx, "stopped")
	require.ErrorIs(t, err, controlplane.ErrInvalidState)
	_, err = f.ops().MigrateInstance(ctx, "stopped", uuid.NullUUID{})
	require.ErrorIs(t, err, controlplane.ErrInvalidState)
	_, err = f.ops().OpenSerial(ctx, "stopped", nil)
	require.ErrorIs(t, err, controlplane.ErrInvalidState)
	v := f.run(in.ID)
	_, err = f.ops().StartInstance(ctx, "stopped")
	require.ErrorIs(t, err, controlplane.ErrInvalidState)
	_, err = f.ops().DeleteInstance(ctx, "stopped")
	require.ErrorIs(t, err, controlplane.ErrInvalidState, "a running instance was deleted")
	_, err = f.ops().MigrateInstance(ctx, "stopped", uuid.NullUUID{UUID: v.ActiveVmm.SledID, Valid: true})
	require.ErrorIs(t, err, controlplane.ErrSameSled)
	_, err = f.ops().MigrateInstance(ctx, "stopped", uuid.NullUUID{UUID: uuid.New(), Valid: true})
	require.ErrorIs(t, err, controlplane.ErrNotFound)
	_, err = f.ops().GetInstance(ctx, "nobody")
	require.ErrorIs(t, err, controlplane.ErrNotFound)
	require.Equal(t, model.VisibleRunning, f.get(in.ID).State)
	f.requireNoLeaks()
}

// Two conflicting requests at once: one saga takes the instance's updater
// lock, the others get ErrInstanceBusy and start nothing.
func TestConflictingRequestsOneWins(t *testing.T) {
	f := newSagaFleet(t, 1)
	ctx := context.Background()
	// The saga that wins waits after its lock step until every request
	// has been answered.
	release := make(chan struct{})
	f.restartWith(func(kind, step string, phase saga.Phase) error {
		if step != "lock" && phase == saga.BeforeDo {
			<-release
		}
		return nil
	})
	in := f.create("contested")
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		won  []controlplane.SagaView
		busy int
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				sv  controlplane.SagaView
				err error
			)
			if i%2 == 0 {
				sv, err = f.ops().StartInstance(ctx, in.ID.String())
			} else {
				sv, err = f.ops().DeleteInstance(ctx, in.ID.String())
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won = append(won, sv)
			case errors.Is(err, controlplane.ErrInstanceBusy):
				busy++
			default:
				t.Errorf("request %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(release)
	require.Len(t, won, 1, "more than one saga took the instance")
	require.Equal(t, n-1, busy)
	require.Equal(t, controlplane.SagaDone, f.waitSaga(won[0].ID).State)
	f.requireNoLeaks()
}

// A spec that the sled's VMM server refuses (no KVM here: every real
// build fails) unwinds the start saga with ErrInvalidSpec's words and the
// server's reason; nothing is left on the sled or in the database.
func TestStartRefusedBySledUnwinds(t *testing.T) {
	f := newSagaFleet(t, 0)
	f.addSledDialing(vmmclient.New(nil))
	in := f.create("refused")
	sv, err := f.ops().StartInstance(context.Background(), in.ID.String())
	require.NoError(t, err)
	got := f.waitSaga(sv.ID)
	require.Equal(t, controlplane.SagaUnwound, got.State)
	require.Contains(t, got.Error, "step register")
	require.Contains(t, got.Error, controlplane.ErrInvalidSpec.Error())
	require.Contains(t, got.Error, "vmm_refused")
	require.Equal(t, controlplane.SagaCodeInvalidSpec, got.ErrorCode)
	require.Equal(t, model.VisibleStopped, f.get(in.ID).State)
	f.requireNoLeaks()
}

// Migrate to any other sled, then back to a given one: the instance runs
// on the target, the source is destroyed and retired, its room released.
func TestMigrateThroughSaga(t *testing.T) {
	f := newSagaFleet(t, 2)
	ctx := context.Background()
	in := f.create("mover")
	v := f.run(in.ID)
	from := v.ActiveVmm
	sv, err := f.ops().MigrateInstance(ctx, "mover", uuid.NullUUID{})
	require.NoError(t, err)
	got := f.waitSaga(sv.ID)
	require.Equal(t, controlplane.SagaDone, got.State, got.Error)
	moved := f.get(in.ID)
	require.Equal(t, model.VisibleRunning, moved.State)
	require.NotEqual(t, from.ID, moved.ActiveVmm.ID)
	require.NotEqual(t, from.SledID, moved.ActiveVmm.SledID)
	f.requireNoLeaks()
	old := f.waitVmm(from.ID, "retired", func(v model.Vmm) bool { return v.TimeRetired != nil })
	require.Equal(t, "destroyed", old.Runtime.State.Name())

	sv, err = f.ops().MigrateInstance(ctx, "mover", uuid.NullUUID{UUID: from.SledID, Valid: true})
	require.NoError(t, err)
	require.Equal(t, controlplane.SagaDone, f.waitSaga(sv.ID).State)
	back := f.get(in.ID)
	require.Equal(t, from.SledID, back.ActiveVmm.SledID)
	f.requireNoLeaks()
}
