package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/db"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/internal/pgembed/pgtest"
)

// scriptedSled is a sled agent played by the test (a unit test of the
// runtime over real PostgreSQL): VmmState answers what the test set, and
// may block until released.
type scriptedSled struct {
	controlplane.SledClient // what the runtime's tests do not play (nil)
	mu                      sync.Mutex
	state                   model.SledVmmState
	err                     error
	pulls                   int
	gate                    chan struct{} // non-nil: each VmmState waits for a receive
	started                 chan struct{} // a pull began (buffered)
	forgot                  []uuid.UUID
}

func (s *scriptedSled) Ping(ctx context.Context) error { return nil }

func (s *scriptedSled) VmmState(ctx context.Context, id uuid.UUID) (string, model.SledVmmState, error) {
	s.mu.Lock()
	s.pulls++
	gate := s.gate
	s.mu.Unlock()
	select {
	case s.started <- struct{}{}:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", model.SledVmmState{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return "127.0.0.1:9", s.state, s.err
}

func (s *scriptedSled) Unregister(ctx context.Context, id uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgot = append(s.forgot, id)
	return nil
}

func (s *scriptedSled) set(st model.VmmState, gen model.Generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = model.SledVmmState{Vmm: model.VmmRuntime{State: st, Gen: gen, TimeUpdated: time.Now().UTC()}}
}

func (s *scriptedSled) pullCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pulls
}

// rig is a control plane over real PostgreSQL with one scripted sled and
// one VMM on it, running.
type rig struct {
	store *db.DB
	cp    *controlplane.ControlPlane
	sled  *scriptedSled
	vmm   uuid.UUID
	inst  uuid.UUID
}

func newRig(t *testing.T, opts func(*controlplane.Options)) *rig {
	t.Helper()
	ctx := context.Background()
	store, err := db.Open(ctx, pgtest.Database(t), db.WithLogger(quiet()))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	r := &rig{store: store, sled: &scriptedSled{started: make(chan struct{}, 100)}}
	r.vmm, r.inst = seedRunningVmm(t, store)
	r.sled.set(model.VmmRunning, 2)

	o := cpOptions(store, func(model.Sled) (controlplane.SledClient, error) { return r.sled, nil })
	if opts != nil {
		opts(&o)
	}
	r.cp, err = controlplane.New(o)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.cp.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// seedRunningVmm stores an active sled, an instance and its active VMM
// (created at generation 1), and returns the VMM's id and the instance's.
func seedRunningVmm(t *testing.T, store *db.DB) (uuid.UUID, uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	vmm, inst, sledID := uuid.New(), uuid.New(), uuid.New()
	now := time.Now().UTC()
	require.NoError(t, store.RegisterSled(ctx, model.Sled{ID: sledID, Address: "127.0.0.1:9", APIVersions: []string{"v1"},
		Capacity: model.Resources{CPUs: 4, MemoryMiB: 1024}, State: model.SledActive, TimeCreated: now, LastContact: now}))
	require.NoError(t, store.CreateInstance(ctx, model.Instance{ID: inst, Name: "rig", SpecVersion: "vmm-server/v1", Spec: []byte(tickerSpec),
		Resources: model.Resources{CPUs: 1, MemoryMiB: 64}, TimeCreated: now,
		Runtime: model.InstanceRuntime{State: model.InstanceNoVmm, Gen: 1, TimeUpdated: now}}))
	require.NoError(t, store.CreateVmm(ctx, model.Vmm{ID: vmm, InstanceID: inst, SledID: sledID, Resources: model.Resources{CPUs: 1, MemoryMiB: 64},
		TimeCreated: now, Runtime: model.VmmRuntime{State: model.VmmCreating, Gen: 1, TimeUpdated: now}}))
	res, err := store.UpdateInstanceRuntime(ctx, inst, model.InstanceRuntime{State: model.InstanceVmm, Gen: 2, TimeUpdated: now,
		ActiveVmm: uuid.NullUUID{UUID: vmm, Valid: true}})
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, res)
	return vmm, inst
}

func (r *rig) stored(t *testing.T) model.Vmm {
	v, err := r.store.Vmm(context.Background(), r.vmm)
	require.NoError(t, err)
	return v
}

// A ring returns at once, even while the sled agent's answer to the pull
// hangs: the doorbell never calls the agent inside the agent's request.
// Rings during a pull make exactly one more pull, however many they are.
func TestRingsCoalesceAndNeverWaitForTheAgent(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	r.sled.gate = make(chan struct{})
	start := time.Now()
	require.NoError(t, r.cp.Ring(ctx, r.vmm))
	<-r.sled.started // the pull hangs in the agent
	for range 50 {
		require.NoError(t, r.cp.Ring(ctx, r.vmm))
	}
	require.Less(t, time.Since(start), 2*time.Second, "rings waited for the pull")
	require.Equal(t, 1, r.sled.pullCount())
	release := func(what string) {
		select {
		case r.sled.gate <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s came", what)
		}
	}
	release("first pull")
	release("pull for the rings heard during the first")
	assert.Eventually(t, func() bool { return r.stored(t).Runtime.State == model.VmmRunning }, 5*time.Second, time.Millisecond)
	assert.Never(t, func() bool { return r.sled.pullCount() > 2 }, 200*time.Millisecond, 5*time.Millisecond,
		"rings during a pull made more than one more pull")
	close(r.sled.gate)
}

// A ring for a VMM the control plane does not know is refused at once.
func TestRingForAnUnknownVmmIsNotFound(t *testing.T) {
	r := newRig(t, nil)
	err := r.cp.Ring(context.Background(), uuid.New())
	require.ErrorIs(t, err, controlplane.ErrNotFound)
	assert.Never(t, func() bool { return r.sled.pullCount() > 0 }, 100*time.Millisecond, 5*time.Millisecond)
}

// An agent that answers an older generation, or the same one, changes
// nothing; one that answers garbage changes nothing and says so.
func TestOlderAndGarbageAnswersChangeNothing(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	out, err := r.cp.Sync(ctx, r.vmm)
	require.NoError(t, err)
	require.Equal(t, controlplane.OutcomeUpdated, out)
	r.sled.set(model.VmmRebooting, 5)
	_, err = r.cp.Sync(ctx, r.vmm)
	require.NoError(t, err)
	before := r.stored(t)
	require.Equal(t, model.Generation(5), before.Runtime.Gen)

	for _, g := range []model.Generation{5, 4, 1} {
		r.sled.set(model.VmmStopped, g)
		out, err := r.cp.Sync(ctx, r.vmm)
		require.NoError(t, err)
		require.Equal(t, controlplane.OutcomeStale, out, "gen %d", g)
		require.Equal(t, before, r.stored(t), "an answer at gen %d changed the VMM", g)
	}

	r.sled.mu.Lock()
	r.sled.err = fmt.Errorf("sled agent answered garbage: %w", errors.New("unexpected end of JSON input"))
	r.sled.mu.Unlock()
	out, err = r.cp.Sync(ctx, r.vmm)
	require.Error(t, err)
	require.Equal(t, controlplane.OutcomeError, out)
	require.Equal(t, before, r.stored(t))
}

// An agent that does not answer is asked again, PullAttempts times in all,
// then left to the watcher; the VMM is not failed for it.
func TestUnreachableAgentIsRetriedThenLeftAlone(t *testing.T) {
	r := newRig(t, func(o *controlplane.Options) { o.PullAttempts = 4 })
	ctx := context.Background()
	_, err := r.cp.Sync(ctx, r.vmm)
	require.NoError(t, err)
	before := r.stored(t)
	r.sled.mu.Lock()
	r.sled.err = fmt.Errorf("dial: %w", controlplane.ErrSledUnreachable)
	r.sled.mu.Unlock()
	require.NoError(t, r.cp.Ring(ctx, r.vmm))
	assert.Eventually(t, func() bool { return r.sled.pullCount() == 1+4 }, 5*time.Second, time.Millisecond)
	assert.Never(t, func() bool { return r.sled.pullCount() > 5 }, 200*time.Millisecond, 5*time.Millisecond)
	require.Equal(t, before, r.stored(t))
}

// A terminal VMM is unregistered from its sled once its final state is
// stored, and retired; a VMM its sled forgot (404) fails with vmm_gone.
func TestTerminalVmmsAreRetired(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	r.sled.set(model.VmmDestroyed, 7)
	out, err := r.cp.Sync(ctx, r.vmm)
	require.NoError(t, err)
	require.Equal(t, controlplane.OutcomeRetired, out)
	v := r.stored(t)
	require.Equal(t, model.VmmDestroyed, v.Runtime.State)
	require.NotNil(t, v.TimeRetired)
	require.Equal(t, []uuid.UUID{r.vmm}, r.sled.forgot)
	in, err := r.store.Instance(ctx, r.inst)
	require.NoError(t, err)
	require.Equal(t, model.InstanceNoVmm, in.Runtime.State)

	// Retired: later rings pull nothing.
	out, err = r.cp.Sync(ctx, r.vmm)
	require.NoError(t, err)
	require.Equal(t, controlplane.OutcomeSkipped, out)
}

func TestVmmGoneFromItsSledFails(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	_, err := r.cp.Sync(ctx, r.vmm)
	require.NoError(t, err)
	r.sled.mu.Lock()
	r.sled.err = fmt.Errorf("GET: %w", controlplane.ErrVmmGone)
	r.sled.mu.Unlock()
	out, err := r.cp.Sync(ctx, r.vmm)
	require.NoError(t, err)
	require.Equal(t, controlplane.OutcomeVmmGone, out)
	v := r.stored(t)
	reason, failed := v.Runtime.State.FailureReason()
	require.True(t, failed)
	require.Equal(t, model.FailureVMMGone, reason.Kind)
	require.Equal(t, model.Generation(3), v.Runtime.Gen)
	in, err := r.store.Instance(ctx, r.inst)
	require.NoError(t, err)
	require.Equal(t, model.InstanceFailed, in.Runtime.State)
	require.Equal(t, reason, *in.Runtime.Failure)
	reserved, err := r.store.Reserved(ctx, v.SledID)
	require.NoError(t, err)
	require.Equal(t, model.Resources{}, reserved)
}
