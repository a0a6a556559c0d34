package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
	"github.com/wagglevm/waggle/sledagent"
)

// fault is one injected fault: a failure of the step (before its Do, or
// after its Do had its effect), or a crash of the control plane right
// after the step's Do (before its record) or right after its record.
type fault struct {
	name  string
	phase saga.Phase
	crash bool
}

var faults = []fault{
	{"fail_before_do", saga.BeforeDo, false},
	{"fail_after_do", saga.AfterDo, false},
	{"crash_before_record", saga.AfterDo, true},
	{"crash_after_record", saga.AfterSave, true},
}

// once injects the fault at kind's step once.
func (fl fault) once(kind, step string) saga.InjectFunc {
	var o sync.Once
	return func(k, s string, p saga.Phase) error {
		var err error
		if k == kind && s == step && p == fl.phase {
			o.Do(func() {
				err = errors.New("injected failure")
				if fl.crash {
					err = saga.ErrCrash
				}
			})
		}
		return err
	}
}

// The step names of the sagas, as the API shows them.
var (
	startSteps   = []string{"lock", "reserve", "point", "register", "run", "wait_running", "unlock"}
	migrateSteps = []string{"lock", "reserve_target", "create_migration", "arm_source", "register_target", "wait_handoff", "unlock"}
	stopSteps    = []string{"lock", "request_stop", "wait_stopped", "unlock"}
	rebootSteps  = []string{"lock", "request_reboot", "wait_running", "unlock"}
	deleteSteps  = []string{"lock", "destroy", "unlock"}
)

// inject runs one saga of kind (begun by begin) with fault fl at step:
// a failure unwinds it; a crash stops the control plane's executor dead,
// and a new control plane on the same database (and sleds) resumes it,
// to its end. It returns the saga's end.
func (f *sagaFleet) inject(kind, step string, fl fault, begin func() (controlplane.SagaView, error)) controlplane.SagaView {
	t := f.t
	f.restartWith(fl.once(kind, step))
	sv, err := begin()
	require.NoError(t, err, "%s at %s/%s", fl.name, kind, step)
	if fl.crash {
		f.waitCrash()
		f.restartWith(nil)
	}
	got := f.waitSaga(sv.ID)
	names := make([]string, len(got.Steps))
	for i, s := range got.Steps {
		names[i] = s.Name
	}
	want := map[string][]string{controlplane.KindInstanceStart: startSteps, controlplane.KindInstanceMigrate: migrateSteps,
		controlplane.KindInstanceStop: stopSteps, controlplane.KindInstanceReboot: rebootSteps, controlplane.KindInstanceDelete: deleteSteps}[kind]
	require.Equal(t, want, names, "the steps of %s", kind)
	if fl.crash {
		require.Equal(t, controlplane.SagaDone, got.State, "%s at %s/%s: %s", fl.name, kind, step, got.Error)
	} else {
		require.Equal(t, controlplane.SagaUnwound, got.State, "%s at %s/%s", fl.name, kind, step)
		require.Contains(t, got.Error, "step "+step+": injected failure")
		require.Equal(t, controlplane.SagaCodeInternal, got.ErrorCode, "an injected failure is no domain error")
	}
	f.requireNoLeaks()
	return got
}

// Start, with each fault at each step: a failure unwinds to a stopped
// instance, a crash resumes to a running one; nothing leaks either way.
func TestStartFaultAtEveryStep(t *testing.T) {
	f := newSagaFleet(t, 2)
	ctx := context.Background()
	for _, step := range startSteps {
		for _, fl := range faults {
			t.Logf("start: %s at %s", fl.name, step)
			in := f.create(strings.ReplaceAll(fmt.Sprintf("start-%s-%s", step, fl.name), "_", "-"))
			f.inject(controlplane.KindInstanceStart, step, fl, func() (controlplane.SagaView, error) {
				return f.ops().StartInstance(ctx, in.ID.String())
			})
			v := f.get(in.ID)
			if fl.crash {
				require.Equal(t, model.VisibleRunning, v.State)
				f.halt(in.ID)
			} else {
				require.Equal(t, model.VisibleStopped, v.State, "%s at %s", fl.name, step)
			}
		}
	}
	f.restartWith(nil)
	f.requireNoLeaks()
}

// Migrate, with each fault at each step: a failure unwinds and the
// instance runs on (on its source; or on the target when the migration
// had completed before the failure: an undo never takes down the VMM that
// has the VM); a crash resumes to the hand-off. Nothing leaks.
func TestMigrateFaultAtEveryStep(t *testing.T) {
	f := newSagaFleet(t, 2)
	ctx := context.Background()
	for _, step := range migrateSteps {
		for _, fl := range faults {
			t.Logf("migrate: %s at %s", fl.name, step)
			f.restartWith(nil)
			in := f.create(strings.ReplaceAll(fmt.Sprintf("migrate-%s-%s", step, fl.name), "_", "-"))
			source := f.run(in.ID).ActiveVmm
			// Failed before the wait, with the VMM servers holding the
			// migration where it is (the test of a migration that
			// completes as the saga fails is below).
			paused := step == "wait_handoff" && fl.phase == saga.BeforeDo
			f.paused.Store(paused)
			f.inject(controlplane.KindInstanceMigrate, step, fl, func() (controlplane.SagaView, error) {
				return f.ops().MigrateInstance(ctx, in.ID.String(), uuid.NullUUID{})
			})
			f.paused.Store(false)
			v := f.get(in.ID)
			require.Equal(t, model.VisibleRunning, v.State, "%s at %s", fl.name, step)
			if fl.crash {
				require.NotEqual(t, source.SledID, v.ActiveVmm.SledID, "resumed, the migration moved nothing")
			}
			if !fl.crash && (step == "lock" || step == "reserve_target" || step == "create_migration" || step == "arm_source" || paused) {
				require.Equal(t, source.ID, v.ActiveVmm.ID, "the source stopped running after a failure at %s", step)
			}
			f.halt(in.ID)
		}
	}
	f.restartWith(nil)
	f.requireNoLeaks()
}

// Stop, reboot and delete, with each fault at each step: a failure
// leaves the instance as it was, or as the request already made it (a
// stop asked for may still stop it); a crash resumes to the end.
func TestStopRebootDeleteFaultAtEveryStep(t *testing.T) {
	f := newSagaFleet(t, 1)
	ctx := context.Background()
	for _, fl := range faults {
		for _, step := range stopSteps {
			t.Logf("stop: %s at %s", fl.name, step)
			f.restartWith(nil)
			in := f.create(strings.ReplaceAll(fmt.Sprintf("stop-%s-%s", step, fl.name), "_", "-"))
			f.run(in.ID)
			f.inject(controlplane.KindInstanceStop, step, fl, func() (controlplane.SagaView, error) {
				return f.ops().StopInstance(ctx, in.ID.String())
			})
			if fl.crash || step == "wait_stopped" || step == "unlock" || (step == "request_stop" && fl.phase == saga.AfterDo) {
				// The stop was asked for: the VMM stops, saga or not.
				require.Eventually(t, func() bool {
					v, err := f.ops().GetInstance(ctx, in.ID.String())
					return err == nil && v.State == model.VisibleStopped
				}, 20*time.Second,
					10*time.Millisecond, "%s at %s", fl.name, step)
				f.requireNoLeaks()
			} else {
				require.Equal(t, model.VisibleRunning, f.get(in.ID).State, "%s at %s", fl.name, step)
				f.halt(in.ID)
			}
		}
		for _, step := range rebootSteps {
			t.Logf("reboot: %s at %s", fl.name, step)
			f.restartWith(nil)
			in := f.create(strings.ReplaceAll(fmt.Sprintf("reboot-%s-%s", step, fl.name), "_", "-"))
			f.run(in.ID)
			f.inject(controlplane.KindInstanceReboot, step, fl, func() (controlplane.SagaView, error) {
				return f.ops().RebootInstance(ctx, in.ID.String())
			})
			require.Equal(t, model.VisibleRunning, f.get(in.ID).State, "%s at %s", fl.name, step)
			f.halt(in.ID)
		}
		for _, step := range deleteSteps {
			t.Logf("delete: %s at %s", fl.name, step)
			in := f.create(strings.ReplaceAll(fmt.Sprintf("delete-%s-%s", step, fl.name), "_", "-"))
			f.inject(controlplane.KindInstanceDelete, step, fl, func() (controlplane.SagaView, error) {
				return f.ops().DeleteInstance(ctx, in.ID.String())
			})
			_, err := f.ops().GetInstance(ctx, in.ID.String())
			if fl.crash {
				require.ErrorIs(t, err, controlplane.ErrNotFound, "%s at %s", fl.name, step)
			} else if step == "lock" {
				require.NoError(t, err, "%s at %s", fl.name, step)
			}
		}
	}
	f.restartWith(nil)
	f.requireNoLeaks()
}

// A migration that completes on the VMM servers just as its saga fails:
// whether the doorbell stores the hand-off first or the undo's own
// question to the agents finds it, the undo keeps the target, which has
// the VM; the instance runs on it, and nothing leaks.
func TestMigrateUndoKeepsACompletedTarget(t *testing.T) {
	f := newSagaFleet(t, 2)
	ctx := context.Background()
	in := f.create("late-handoff")
	source := f.run(in.ID).ActiveVmm
	f.paused.Store(true)
	var once sync.Once
	f.restartWith(func(kind, step string, phase saga.Phase) error {
		var err error
		if kind == controlplane.KindInstanceMigrate && step == "wait_handoff" && phase == saga.BeforeDo {
			once.Do(func() {
				err = errors.New("injected failure")
				f.completeMigrationBehindTheDoorbell(in.ID)
			})
		}
		return err
	})
	sv, err := f.ops().MigrateInstance(ctx, in.ID.String(), uuid.NullUUID{})
	require.NoError(t, err)
	got := f.waitSaga(sv.ID)
	require.Equal(t, controlplane.SagaUnwound, got.State)
	v := f.get(in.ID)
	require.Equal(t, model.VisibleRunning, v.State)
	require.NotEqual(t, source.ID, v.ActiveVmm.ID, "the undo took down the VMM that had the VM")
	f.requireNoLeaks()
}

// completeMigrationBehindTheDoorbell completes the instance's migration
// on both played VMM servers and waits until the target's agent holds it
// completed (the doorbell may or may not have stored it yet).
func (f *sagaFleet) completeMigrationBehindTheDoorbell(instance uuid.UUID) {
	t := f.t
	ctx := context.Background()
	in, err := f.store.Instance(ctx, instance)
	require.NoError(t, err)
	src, err := f.store.Vmm(ctx, in.Runtime.ActiveVmm.UUID)
	require.NoError(t, err)
	dst, err := f.store.Vmm(ctx, in.Runtime.TargetVmm.UUID)
	require.NoError(t, err)
	mig := in.Runtime.Migration.UUID
	ss, ds := f.sledOf(src.SledID), f.sledOf(dst.SledID)
	ds.fakes.At(ds.addrOf(t, dst.ID)).SetMigration(sledagent.StateRunning, &sledagent.MigrationProgress{ID: mig, Phase: "completed"}, nil)
	ss.fakes.At(ss.addrOf(t, src.ID)).SetMigration(sledagent.StateDestroyed, nil, &sledagent.MigrationProgress{ID: mig, Phase: "completed"})
	require.Eventually(t, func() bool {
		st, err := ds.agent.State(dst.ID)
		return err == nil && st.MigrationIn != nil && st.MigrationIn.State == sledagent.MigrationCompleted
	}, 10*time.Second, 5*time.Millisecond)
}

// A migration target killed (SIGKILL) before the stream: the agent fails
// it, the doorbell drops the migration, the saga unwinds, and the source
// runs on; nothing leaks.
func TestMigrateTargetKilledSourceRunsOn(t *testing.T) {
	f := newSagaFleet(t, 2)
	ctx := context.Background()
	in := f.create("target-killed")
	source := f.run(in.ID).ActiveVmm
	f.paused.Store(true) // the servers hold the migration pending
	sv, err := f.ops().MigrateInstance(ctx, in.ID.String(), uuid.NullUUID{})
	require.NoError(t, err)
	var target model.Vmm
	require.Eventually(t, func() bool {
		cur, err := f.store.Instance(ctx, in.ID)
		if err != nil || !cur.Runtime.TargetVmm.Valid {
			return false
		}
		target, err = f.store.Vmm(ctx, cur.Runtime.TargetVmm.UUID)
		if err != nil {
			return false
		}
		_, err = f.sledOf(target.SledID).agent.Get(target.ID)
		return err == nil
	}, 20*time.Second, 5*time.Millisecond, "the target was never registered")
	require.NoError(t, syscall.Kill(f.sledOf(target.SledID).pidOf(t, target.ID), syscall.SIGKILL))
	got := f.waitSaga(sv.ID)
	require.Equal(t, controlplane.SagaUnwound, got.State)
	require.Contains(t, got.Error, "step wait_handoff: the migration failed")
	require.Equal(t, controlplane.SagaCodeMigrationFailed, got.ErrorCode)
	v := f.get(in.ID)
	require.Equal(t, model.VisibleRunning, v.State)
	require.Equal(t, source.ID, v.ActiveVmm.ID)
	f.requireNoLeaks()
}
