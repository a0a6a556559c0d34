package saga_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/db"
	"github.com/wagglevm/waggle/controlplane/saga"
	"github.com/wagglevm/waggle/internal/pgembed/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// journal records what steps did, in order.
type journal struct {
	mu   sync.Mutex
	ops  []string
	fail map[string]int // undo name -> failures left (-1: always)
}

func (j *journal) add(op string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.ops = append(j.ops, op)
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.ops)
}

func (j *journal) count(op string) int {
	n := 0
	for _, o := range j.list() {
		if o == op {
			n++
		}
	}
	return n
}

// kind is a saga of four steps a..d; each Do records "do X" and puts X in
// the data; each undo checks it sees the data of its step and records
// "undo X". Step c fails when failC.
func (j *journal) kind(failC bool) saga.Kind {
	step := func(name string) saga.Step {
		return saga.Step{Name: name,
			Do: func(ctx context.Context, s *saga.Ctx) error {
				j.add("do " + name)
				if name == "c" && failC {
					return errors.New("c refuses")
				}
				var p struct{ N int }
				if err := s.Params(&p); err != nil {
					return err
				}
				return s.Put(name, p.N)
			},
			Undo: func(ctx context.Context, s *saga.Ctx) error {
				j.mu.Lock()
				left := j.fail["undo "+name]
				if left != 0 {
					j.fail["undo "+name] = left - 1
					j.mu.Unlock()
					j.add("undo " + name + " failed")
					return errors.New("undo refuses")
				}
				j.mu.Unlock()
				var n int
				ok, err := s.Get(name, &n)
				if err != nil {
					return err
				}
				j.add(fmt.Sprintf("undo %s (data %v)", name, ok))
				return nil
			}}
	}
	return saga.Kind{Name: "test", Steps: []saga.Step{step("a"), step("b"), step("c"), step("d")}}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type rig struct {
	t   *testing.T
	log *db.DB
	ctx context.Context
}

func newRig(t *testing.T) *rig {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	d, err := db.Open(ctx, pgtest.Database(t), db.WithLogger(quiet()))
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return &rig{t: t, log: d, ctx: ctx}
}

// executor runs an executor until the test ends (or it crashes); the
// channel yields what Run returned.
func (r *rig) executor(o saga.Options) (*saga.Executor, <-chan error) {
	o.Log = r.log
	o.Logger = quiet()
	if o.Poll == 0 {
		o.Poll = 20 * time.Millisecond
	}
	if o.UndoBackoff == 0 {
		o.UndoBackoff = time.Millisecond
	}
	e, err := saga.New(o)
	require.NoError(r.t, err)
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx); close(done) }()
	r.t.Cleanup(func() { cancel(); <-done })
	return e, done
}

func (r *rig) wait(id uuid.UUID) saga.Record {
	ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
	defer cancel()
	rec, err := saga.Wait(ctx, r.log, id)
	require.NoError(r.t, err)
	return rec
}

func steps(states ...saga.StepState) []saga.StepState { return states }

func TestSagaRunsItsStepsInOrder(t *testing.T) {
	r := newRig(t)
	j := &journal{fail: map[string]int{}}
	e, _ := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(false)}})
	rec, err := e.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 7}, false)
	require.NoError(t, err)
	got := r.wait(rec.ID)
	require.Equal(t, saga.Done, got.State)
	require.Equal(t, steps(saga.StepDone, saga.StepDone, saga.StepDone, saga.StepDone), got.Steps)
	require.Equal(t, []string{"do a", "do b", "do c", "do d"}, j.list())
	require.JSONEq(t, `{"a":7,"b":7,"c":7,"d":7}`, string(got.Data))
	require.Empty(t, got.Error)
}

// A failed step unwinds the saga: its own undo (its Do may have half
// happened) and every done step's, in reverse order, each seeing the data
// its Do recorded.
func TestFailedStepUnwindsInReverse(t *testing.T) {
	r := newRig(t)
	j := &journal{fail: map[string]int{}}
	e, _ := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(true)}})
	rec, err := e.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 1}, false)
	require.NoError(t, err)
	got := r.wait(rec.ID)
	require.Equal(t, saga.Unwound, got.State)
	require.Equal(t, []string{"do a", "do b", "do c", "undo c (data false)", "undo b (data true)", "undo a (data true)"}, j.list())
	require.Equal(t, steps(saga.StepUndone, saga.StepUndone, saga.StepFailed, saga.StepPending), got.Steps)
	require.Equal(t, -1, got.Step)
	require.Contains(t, got.Error, "step c: c refuses")
}

// Faults injected before a Do (the step never runs) and after it (its
// effect happened) both unwind.
func TestInjectedFailures(t *testing.T) {
	for _, phase := range []saga.Phase{saga.BeforeDo, saga.AfterDo} {
		t.Run(string(phase), func(t *testing.T) {
			r := newRig(t)
			j := &journal{fail: map[string]int{}}
			inject := func(kind, step string, p saga.Phase) error {
				if step == "b" && p == phase {
					return errors.New("injected")
				}
				return nil
			}
			e, _ := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(false)}, Inject: inject})
			rec, err := e.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 1}, false)
			require.NoError(t, err)
			got := r.wait(rec.ID)
			require.Equal(t, saga.Unwound, got.State)
			// After its Do, the failed step's undo sees what the Do recorded.
			want := []string{"do a", "do b", "undo b (data true)", "undo a (data true)"}
			if phase == saga.BeforeDo {
				want = []string{"do a", "undo b (data false)", "undo a (data true)"}
			}
			require.Equal(t, want, j.list())
			require.Contains(t, got.Error, "injected")
		})
	}
}

// An undo that keeps failing is retried UndoAttempts times, then the saga
// is stuck, saying why; the undos before it in the order ran, those after
// did not.
func TestUndoRetriesThenStuck(t *testing.T) {
	r := newRig(t)
	j := &journal{fail: map[string]int{"undo b": -1}}
	e, _ := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(true)}, UndoAttempts: 4})
	rec, err := e.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 1}, false)
	require.NoError(t, err)
	got := r.wait(rec.ID)
	require.Equal(t, saga.Stuck, got.State)
	require.Equal(t, 4, j.count("undo b failed"))
	require.Equal(t, 0, j.count("undo a (data true)"), "an undo ran past a stuck one")
	require.Contains(t, got.Error, "step c: c refuses")
	require.Contains(t, got.Error, "undo of step b failed 4 times")
	require.Equal(t, steps(saga.StepDone, saga.StepDone, saga.StepFailed, saga.StepPending), got.Steps)
}

// An undo that fails a few times, then works, lets the saga unwind.
func TestUndoRetriesThenUnwinds(t *testing.T) {
	r := newRig(t)
	j := &journal{fail: map[string]int{"undo b": 2}}
	e, _ := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(true)}, UndoAttempts: 4})
	rec, err := e.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 1}, false)
	require.NoError(t, err)
	require.Equal(t, saga.Unwound, r.wait(rec.ID).State)
	require.Equal(t, 2, j.count("undo b failed"))
	require.Equal(t, 1, j.count("undo a (data true)"))
}

// crashAt injects a crash once, at step's phase.
func crashAt(step string, phase saga.Phase) saga.InjectFunc {
	var once sync.Once
	return func(kind, s string, p saga.Phase) error {
		var err error
		if s == step && p == phase {
			once.Do(func() { err = saga.ErrCrash })
		}
		return err
	}
}

// An executor that crashes stops dead; one started after it on the same
// database resumes the saga from its stored step: the step in flight
// before its record runs again, one recorded does not.
func TestCrashThenResume(t *testing.T) {
	cases := []struct {
		phase saga.Phase
		runsB int // how often b's Do ran in all
	}{{saga.AfterDo, 2}, {saga.AfterSave, 1}}
	for _, c := range cases {
		t.Run(string(c.phase), func(t *testing.T) {
			r := newRig(t)
			j := &journal{fail: map[string]int{}}
			owner := uuid.New()
			e, done := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(false)}, Owner: owner, Inject: crashAt("b", c.phase)})
			rec, err := e.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 1}, false)
			require.NoError(t, err)
			select {
			case err := <-done:
				require.ErrorIs(t, err, saga.ErrCrash)
			case <-time.After(20 * time.Second):
				t.Fatal("the executor did not stop at the crash")
			}
			stored, err := r.log.Saga(r.ctx, rec.ID)
			require.NoError(t, err)
			require.Equal(t, saga.Running, stored.State)
			wantStep := map[saga.Phase]int{saga.AfterDo: 1, saga.AfterSave: 2}[c.phase]
			require.Equal(t, wantStep, stored.Step, "the stored step after a crash at %s", c.phase)
			require.Equal(t, []string{"do a", "do b"}, j.list(), "the executor went on after its crash")

			r.executor(saga.Options{Kinds: []saga.Kind{j.kind(false)}, Owner: owner})
			got := r.wait(rec.ID)
			require.Equal(t, saga.Done, got.State)
			require.Equal(t, c.runsB, j.count("do b"))
			require.Equal(t, 1, j.count("do a"))
			require.Equal(t, 1, j.count("do d"))
		})
	}
}

// A crash while unwinding: the new executor goes on undoing, in reverse,
// from the undo in flight; no Do runs again.
func TestCrashWhileUnwindingResumesUnwinding(t *testing.T) {
	r := newRig(t)
	j := &journal{fail: map[string]int{}}
	owner := uuid.New()
	e, done := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(true)}, Owner: owner, Inject: crashAt("b", saga.BeforeUndo)})
	rec, err := e.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 1}, false)
	require.NoError(t, err)
	require.ErrorIs(t, <-done, saga.ErrCrash)
	stored, err := r.log.Saga(r.ctx, rec.ID)
	require.NoError(t, err)
	require.Equal(t, saga.Unwinding, stored.State)
	require.Equal(t, 1, stored.Step)

	r.executor(saga.Options{Kinds: []saga.Kind{j.kind(true)}, Owner: owner})
	require.Equal(t, saga.Unwound, r.wait(rec.ID).State)
	require.Equal(t, []string{"do a", "do b", "do c", "undo c (data false)", "undo b (data true)", "undo a (data true)"}, j.list())
}

// A saga whose lease another executor holds is not taken until the lease
// expires; then it is, and runs once.
func TestLeaseHeldByAnotherIsWaitedFor(t *testing.T) {
	r := newRig(t)
	j := &journal{fail: map[string]int{}}
	// Stored by an executor that does not run it, then claimed by a
	// stranger (a control plane that died) for a while.
	starter, err := saga.New(saga.Options{Log: r.log, Kinds: []saga.Kind{j.kind(false)}, Logger: quiet()})
	require.NoError(t, err)
	rec, err := starter.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": 1}, false)
	require.NoError(t, err)
	stranger := uuid.New()
	until := time.Now().Add(1500 * time.Millisecond)
	claimed, err := r.log.ClaimSagas(r.ctx, stranger, nil, time.Now(), until, 10)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	r.executor(saga.Options{Kinds: []saga.Kind{j.kind(false)}})
	assert.Never(t, func() bool { return len(j.list()) > 0 }, time.Until(until)-300*time.Millisecond, 20*time.Millisecond,
		"a saga was run while another executor's lease held")
	got := r.wait(rec.ID)
	require.Equal(t, saga.Done, got.State)
	require.Equal(t, []string{"do a", "do b", "do c", "do d"}, j.list())
	// The stranger, back, cannot store anything over it.
	got.State = saga.Running
	require.ErrorIs(t, r.log.SaveSaga(r.ctx, got, stranger, time.Now().Add(time.Minute)), saga.ErrLeaseLost)
}

// Two executors over one database run each saga once.
func TestTwoExecutorsRunEachSagaOnce(t *testing.T) {
	r := newRig(t)
	j := &journal{fail: map[string]int{}}
	e1, _ := r.executor(saga.Options{Kinds: []saga.Kind{j.kind(false)}})
	r.executor(saga.Options{Kinds: []saga.Kind{j.kind(false)}})
	var ids []uuid.UUID
	for i := range 10 {
		rec, err := e1.Start(r.ctx, "test", uuid.NullUUID{}, map[string]int{"N": i}, false)
		require.NoError(t, err)
		ids = append(ids, rec.ID)
	}
	for _, id := range ids {
		require.Equal(t, saga.Done, r.wait(id).State)
	}
	require.Equal(t, 10, j.count("do a"))
	require.Equal(t, 10, j.count("do d"))
}
