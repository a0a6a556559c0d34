package controlplane_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	agentapi "github.com/wagglevm/waggle/sledagent/api"
)

// A VMM started on a sled shows up in the database through the doorbell:
// every state the control plane stores comes with a strictly greater
// generation, and the last one is what the agent holds.
func TestStatesFlowInByDoorbell(t *testing.T) {
	f := newFleet(t, 1)
	s := f.sleds[0]
	in := f.instance("flow")
	id := f.start(in, s)
	inst := s.fakes.At(s.addrOf(t, id))
	require.NotNil(t, inst)

	// Record what the database holds as the VM moves; the watcher is off,
	// so only rings bring states in.
	type seen struct {
		state string
		gen   model.Generation
	}
	var history []seen
	record := func() {
		v := f.vmm(id)
		if len(history) == 0 || history[len(history)-1].gen != v.Runtime.Gen || history[len(history)-1].state != v.Runtime.State.Name() {
			history = append(history, seen{v.Runtime.State.Name(), v.Runtime.Gen})
		}
	}
	f.waitVmm(id, "running", func(v model.Vmm) bool { record(); return v.Runtime.State.Name() == "running" })
	for _, st := range []sledagent.VmmState{sledagent.StateRebooting, sledagent.StateRunning, sledagent.StateStopping, sledagent.StateStopped} {
		inst.Set(st, "")
		var want sledagent.SledVmmState
		require.Eventually(t, func() bool {
			want, _ = s.agent.State(id)
			return want.State == st
		}, 10*time.Second, time.Millisecond, "the agent never saw %s", st)
		f.waitVmm(id, string(st), func(v model.Vmm) bool {
			record()
			return v.Runtime.State.Name() == string(st) && uint64(v.Runtime.Gen) == want.Gen
		})
	}
	for i := 1; i < len(history); i++ {
		require.Greater(t, history[i].gen, history[i-1].gen, "generations go back in %v", history)
	}
	// The address of the VMM's server is stored as its agent reports it.
	require.Equal(t, s.addrOf(t, id), f.vmm(id).Address)

	// The instance shows its VMM's state.
	got, err := f.store.Instance(context.Background(), in.ID)
	require.NoError(t, err)
	vs := f.vmm(id).Runtime.State
	require.Equal(t, model.VisibleStopping, model.Derive(got.Runtime, &vs))
}

// A VMM process killed with SIGKILL is failed with its reason, and so is
// its instance; its reservation is released and the sled told to forget it.
func TestKilledVmmFailsWithItsReason(t *testing.T) {
	f := newFleet(t, 1)
	s := f.sleds[0]
	ctx := context.Background()
	in := f.instance("victim")
	id := f.start(in, s)
	f.waitVmm(id, "running", inState("running"))
	reserved, err := f.store.Reserved(ctx, s.id)
	require.NoError(t, err)
	require.Equal(t, model.Resources{CPUs: 1, MemoryMiB: 64}, reserved)

	require.NoError(t, syscall.Kill(s.pidOf(t, id), syscall.SIGKILL))
	v := f.waitVmm(id, "failed and retired", func(v model.Vmm) bool { return v.Runtime.State.IsFailed() && v.TimeRetired != nil })
	reason, _ := v.Runtime.State.FailureReason()
	require.Equal(t, model.FailureProcessExited, reason.Kind)
	require.Contains(t, reason.Message, "signal 9")

	got, err := f.store.Instance(ctx, in.ID)
	require.NoError(t, err)
	require.Equal(t, model.InstanceFailed, got.Runtime.State)
	require.False(t, got.Runtime.ActiveVmm.Valid)
	require.Equal(t, reason, *got.Runtime.Failure)
	reserved, err = f.store.Reserved(ctx, s.id)
	require.NoError(t, err)
	require.Equal(t, model.Resources{}, reserved, "a failed VMM keeps its reservation")
	_, err = s.agent.Get(id)
	require.ErrorIs(t, err, sledagent.ErrNoSuchVmm, "the sled still holds a VMM whose final state is stored")
}

// The control plane stops; the VMMs change meanwhile (their agents ring
// into the void, with backoff); a new control plane catches up: from the
// agents' rings, and from its watcher's first round.
func TestControlPlaneCatchesUpAfterARestart(t *testing.T) {
	f := newFleet(t, 2)
	var ids []uuid.UUID
	for i, s := range f.sleds {
		in := f.instance("restart-" + string(rune('a'+i)))
		ids = append(ids, f.start(in, s))
	}
	for _, id := range ids {
		f.waitVmm(id, "running", inState("running"))
	}
	f.stopControlPlane()
	for i, s := range f.sleds {
		s.fakes.At(s.addrOf(t, ids[i])).Set(sledagent.StateRebooting, "")
	}
	// Nothing moves while no control plane runs.
	for _, id := range ids {
		require.Equal(t, "running", f.vmm(id).Runtime.State.Name())
	}
	f.restartControlPlane()
	for _, id := range ids {
		f.waitVmm(id, "rebooting", inState("rebooting"))
	}

	// A change that no ring brings (the agent gave up, say) is found by the
	// watcher's round.
	f.stopControlPlane()
	s := f.sleds[0]
	s.fakes.At(s.addrOf(t, ids[0])).Set(sledagent.StateRunning, "")
	f.restartControlPlane()
	rep, err := f.controlPlane().WatchOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 2, rep.Sleds)
	require.Equal(t, 2, rep.Checks[controlplane.CheckOK], "%+v", rep)
	require.Equal(t, "running", f.vmm(ids[0]).Runtime.State.Name())
}

// Rings that bring nothing new, and rings repeated, change nothing: not
// the VMM's row, not its instance's.
func TestDuplicateAndStaleRingsChangeNothing(t *testing.T) {
	f := newFleet(t, 1)
	s := f.sleds[0]
	ctx := context.Background()
	in := f.instance("dup")
	id := f.start(in, s)
	before := f.waitVmm(id, "running", inState("running"))
	instBefore, err := f.store.Instance(ctx, in.ID)
	require.NoError(t, err)
	for range 20 {
		require.NoError(t, f.controlPlane().Ring(ctx, id))
	}
	for range 5 {
		out, err := f.controlPlane().Sync(ctx, id)
		require.NoError(t, err)
		require.Equal(t, controlplane.OutcomeStale, out)
	}
	assert.Never(t, func() bool {
		v, err := f.store.Vmm(ctx, id)
		return err != nil || v.Runtime != before.Runtime
	}, 300*time.Millisecond, 10*time.Millisecond, "a duplicate ring changed the VMM")
	instAfter, err := f.store.Instance(ctx, in.ID)
	require.NoError(t, err)
	require.Equal(t, instBefore.Runtime, instAfter.Runtime)
}

// The watcher tells a VMM its sled no longer knows (failed, vmm_gone) from
// a sled that does not answer (nothing failed, until the sled has been
// silent long enough to be lost).
func TestWatcherClassifies(t *testing.T) {
	f := newFleet(t, 2)
	ctx := context.Background()
	a, b := f.sleds[0], f.sleds[1]
	idA := f.start(f.instance("on-a"), a)
	idB := f.start(f.instance("on-b"), b)
	f.waitVmm(idA, "running", inState("running"))
	f.waitVmm(idB, "running", inState("running"))

	// Sled a forgets its VMM behind the control plane's back; sled b stops
	// answering.
	f.stopControlPlane() // no ring from a's unregistration
	require.NoError(t, a.agent.Unregister(ctx, idA, true))
	require.NoError(t, b.srv.Close())
	f.restartControlPlane()

	rep, err := f.controlPlane().WatchOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, rep.Checks[controlplane.CheckVmmGone], "%+v", rep)
	require.Equal(t, 1, rep.Checks[controlplane.CheckSledUnreachable], "%+v", rep)
	require.Empty(t, rep.SledsLost, "a sled silent for less than SledLostAfter was lost")

	gone := f.vmm(idA)
	reason, failed := gone.Runtime.State.FailureReason()
	require.True(t, failed)
	require.Equal(t, model.FailureVMMGone, reason.Kind)
	require.Equal(t, "running", f.vmm(idB).Runtime.State.Name(), "a VMM on a silent sled was failed at once")

	// Silent for longer than the control plane waits: lost, its VMMs failed.
	f.stopControlPlane()
	opts := cpOptions(f.store, f.dialer())
	opts.SledLostAfter = time.Nanosecond
	cp, err := controlplane.New(opts)
	require.NoError(t, err)
	rep, err = cp.WatchOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{b.id}, rep.SledsLost)
	lost := f.vmm(idB)
	reason, failed = lost.Runtime.State.FailureReason()
	require.True(t, failed)
	require.Equal(t, model.FailureSledLost, reason.Kind)
	sl, err := f.store.Sled(ctx, b.id)
	require.NoError(t, err)
	require.Equal(t, model.SledLost, sl.State)
	f.restartControlPlane()

	// Heard again (its agent never stopped, it was only out of reach):
	// active, and the VMM failed with it is unregistered from it, so its
	// guest does not run on, and retired.
	rep, err = f.controlPlane().WatchOnce(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.SledsRevived, "a lost sled that does not answer stays lost")
	sl, err = f.store.Sled(ctx, b.id)
	require.NoError(t, err)
	require.Equal(t, model.SledLost, sl.State)

	serveAgain(t, b)
	rep, err = f.controlPlane().WatchOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{b.id}, rep.SledsRevived)
	require.Equal(t, 2, rep.Sleds, "the revived sled is checked in the same round")
	sl, err = f.store.Sled(ctx, b.id)
	require.NoError(t, err)
	require.Equal(t, model.SledActive, sl.State)
	require.True(t, sl.LastContact.After(lost.Runtime.TimeUpdated), "its contact is now")
	retired := f.vmm(idB)
	require.NotNil(t, retired.TimeRetired, "the failed VMM is retired")
	reason, failed = retired.Runtime.State.FailureReason()
	require.True(t, failed)
	require.Equal(t, model.FailureSledLost, reason.Kind, "its failure stands")
	_, err = b.agent.Get(idB)
	require.ErrorIs(t, err, sledagent.ErrNoSuchVmm, "the sled still runs the VMM failed when it was lost")
	rec := httptest.NewRecorder()
	f.controlPlane().MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, rec.Body.String(), "\nwaggle_controlplane_sleds_revived_total 1\n")

	rep, err = f.controlPlane().WatchOnce(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.SledsRevived)
}

// serveAgain serves a sled's agent API again at its old address, after its
// server was closed: the sled comes back into reach.
func serveAgain(t *testing.T, s *sled) {
	t.Helper()
	h, err := agentapi.NewHandler(s.agent, httpkit.HandlerOptions{Log: quiet(), Auth: httpkit.BearerToken(s.token)})
	require.NoError(t, err)
	ln := listenAgain(t, s.addr)
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
}

// A ring for a VMM the control plane does not know answers 404
// no_such_vmm, through the real API and the agent's real client.
func TestRingForUnknownVmm(t *testing.T) {
	f := newFleet(t, 0)
	req, err := http.NewRequest(http.MethodPost, "http://"+f.cpAddr+"/v1/vmms/"+uuid.NewString()+"/changed", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+f.cpToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}
