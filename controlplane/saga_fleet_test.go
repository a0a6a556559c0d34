package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/internalapi"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
)

// sagaFleet is a fleet whose control plane runs the sagas with a fixed
// owner id (so that a control plane started after a crash takes the
// sagas back at once), quick polls and backoffs, and the fault injector
// of the test; its played VMMs migrate when both sides are ready.
type sagaFleet struct {
	*fleet
	owner uuid.UUID

	mu      sync.Mutex
	crashed chan struct{}      // closed when the injector has crashed the executor; guarded by mu
	dead    map[uuid.UUID]bool // sleds whose agent was killed (killAgent); guarded by mu
	paused  atomic.Bool        // migrations are not played on while set
}

// deadSleds lists the sleds whose agent is down.
func (f *sagaFleet) deadSleds() []uuid.UUID {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []uuid.UUID{} // not nil: a query's ANY($1) of no sled
	for id, d := range f.dead {
		if d {
			out = append(out, id)
		}
	}
	return out
}

// liveAgent is a sled whose agent is up, with that agent.
type liveAgent struct {
	s     *sled
	agent *sledagent.Agent
}

// liveAgents lists the sleds whose agent is up, with their agents (read
// under mu: reviveAgent replaces a sled's agent).
func (f *sagaFleet) liveAgents() []liveAgent {
	f.fleet.mu.Lock()
	sleds := append([]*sled(nil), f.sleds...)
	f.fleet.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []liveAgent
	for _, s := range sleds {
		if !f.dead[s.id] {
			out = append(out, liveAgent{s, s.agent})
		}
	}
	return out
}

func newSagaFleet(t testing.TB, sleds int) *sagaFleet { return newSagaFleetSized(t, sleds, 0) }

// newSagaFleetSized is newSagaFleet with sleds that have room for perSled
// VMMs (newFleetSized).
func newSagaFleetSized(t testing.TB, sleds, perSled int) *sagaFleet {
	t.Helper()
	f := &sagaFleet{fleet: newFleetSized(t, sleds, perSled), owner: uuid.New()}
	f.restartWith(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.playMigrations(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// restartWith stops the control plane and starts one with inject.
func (f *sagaFleet) restartWith(inject saga.InjectFunc) {
	f.stopControlPlane()
	crashed := make(chan struct{})
	var once sync.Once
	f.mu.Lock()
	f.crashed = crashed
	f.mu.Unlock()
	wrapped := inject
	if inject != nil {
		wrapped = func(kind, step string, phase saga.Phase) error {
			err := inject(kind, step, phase)
			if errors.Is(err, saga.ErrCrash) {
				once.Do(func() { close(crashed) })
			}
			return err
		}
	}
	var ln net.Listener
	require.Eventually(f.t, func() bool {
		var err error
		ln, err = net.Listen("tcp", f.cpAddr)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the control plane's address stays taken")
	o := cpOptions(f.store, f.dialer())
	o.Logger = sagaLogger()
	o.SagaWait = 20 * time.Second
	o.Saga = saga.Options{Owner: f.owner, Poll: 20 * time.Millisecond, UndoAttempts: 3, UndoBackoff: 5 * time.Millisecond,
		Inject: wrapped, Logger: o.Logger}
	f.startWith(ln, o)
}

// sagaLogger logs the control plane's words to stderr when
// WAGGLE_TEST_LOG is set (to debug a failing case), and nowhere otherwise.
func sagaLogger() *slog.Logger {
	if os.Getenv("WAGGLE_TEST_LOG") == "" {
		return quiet()
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startWith runs a control plane with options o and serves its internal
// API on ln (as startControlPlane does with the default options).
func (f *sagaFleet) startWith(ln net.Listener, o controlplane.Options) {
	t := f.t
	cp, err := controlplane.New(o)
	require.NoError(t, err)
	h, err := internalapi.NewHandler(cp, httpkit.HandlerOptions{Log: quiet(), Auth: httpkit.BearerToken(f.cpToken)}, cp.MetricsHandler())
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = cp.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	f.fleet.mu.Lock()
	f.cp = cp
	f.stop = func() {
		cancel()
		_ = srv.Close()
		wg.Wait()
	}
	f.fleet.mu.Unlock()
}

// waitCrash waits until the injector crashed the executor.
func (f *sagaFleet) waitCrash() {
	f.mu.Lock()
	ch := f.crashed
	f.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		f.t.Fatal("the injected crash never came")
	}
}

func (f *sagaFleet) ops() controlplane.Operations { return f.controlPlane() }

// waitSaga waits until a saga ends and returns its view.
func (f *sagaFleet) waitSaga(id uuid.UUID) controlplane.SagaView {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := saga.Wait(ctx, f.store, id)
	require.NoError(f.t, err)
	v, err := f.ops().Saga(ctx, id)
	require.NoError(f.t, err)
	return v
}

// create makes a stopped instance through the Operations.
func (f *sagaFleet) create(name string) model.Instance {
	f.t.Helper()
	v, sv, err := f.ops().CreateInstance(context.Background(), controlplane.InstanceCreate{Name: name,
		SpecVersion: "vmm-server/v1", Spec: []byte(tickerSpec)})
	require.NoError(f.t, err)
	require.Nil(f.t, sv)
	return v.Instance
}

// run starts an instance and waits for its start saga to be done.
func (f *sagaFleet) run(id uuid.UUID) controlplane.InstanceView {
	f.t.Helper()
	sv, err := f.ops().StartInstance(context.Background(), id.String())
	require.NoError(f.t, err)
	got := f.waitSaga(sv.ID)
	require.Equal(f.t, controlplane.SagaDone, got.State, "start: %s", got.Error)
	require.Empty(f.t, got.ErrorCode, "a saga done has no error code")
	return f.get(id)
}

// halt stops an instance and waits for its stop saga to be done.
func (f *sagaFleet) halt(id uuid.UUID) {
	f.t.Helper()
	sv, err := f.ops().StopInstance(context.Background(), id.String())
	require.NoError(f.t, err)
	got := f.waitSaga(sv.ID)
	require.Equal(f.t, controlplane.SagaDone, got.State, "stop: %s", got.Error)
}

func (f *sagaFleet) get(id uuid.UUID) controlplane.InstanceView {
	f.t.Helper()
	v, err := f.ops().GetInstance(context.Background(), id.String())
	require.NoError(f.t, err)
	return v
}

// sledOf is the fleet's sled with id.
func (f *sagaFleet) sledOf(id uuid.UUID) *sled {
	for _, s := range f.sleds {
		if s.id == id {
			return s
		}
	}
	f.t.Fatalf("no sled %s", id)
	return nil
}

// playMigrations plays the VMM servers' side of every migration: once a
// target is registered (its migration in pending) and its source armed
// for the same migration, both move to migrating with the migration in
// progress; once both agents have seen that, the target runs with the
// migration completed, and once its agent has seen that, the source ends
// destroyed, as real servers do after the stream. A target gone in the
// middle (a saga undid it) fails the migration, and the source runs on.
// While paused, migrations stay where they are. A sled whose agent is down
// (killAgent) is not looked at: its agent reports nothing, and a source
// in progress whose target is there loses the stream.
func (f *sagaFleet) playMigrations(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	type side struct {
		s *sled
		v sledagent.Vmm
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		targets, sources := map[uuid.UUID]side{}, map[uuid.UUID]side{}
		handedIn := map[uuid.UUID]bool{} // migrations whose target has the VM
		sleds := f.liveAgents()
		for _, l := range sleds {
			s := l.s
			for _, v := range l.agent.List() {
				if m := v.State.MigrationIn; open(m) && !v.State.State.Terminal() {
					targets[m.ID] = side{s, v}
				}
				if m := v.State.MigrationIn; m != nil && m.State == sledagent.MigrationCompleted {
					handedIn[m.ID] = true
				}
				if m := v.State.MigrationOut; open(m) && !v.State.State.Terminal() {
					sources[m.ID] = side{s, v}
				}
			}
		}
		for id, src := range sources {
			si := src.s.fakes.At(src.v.Addr)
			tg, ok := targets[id]
			if si == nil {
				continue
			}
			if !ok {
				// A target that took the VM is not gone: the loop below lets
				// the source go (failing it here raced that, under load).
				if src.v.State.MigrationOut.State == sledagent.MigrationInProgress && !handedIn[id] {
					// The target went away mid-stream: the source keeps the VM.
					si.SetMigration(sledagent.StateRunning, nil, &sledagent.MigrationProgress{ID: id, Phase: "failed"})
				}
				continue
			}
			ti := tg.s.fakes.At(tg.v.Addr)
			if ti == nil {
				continue
			}
			inP, outP := tg.v.State.MigrationIn.State, src.v.State.MigrationOut.State
			switch {
			case f.paused.Load():
			case inP == sledagent.MigrationPending && outP == sledagent.MigrationPending:
				ti.SetMigration(sledagent.StateMigrating, &sledagent.MigrationProgress{ID: id, Phase: "in_progress"}, nil)
				si.SetMigration(sledagent.StateMigrating, nil, &sledagent.MigrationProgress{ID: id, Phase: "in_progress"})
			case inP == sledagent.MigrationInProgress && outP == sledagent.MigrationInProgress:
				// The target takes the VM first; the source lets it go
				// once the target has it (below).
				ti.SetMigration(sledagent.StateRunning, &sledagent.MigrationProgress{ID: id, Phase: "completed"}, nil)
			}
		}
		for _, l := range sleds {
			for _, v := range l.agent.List() {
				m := v.State.MigrationIn
				if m == nil || m.State != sledagent.MigrationCompleted || v.State.State.Terminal() {
					continue
				}
				if src, ok := sources[m.ID]; ok {
					if si := src.s.fakes.At(src.v.Addr); si != nil {
						si.SetMigration(sledagent.StateDestroyed, nil, &sledagent.MigrationProgress{ID: m.ID, Phase: "completed"})
					}
				}
			}
		}
	}
}

// open says whether a migration is under way.
func open(m *sledagent.MigrationRuntime) bool {
	return m != nil && (m.State == sledagent.MigrationPending || m.State == sledagent.MigrationInProgress)
}

// requireNoLeaks checks, against the database and every sled agent, that
// nothing is left over once the sagas have ended: no saga in flight, no
// updater lock held, no migration pointer, no reservation but those of
// active VMMs, every VMM not retired the active VMM of its instance and
// registered on its sled, nothing registered on a sled that is not an
// active VMM, and every instance stopped, running or failed with a reason.
//
// A sled whose agent is down (killAgent) is the one exception: what its
// agent holds cannot be asked or unregistered until it is back, so its
// registry is not looked at, and a VMM on it that the control plane holds
// terminal may stay unretired (the watcher retires it once the agent
// answers again: TestMigrateTargetSledAgentKilled revives the agent and
// checks that, with no exception left).
func (f *sagaFleet) requireNoLeaks() {
	t := f.t
	t.Helper()
	ctx := context.Background()
	pool := f.store.Pool()
	cp := f.controlPlane()
	require.NotNil(t, cp)
	dead := f.deadSleds()
	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		count := func(what, q string, args ...any) {
			var n int
			if !assert.NoError(c, pool.QueryRow(ctx, q, args...).Scan(&n), what) {
				return
			}
			assert.Zero(c, n, what)
		}
		count("sagas in flight", "SELECT count(*) FROM saga WHERE state IN ('running', 'unwinding')")
		count("sagas stuck", "SELECT count(*) FROM saga WHERE state = 'stuck'")
		count("updater locks held", "SELECT count(*) FROM instance WHERE updater_id IS NOT NULL")
		count("migration pointers", "SELECT count(*) FROM instance WHERE migration_id IS NOT NULL OR target_vmm_id IS NOT NULL")
		count("reservations of VMMs not active", `SELECT count(*) FROM sled_reservation r
			WHERE NOT EXISTS (SELECT 1 FROM instance i WHERE i.active_vmm_id = r.vmm_id AND i.state = 'vmm')`)
		count("active VMMs without a reservation", `SELECT count(*) FROM instance i
			WHERE i.state = 'vmm' AND NOT EXISTS (SELECT 1 FROM sled_reservation r WHERE r.vmm_id = i.active_vmm_id)`)
		count("VMMs not retired and not active", `SELECT count(*) FROM vmm v WHERE v.time_retired IS NULL
			AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.active_vmm_id = v.id)
			AND NOT (v.sled_id = ANY($1) AND v.state IN ('failed', 'destroyed', 'saga_unwound'))`, dead)

		active := map[uuid.UUID]uuid.UUID{} // active VMM -> its sled
		rows, err := pool.Query(ctx, `SELECT v.id, v.sled_id FROM instance i JOIN vmm v ON v.id = i.active_vmm_id WHERE i.state = 'vmm'`)
		if !assert.NoError(c, err) {
			return
		}
		for rows.Next() {
			var id, sl uuid.UUID
			assert.NoError(c, rows.Scan(&id, &sl))
			active[id] = sl
		}
		rows.Close()
		seen := map[uuid.UUID]bool{}
		for _, s := range f.sleds {
			if slices.Contains(dead, s.id) {
				continue
			}
			for _, v := range s.agent.List() {
				sl, ok := active[v.ID]
				assert.True(c, ok && sl == s.id, "VMM %s (%s) is registered on sled %s but is no active VMM there", v.ID, v.State.State, s.id)
				seen[v.ID] = true
			}
		}
		for id, sl := range active {
			assert.True(c, seen[id] || slices.Contains(dead, sl), "active VMM %s is registered on no sled", id)
		}

		ins, err := f.store.Instances(ctx)
		if !assert.NoError(c, err) {
			return
		}
		for _, in := range ins {
			v, err := cp.GetInstance(ctx, in.ID.String())
			if !assert.NoError(c, err) {
				continue
			}
			switch v.State {
			case model.VisibleStopped, model.VisibleRunning:
			case model.VisibleFailed:
				assert.NotNil(c, in.Runtime.Failure, "instance %s failed without a reason", in.Name)
			default:
				assert.Fail(c, fmt.Sprintf("instance %s is %s, not a state the user can act on", in.Name, v.State))
			}
		}
	}, 20*time.Second, 20*time.Millisecond, "something leaked")
}
