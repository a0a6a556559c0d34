package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/spec"
)

// rig is a Runtime over fake VMs behind the real handler on a loopback
// HTTP server.
type rig struct {
	rt   *Runtime
	vms  *fakeVMs
	srv  *httptest.Server
	c    *api.ClientWithResponses
	addr string // host:port of the HTTP server
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newRig starts a rig whose guests behave as g; opt may change the
// runtime's options.
func newRig(t testing.TB, g fakeGuest, opt ...func(*RuntimeOptions)) *rig {
	t.Helper()
	vms := newFakeVMs(g)
	o := RuntimeOptions{
		Log: quietLog(), NewVM: vms.New,
		HostCapacity: func() (HostCapacity, error) { return HostCapacity{CPUs: 8, MemoryMiB: 1 << 16}, nil },
	}
	for _, f := range opt {
		f(&o)
	}
	rt := NewRuntime(o)
	srv, c := start(t, rt)
	t.Cleanup(rt.Close)
	return &rig{rt: rt, vms: vms, srv: srv, c: c, addr: strings.TrimPrefix(srv.URL, "http://")}
}

// testSpec is a small VM with COM1.
func testSpec(t testing.TB, cpus uint32, memMiB uint64) *spec.Spec {
	t.Helper()
	s, err := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: cpus, MemoryMiB: memMiB, Chipset: spec.ChipsetI440FX}).
		Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1}).
		SetBoot(spec.Boot{Image: "ticker"}).Build()
	require.NoError(t, err)
	return &s
}

func specRequest(t *testing.T, name string) EnsureRequest {
	return EnsureRequest{Properties: Properties{ID: uuid.New(), Name: name}, Spec: testSpec(t, 1, 32)}
}

// ensure creates an instance from a new spec request and returns it with
// its VM.
func (g *rig) ensure(t *testing.T, name string) (EnsureRequest, *fakeVM) {
	t.Helper()
	req := specRequest(t, name)
	inst, created, err := g.rt.Ensure(context.Background(), req)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, StateCreating, inst.State)
	return req, g.vms.last()
}

// run asks to run the instance and waits until it runs.
func (g *rig) run(t *testing.T) {
	t.Helper()
	require.NoError(t, request(g.rt, RequestRun))
	waitState(t, g.rt, StateRunning)
}

// waitState waits (at most 10 s) on the state monitor until the instance is
// in state want, and returns it.
func waitState(t testing.TB, core Core, want State) Instance {
	t.Helper()
	return waitStateWithin(t, core, want, 10*time.Second)
}

// waitStateWithin is waitState with a bound of d.
func waitStateWithin(t testing.TB, core Core, want State, d time.Duration) Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var gen uint64
	for {
		inst, _, _, err := core.WaitGen(ctx, gen)
		require.NoError(t, err)
		if inst.State == want {
			return inst
		}
		require.NoError(t, ctx.Err(), "waiting for %s; the instance is %s (%s)", want, inst.State, inst.FailureReason)
		gen = inst.Gen
	}
}

// gate returns a channel for holding a fake VM's New or Close, and a
// function that opens it; the gate is opened at the end of the test too (so
// that a failed test does not leave the runtime's Close waiting).
func gate(t *testing.T) (chan struct{}, func()) {
	ch := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(ch) }) }
	t.Cleanup(open)
	return ch, open
}

// historyText is the instance's whole kept console output.
func historyText(t *testing.T, core Core) string {
	t.Helper()
	h, err := core.SerialHistory(context.Background(), SerialQuery{FromStart: u64(0), MaxBytes: 1 << 20})
	require.NoError(t, err)
	return string(h.Data)
}

// waitOutput waits until the console history holds s.
func waitOutput(t *testing.T, core Core, s string) {
	t.Helper()
	require.Eventually(t, func() bool {
		h, err := core.SerialHistory(context.Background(), SerialQuery{FromStart: u64(0), MaxBytes: 1 << 20})
		return err == nil && strings.Contains(string(h.Data), s)
	}, 10*time.Second, time.Millisecond, "console output %q", s)
}

// allowedNext is the State documentation's table: the states that may
// follow each state.
var allowedNext = map[State][]State{
	StateCreating:  {StateStarting, StateStopping, StateMigrating},
	StateStarting:  {StateRunning, StateFailed},
	StateRunning:   {StateStopping, StateRebooting, StateMigrating, StateFailed},
	StateRebooting: {StateRunning, StateStopping, StateFailed},
	StateMigrating: {StateRunning, StateDestroyed, StateStopping, StateFailed},
	StateStopping:  {StateStopped},
	StateStopped:   {StateDestroyed},
	StateFailed:    {},
	StateDestroyed: {},
}

// watchAll follows the state monitor from gen 0 until the instance reaches
// final (at most 10 s), and returns every transition it saw; it fails if a
// generation was skipped. It fails nothing itself, so that it can run on
// its own goroutine.
func watchAll(core Core, final State) ([]Transition, error) { return watchFrom(core, 0, final) }

// watchFrom is watchAll from generation gen on.
func watchFrom(core Core, gen uint64, final State) ([]Transition, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var all []Transition
	for {
		inst, _, hist, err := core.WaitGen(ctx, gen)
		if err != nil {
			return all, err
		}
		if ctx.Err() != nil {
			return all, fmt.Errorf("waiting for %s; seen %v", final, statesOf(all))
		}
		for _, tr := range hist {
			if tr.Gen != gen+1 {
				return all, fmt.Errorf("generation %d follows %d: %v", tr.Gen, gen, hist)
			}
			gen = tr.Gen
			all = append(all, tr)
		}
		if inst.Gen != gen {
			return all, fmt.Errorf("the history ends at %d, the instance is at %d", gen, inst.Gen)
		}
		if inst.State == final {
			return all, nil
		}
	}
}

func statesOf(ts []Transition) []State {
	out := make([]State, len(ts))
	for i, tr := range ts {
		out[i] = tr.State
	}
	return out
}

// TestLifecycleTransitions drives an instance through its whole life and
// checks, from the state monitor's history, that each change bumps the
// generation by exactly one, that every change is one the State table
// allows, and that stop shows stopping, stopped and destroyed.
func TestLifecycleTransitions(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.ensure(t, "life")
	type result struct {
		all []Transition
		err error
	}
	done := make(chan result, 1)
	go func() {
		all, err := watchAll(g.rt, StateDestroyed)
		done <- result{all, err}
	}()

	g.run(t)
	require.NoError(t, request(g.rt, RequestReboot))
	waitState(t, g.rt, StateRunning)
	require.NoError(t, request(g.rt, RequestStop))
	res := <-done
	require.NoError(t, res.err)
	all := res.all

	require.Equal(t, []State{StateCreating, StateStarting, StateRunning, StateRebooting, StateRunning,
		StateStopping, StateStopped, StateDestroyed}, statesOf(all))
	for i := 1; i < len(all); i++ {
		require.Contains(t, allowedNext[all[i-1].State], all[i].State, "%s -> %s", all[i-1].State, all[i].State)
		require.False(t, all[i].At.Before(all[i-1].At), "times in order")
	}
	require.True(t, g.vms.last().closed(), "the VM is released once destroyed")

	// The monitor's history is what a late watcher gets too.
	_, _, hist, err := g.rt.WaitGen(context.Background(), 0)
	require.NoError(t, err)
	require.Equal(t, all, hist)
	_, _, hist, err = g.rt.WaitGen(context.Background(), all[5].Gen)
	require.NoError(t, err)
	require.Equal(t, all[6:], hist, "only the transitions after the generation asked")
}

// TestHistoryKeepsTheLast32: a long life keeps the most recent transitions,
// still one generation apart, ending at the instance's generation.
func TestHistoryKeepsTheLast32(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.ensure(t, "reboots")
	g.run(t)
	for range 20 {
		require.NoError(t, request(g.rt, RequestReboot))
		waitState(t, g.rt, StateRunning)
	}
	inst, _, hist, err := g.rt.WaitGen(context.Background(), 0)
	require.NoError(t, err)
	require.Len(t, hist, maxHistory)
	require.Equal(t, inst.Gen, hist[len(hist)-1].Gen)
	for i := 1; i < len(hist); i++ {
		require.Equal(t, hist[i-1].Gen+1, hist[i].Gen)
	}
}

// TestStateMonitorWakesOnChangeAndTimesOut: a monitor at the current
// generation waits until its deadline and then answers the instance as it
// is; a change wakes it at once.
func TestStateMonitorWakesOnChangeAndTimesOut(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.ensure(t, "monitor")
	inst, err := g.rt.Instance(context.Background())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	got, _, hist, err := g.rt.WaitGen(ctx, inst.Gen)
	waited := ctx.Err()
	cancel()
	require.NoError(t, err)
	require.ErrorIs(t, waited, context.DeadlineExceeded, "it waited until the deadline")
	require.Equal(t, inst, got)
	require.Empty(t, hist)

	woke := make(chan []Transition, 1)
	go func() {
		got, _, hist, err := g.rt.WaitGen(context.Background(), inst.Gen)
		assert.NoError(t, err)
		assert.Greater(t, got.Gen, inst.Gen)
		woke <- hist
	}()
	require.NoError(t, request(g.rt, RequestRun))
	select {
	case hist := <-woke:
		require.NotEmpty(t, hist)
		require.Equal(t, inst.Gen+1, hist[0].Gen)
		require.Equal(t, StateStarting, hist[0].State)
	case <-time.After(10 * time.Second):
		t.Fatal("the monitor did not wake on the change")
	}

	// An older generation answers at once.
	got, _, hist, err = g.rt.WaitGen(context.Background(), 0)
	require.NoError(t, err)
	require.Greater(t, got.Gen, uint64(1))
	require.NotEmpty(t, hist)
}

// TestEndedInstancesFreeTheServer: a failed instance (its guest crashed)
// and a destroyed one (its guest powered off) each leave the server free
// for a new ensure; a live one does not, unless the request is the same.
func TestEndedInstancesFreeTheServer(t *testing.T) {
	g := newRig(t, fakeGuest{})
	req, vm := g.ensure(t, "first")

	_, created, err := g.rt.Ensure(context.Background(), req)
	require.NoError(t, err)
	require.False(t, created, "the same request is harmless")
	_, _, err = g.rt.Ensure(context.Background(), specRequest(t, "other"))
	require.ErrorIs(t, err, ErrInstanceExists)

	g.run(t)
	_, _, err = g.rt.Ensure(context.Background(), specRequest(t, "other"))
	require.ErrorIs(t, err, ErrInstanceExists)

	vm.crash(errors.New("triple fault"))
	inst := waitState(t, g.rt, StateFailed)
	require.Contains(t, inst.FailureReason, "triple fault")
	require.Eventually(t, vm.closed, 10*time.Second, time.Millisecond, "a failed VM is released")
	for _, r := range []Requested{RequestRun, RequestStop, RequestReboot} {
		var te *TransitionError
		require.ErrorAs(t, request(g.rt, r), &te, r.String())
	}

	_, vm = g.ensure(t, "second")
	g.run(t)
	vm.powerOff(0)
	waitState(t, g.rt, StateDestroyed)
	require.True(t, vm.closed())

	_, vm = g.ensure(t, "third")
	g.run(t)
	require.Equal(t, 3, g.vms.count())
}

// TestNewInstanceHasOnlyItsOwnPast: after an instance lived (printed on its
// console, migrated out and failed, was stopped), a new instance shows none
// of it: an empty console history and console, no migrations, a history of
// transitions that starts at its creation.
func TestNewInstanceHasOnlyItsOwnPast(t *testing.T) {
	g := newRig(t, fakeGuest{})
	_, vm := g.ensure(t, "old")
	g.run(t)
	vm.step()
	waitOutput(t, g.rt, "tick 1\n")
	// A migration that fails leaves its trace on the old instance.
	id, secret := armSource(t, g.rt)
	conn := openMigrationStream(t, g.addr, id, secret)
	conn.Close()
	require.Eventually(t, func() bool {
		st, err := g.rt.MigrationStatus(context.Background())
		return err == nil && st.Out != nil && st.Out.Phase == PhaseFailed
	}, 10*time.Second, time.Millisecond)
	waitState(t, g.rt, StateRunning)
	old, err := g.rt.Instance(context.Background())
	require.NoError(t, err)
	require.NoError(t, request(g.rt, RequestStop))
	waitState(t, g.rt, StateDestroyed)

	_, _ = g.ensure(t, "new")
	h, err := g.rt.SerialHistory(context.Background(), SerialQuery{MaxBytes: 1 << 20})
	require.NoError(t, err)
	require.Empty(t, h.Data, "no output of the old VM")
	require.NotNil(t, h.Data)
	require.Zero(t, h.Start)
	require.Zero(t, h.End)

	st, err := g.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.Nil(t, st.Out, "no migration of the old instance")
	require.Nil(t, st.In)
	inst, mig, hist, err := g.rt.WaitGen(context.Background(), 0)
	require.NoError(t, err)
	require.Nil(t, mig.Out)
	require.Greater(t, inst.Gen, old.Gen, "generations keep growing across instances")
	require.Equal(t, []State{StateCreating}, statesOf(hist), "only the new instance's transitions")

	// Over HTTP too.
	mr, err := g.c.InstanceMigrationStatusWithResponse(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, mr.StatusCode())
	require.Nil(t, mr.JSON200.MigrationOut)

	// The console of the new instance gets the new VM's output only.
	c, err := g.rt.SerialAttach(context.Background())
	require.NoError(t, err)
	defer c.Close()
	g.run(t)
	select {
	case b := <-c.Output():
		require.Equal(t, "ticker ready\n", string(b))
	case <-time.After(10 * time.Second):
		t.Fatal("no output")
	}
	require.Equal(t, "ticker ready\n", historyText(t, g.rt))
}

// TestEnsureBuildsOffTheLock: while a VM is being built (the fake's
// constructor is held), the server answers; a second ensure waits for the
// first and is then judged as usual; one that cannot wait gets
// ErrEnsureInProgress.
func TestEnsureBuildsOffTheLock(t *testing.T) {
	g := newRig(t, fakeGuest{})
	held, release := gate(t)
	entered := make(chan struct{}, 4)
	g.vms.mu.Lock()
	g.vms.gate, g.vms.entered = held, entered
	g.vms.mu.Unlock()

	req := specRequest(t, "slow")
	first := make(chan error, 1)
	go func() {
		_, created, err := g.rt.Ensure(context.Background(), req)
		if err == nil && !created {
			err = errors.New("not created")
		}
		first <- err
	}()
	<-entered

	// Reads answer meanwhile (a read that waited for the build would time
	// out here).
	getCtx, getCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer getCancel()
	r, err := g.c.InstanceGetWithResponse(getCtx)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, r.StatusCode())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, _, _, err = g.rt.WaitGen(ctx, 0)
	cancel()
	require.ErrorIs(t, err, ErrNoInstance)

	// The same request waits for the first, then is "already there".
	second := make(chan bool, 1)
	go func() {
		_, created, err := g.rt.Ensure(context.Background(), req)
		assert.NoError(t, err)
		second <- created
	}()
	// One that cannot wait is told the server is busy.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, _, err = g.rt.Ensure(ctx, specRequest(t, "impatient"))
	cancel()
	require.ErrorIs(t, err, ErrEnsureInProgress)
	require.Equal(t, http.StatusConflict, classify(err).Status)
	require.Equal(t, CodeEnsureInProgress, classify(err).Code)

	release()
	require.NoError(t, <-first)
	require.False(t, <-second)
	_, _, err = g.rt.Ensure(context.Background(), specRequest(t, "different"))
	require.ErrorIs(t, err, ErrInstanceExists)
	require.Equal(t, 1, g.vms.count())
}

// TestFailedBuildLeavesNothing: an ensure whose VM cannot be built leaves no
// instance, and the next ensure is judged as on an empty server.
func TestFailedBuildLeavesNothing(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.vms.mu.Lock()
	g.vms.failNew = errors.New("no such disk")
	g.vms.mu.Unlock()
	_, _, err := g.rt.Ensure(context.Background(), specRequest(t, "broken"))
	var vme *VMError
	require.ErrorAs(t, err, &vme)
	_, err = g.rt.Instance(context.Background())
	require.ErrorIs(t, err, ErrNoInstance)

	g.vms.mu.Lock()
	g.vms.failNew = nil
	g.vms.mu.Unlock()
	g.ensure(t, "fine")
}

// TestReleaseOffTheLock: while a VM is being closed (slow: it unmaps RAM),
// the server answers; a stopped instance is destroyed once its VM is
// closed, and a new ensure after a failed one waits for the close.
func TestReleaseOffTheLock(t *testing.T) {
	g := newRig(t, fakeGuest{})
	held, release := gate(t)
	g.vms.mu.Lock()
	g.vms.closeGate = held
	g.vms.mu.Unlock()
	_, vm := g.ensure(t, "closing")
	g.run(t)
	require.NoError(t, request(g.rt, RequestStop))
	// Reads answer, each within a second, while the VM is being closed
	// (one that waited for the close would time out).
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := g.c.InstanceGetWithResponse(ctx)
		return err == nil && r.JSON200 != nil && r.JSON200.State == api.InstanceStateStopped
	}, 10*time.Second, time.Millisecond, "stopped until the VM is let go")
	require.False(t, vm.closed())
	release()
	waitState(t, g.rt, StateDestroyed)
	require.True(t, vm.closed())

	held, release = gate(t)
	g.vms.mu.Lock()
	g.vms.closeGate = held
	g.vms.mu.Unlock()
	_, vm = g.ensure(t, "crashing")
	g.run(t)
	vm.crash(errors.New("emulation failure"))
	waitState(t, g.rt, StateFailed)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, _, err := g.rt.Ensure(ctx, specRequest(t, "next"))
	cancel()
	require.ErrorIs(t, err, ErrEnsureInProgress, "the failed VM is still being let go")
	require.Equal(t, 2, g.vms.count(), "nothing built meanwhile")
	release()
	g.ensure(t, "next")
}

// TestCapacity: a VM the host cannot back is refused with 409
// insufficient_capacity, saying what fits, and nothing is built; a VM that
// just fits is built; a host whose capacity is unknown refuses nothing.
func TestCapacity(t *testing.T) {
	host := HostCapacity{CPUs: 2, MemoryMiB: 100}
	g := newRig(t, fakeGuest{}, func(o *RuntimeOptions) {
		o.HostCapacity = func() (HostCapacity, error) { return host, nil }
	})
	ensure := func(cpus uint32, mem uint64) error {
		_, _, err := g.rt.Ensure(context.Background(), EnsureRequest{
			Properties: Properties{ID: uuid.New(), Name: "cap"}, Spec: testSpec(t, cpus, mem)})
		return err
	}
	for _, c := range []struct {
		cpus uint32
		mem  uint64
		msg  string
	}{
		{1, 101, "board.memory_mb: 101 MiB asked, this host can back at most 100 MiB"},
		{1, 1 << 20, "board.memory_mb: 1048576 MiB asked, this host can back at most 100 MiB"},
		{3, 64, "board.cpus: 3 asked, this host can back at most 2"},
	} {
		err := ensure(c.cpus, c.mem)
		var ce *CapacityError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, c.msg, err.Error())
		ae := classify(err)
		require.Equal(t, http.StatusConflict, ae.Status)
		require.Equal(t, CodeInsufficientCapacity, ae.Code)
		require.Equal(t, c.msg, ae.Message)
	}
	require.Zero(t, g.vms.count(), "nothing was built")
	_, err := g.rt.Instance(context.Background())
	require.ErrorIs(t, err, ErrNoInstance)

	// Over HTTP.
	body := `{"properties":{"id":"` + uuid.NewString() + `","name":"big"},"spec":{"board":{"cpus":1,"memory_mb":4096,"chipset":"i440fx"},"components":{}}}`
	r, err := g.c.InstanceEnsureWithBodyWithResponse(context.Background(), "application/json", strings.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, r.StatusCode(), string(r.Body))
	require.Contains(t, string(r.Body), `"error_code":"insufficient_capacity"`)
	require.Contains(t, string(r.Body), "board.memory_mb: 4096 MiB asked, this host can back at most 100 MiB")

	require.NoError(t, ensure(2, 100), "exactly what fits")
	require.Equal(t, 1, g.vms.count())

	g2 := newRig(t, fakeGuest{}, func(o *RuntimeOptions) {
		o.HostCapacity = func() (HostCapacity, error) { return HostCapacity{}, errors.New("no /proc") }
	})
	_, _, err = g2.rt.Ensure(context.Background(), EnsureRequest{
		Properties: Properties{ID: uuid.New(), Name: "unknown"}, Spec: testSpec(t, 4, 1024)})
	require.NoError(t, err, "capacity unknown: nothing refused")
}

// TestDecideEveryCase sweeps decide over every state, request, VM and
// outbound migration: outside creating and migrating, neither the VM nor
// an outbound migration changes a decision; a creating instance without a
// VM (a migration target waiting for its source) refuses everything; a
// migrating one refuses everything but a stop that can abort an outbound
// migration.
func TestDecideEveryCase(t *testing.T) {
	reqs := []Requested{RequestRun, RequestStop, RequestReboot}
	for s := range stateNames {
		for _, req := range reqs {
			base := decide(s, req, true, false)
			for _, hasVM := range []bool{true, false} {
				for _, out := range []bool{true, false} {
					got := decide(s, req, hasVM, out)
					switch {
					case s == StateCreating && !hasVM:
						require.Equal(t, refuse, got, "%s/%s without a VM", s, req)
					case s == StateMigrating && req == RequestStop && out && hasVM:
						require.Equal(t, abortAndStop, got, "%s/%s", s, req)
					case s == StateMigrating:
						require.Equal(t, refuse, got, "%s/%s", s, req)
					default:
						require.Equal(t, base, got, "%s/%s vm=%v out=%v", s, req, hasVM, out)
					}
					if got == abortAndStop {
						require.Contains(t, allowedNext[s], StateStopping, "%s/%s", s, req)
					}
					if got == honour {
						// What an honoured request leads to is allowed.
						next := map[Requested]State{RequestRun: StateStarting, RequestStop: StateStopping, RequestReboot: StateRebooting}[req]
						require.Contains(t, allowedNext[s], next, "%s/%s", s, req)
					}
				}
			}
		}
	}
}

// holdBuilds makes g's fake VMs wait in New until the returned function is
// called (or the test ends); entered yields once per New that waits.
func holdBuilds(t *testing.T, g *rig) (entered chan struct{}, release func()) {
	held, release := gate(t)
	entered = make(chan struct{}, 4)
	g.vms.mu.Lock()
	g.vms.gate, g.vms.entered = held, entered
	g.vms.mu.Unlock()
	return entered, release
}

// TestEnsureInProgressReachesHTTP: an ensure that arrives while another's
// VM is being built waits at most ensureWait, even when its request has no
// deadline, and answers 409 ensure_in_progress; once the build is done the
// usual answers come back.
func TestEnsureInProgressReachesHTTP(t *testing.T) {
	old := ensureWait
	ensureWait = 100 * time.Millisecond
	defer func() { ensureWait = old }()

	g := newRig(t, fakeGuest{})
	entered, release := holdBuilds(t, g)
	first := make(chan error, 1)
	go func() {
		_, _, err := g.rt.Ensure(context.Background(), EnsureRequest{
			Properties: Properties{ID: uuid.MustParse("5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01"), Name: "vm1"},
			Spec:       testSpec(t, 1, 32)})
		first <- err
	}()
	<-entered

	// The client waits far longer than the server may: only the server's
	// bound can answer in time.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, body := range []string{ensureBody(validSpecJSON), `{"properties":{"id":"` + uuid.NewString() +
		`","name":"other"},"spec":` + validSpecJSON + `}`} {
		start := time.Now()
		r, err := g.c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		require.Equal(t, http.StatusConflict, r.StatusCode(), string(r.Body))
		require.NotNil(t, r.JSON409)
		require.Equal(t, CodeEnsureInProgress, r.JSON409.ErrorCode)
		require.Less(t, time.Since(start), 10*time.Second)
		require.GreaterOrEqual(t, time.Since(start), ensureWait, "it waited for the build first")
	}

	release()
	require.NoError(t, <-first)
	r, err := g.c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(ensureBody(validSpecJSON)))
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, r.StatusCode(), "a different instance now: %s", r.Body)
	require.Equal(t, CodeInstanceExists, r.JSON409.ErrorCode)
	require.Equal(t, 1, g.vms.count())
}

// TestEndedInstanceRetryIsStable: an ensure identical to the one that made
// an instance that has since ended answers that ended instance, 200, the
// same every time; a different one replaces it.
func TestEndedInstanceRetryIsStable(t *testing.T) {
	g := newRig(t, fakeGuest{})
	req, _ := g.ensure(t, "ends")
	g.run(t)
	require.NoError(t, request(g.rt, RequestStop))
	ended := waitState(t, g.rt, StateDestroyed)
	for range 3 {
		inst, created, err := g.rt.Ensure(context.Background(), req)
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, ended, inst)
	}
	_, vm := g.ensure(t, "next")
	require.False(t, vm.closed())
	_, _, err := g.rt.Ensure(context.Background(), req)
	require.ErrorIs(t, err, ErrInstanceExists, "the old request is now a different one")
}

// TestCloseDoesNotWaitForeverForABuild: Close waits for a VM being built
// at most closeWait; the build, once done, is closed rather than
// installed.
func TestCloseDoesNotWaitForeverForABuild(t *testing.T) {
	old := closeWait
	closeWait = 100 * time.Millisecond
	defer func() { closeWait = old }()

	g := newRig(t, fakeGuest{})
	entered, release := holdBuilds(t, g)
	built := make(chan error, 1)
	go func() {
		_, _, err := g.rt.Ensure(context.Background(), specRequest(t, "late"))
		built <- err
	}()
	<-entered

	closed := make(chan struct{})
	go func() {
		g.rt.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for the build")
	}

	release()
	require.ErrorIs(t, <-built, ErrShuttingDown)
	require.Eventually(t, func() bool { return g.vms.last() != nil && g.vms.last().closed() }, 10*time.Second,
		time.Millisecond, "the late VM is closed")
	_, err := g.rt.Instance(context.Background())
	require.ErrorIs(t, err, ErrNoInstance, "nothing was installed")
}

// request asks rt for a state change, as RequestState without the
// generation.
func request(rt *Runtime, r Requested) error {
	_, err := rt.RequestState(context.Background(), r)
	return err
}

// TestRequestStateAnswersItsGeneration: a request that moves the instance
// answers the generation of the state it moved it to (seen in the history
// at that generation); one already under way answers the current
// generation; one refused answers none.
func TestRequestStateAnswersItsGeneration(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.ensure(t, "gen")
	ctx := context.Background()
	gen, err := g.rt.RequestState(ctx, RequestRun)
	require.NoError(t, err)
	inst, _, history, err := g.rt.WaitGen(ctx, gen-1)
	require.NoError(t, err)
	require.NotEmpty(t, history)
	require.Equal(t, gen, history[0].Gen)
	require.Equal(t, StateStarting, history[0].State, "the run took effect at the generation it answered")
	running := waitState(t, g.rt, StateRunning)

	again, err := g.rt.RequestState(ctx, RequestRun)
	require.NoError(t, err)
	require.Equal(t, running.Gen, again, "a run while running is done already, at the current generation")
	require.GreaterOrEqual(t, inst.Gen, gen)

	stop, err := g.rt.RequestState(ctx, RequestStop)
	require.NoError(t, err)
	require.Greater(t, stop, running.Gen)
	waitState(t, g.rt, StateDestroyed)
	refused, err := g.rt.RequestState(ctx, RequestReboot)
	var te *TransitionError
	require.ErrorAs(t, err, &te)
	require.Zero(t, refused)
}
