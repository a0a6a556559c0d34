package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Options configure an Executor. Zero values take the defaults named.
type Options struct {
	Log   Log    // required
	Kinds []Kind // the kinds this executor runs
	// Owner identifies this executor in the sagas it owns (default: a new
	// random id). A control plane that keeps its id across restarts takes
	// its own sagas back at once; another waits for their leases to expire.
	// Two live executors must never share an id.
	Owner uuid.UUID
	// Lease is how long a claim holds without renewal (default 30 s); it is
	// renewed every third of it.
	Lease time.Duration
	// Poll spaces the looks for sagas to claim (default 1 s); a saga
	// started through this executor is looked for at once.
	Poll time.Duration
	// StepTimeout bounds each Do and each attempt of an Undo (default 5 min).
	StepTimeout time.Duration
	// UndoAttempts is how often a failing Undo is tried before the saga is
	// stuck (default 5), spaced by UndoBackoff (default 1 s), doubling up to
	// 30 s.
	UndoAttempts int
	UndoBackoff  time.Duration
	// Concurrency bounds the sagas run at once (default 64).
	Concurrency int
	// Inject, for tests, injects faults (see InjectFunc and Phase).
	Inject InjectFunc
	Logger *slog.Logger
	Now    func() time.Time
}

func (o *Options) setDefaults() error {
	if o.Log == nil {
		return errors.New("saga: a Log is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Owner == uuid.Nil {
		o.Owner = uuid.New()
	}
	def(&o.Lease, 30*time.Second)
	def(&o.Poll, time.Second)
	def(&o.StepTimeout, 5*time.Minute)
	def(&o.UndoBackoff, time.Second)
	if o.UndoAttempts <= 0 {
		o.UndoAttempts = 5
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Executor starts sagas and runs those it claims. Its methods may be
// called from many goroutines; Run runs at most once.
type Executor struct {
	o     Options
	log   *slog.Logger
	kinds map[string]Kind
	wake  chan struct{}

	mu      sync.Mutex
	running map[uuid.UUID]context.CancelFunc // guarded by mu: the sagas run here
	stop    context.CancelFunc               // guarded by mu: ends Run's context
	crashed bool                             // guarded by mu
}

// New returns an executor of the given kinds.
func New(o Options) (*Executor, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	e := &Executor{o: o, log: o.Logger, kinds: map[string]Kind{}, wake: make(chan struct{}, 1),
		running: map[uuid.UUID]context.CancelFunc{}}
	for _, k := range o.Kinds {
		if k.Name == "" || len(k.Steps) == 0 {
			return nil, fmt.Errorf("saga: kind %q: a name and steps are required", k.Name)
		}
		if _, dup := e.kinds[k.Name]; dup {
			return nil, fmt.Errorf("saga: kind %q given twice", k.Name)
		}
		e.kinds[k.Name] = k
	}
	return e, nil
}

// Owner is the id this executor claims sagas with.
func (e *Executor) Owner() uuid.UUID { return e.o.Owner }

// Kind returns a kind this executor runs.
func (e *Executor) Kind(name string) (Kind, bool) {
	k, ok := e.kinds[name]
	return k, ok
}

// Start stores a new saga of kind with params (any JSON value), for
// instance when it is valid, taking the instance's updater lock in the same
// transaction when lock is true (ErrLocked). Run claims and runs it.
func (e *Executor) Start(ctx context.Context, kind string, instance uuid.NullUUID, params any, lock bool) (Record, error) {
	k, ok := e.kinds[kind]
	if !ok {
		return Record{}, fmt.Errorf("saga: start: unknown kind %q", kind)
	}
	p, err := json.Marshal(params)
	if err != nil {
		return Record{}, fmt.Errorf("saga: start %s: encode its params: %w", kind, err)
	}
	now := e.o.Now().UTC()
	r := Record{ID: uuid.New(), Kind: kind, InstanceID: instance, Params: p, Data: json.RawMessage(`{}`), State: Running,
		Steps: make([]StepState, len(k.Steps)), LeaseUntil: now, TimeCreated: now, TimeUpdated: now}
	for i := range r.Steps {
		r.Steps[i] = StepPending
	}
	if err := e.o.Log.CreateSaga(ctx, r, lock); err != nil {
		return Record{}, fmt.Errorf("saga: start %s: %w", kind, err)
	}
	e.log.Info("saga started", "saga", r.ID, "kind", kind, "instance", instance.UUID)
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return r, nil
}

// Run claims sagas in flight (new ones, and those whose owner's lease
// expired) and runs them until ctx ends, then waits for the steps under
// way (each bounded by StepTimeout) to return. It returns ErrCrash when an
// injected crash stopped it.
func (e *Executor) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.mu.Lock()
	e.stop = cancel
	e.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.renew(ctx)
	}()
	tick := time.NewTicker(e.o.Poll)
	defer tick.Stop()
	for {
		e.claim(ctx, &wg)
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		case <-e.wake:
			continue
		}
		break
	}
	wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.crashed {
		return ErrCrash
	}
	return nil
}

// claim takes the sagas this executor may run now, and runs each.
func (e *Executor) claim(ctx context.Context, wg *sync.WaitGroup) {
	e.mu.Lock()
	skip := make([]uuid.UUID, 0, len(e.running))
	for id := range e.running {
		skip = append(skip, id)
	}
	room := e.o.Concurrency - len(e.running)
	e.mu.Unlock()
	if room <= 0 || ctx.Err() != nil {
		return
	}
	now := e.o.Now().UTC()
	recs, err := e.o.Log.ClaimSagas(ctx, e.o.Owner, skip, now, now.Add(e.o.Lease), room)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("saga: could not claim sagas; trying again", "err", err)
		}
		return
	}
	for _, r := range recs {
		sctx, cancel := context.WithCancel(ctx)
		e.mu.Lock()
		e.running[r.ID] = cancel
		e.mu.Unlock()
		wg.Add(1)
		go func(r Record) {
			defer wg.Done()
			defer func() {
				e.mu.Lock()
				delete(e.running, r.ID)
				e.mu.Unlock()
				cancel()
			}()
			e.run(sctx, r)
		}(r)
	}
}

// renew extends the leases of the sagas run here; one lost to another
// executor is stopped.
func (e *Executor) renew(ctx context.Context) {
	tick := time.NewTicker(e.o.Lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		e.mu.Lock()
		ids := make([]uuid.UUID, 0, len(e.running))
		for id := range e.running {
			ids = append(ids, id)
		}
		e.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		kept, err := e.o.Log.RenewLeases(ctx, e.o.Owner, ids, e.o.Now().UTC().Add(e.o.Lease))
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("saga: could not renew leases", "err", err)
			}
			continue
		}
		owned := map[uuid.UUID]bool{}
		for _, id := range kept {
			owned[id] = true
		}
		e.mu.Lock()
		for _, id := range ids {
			if cancel, ok := e.running[id]; ok && !owned[id] {
				e.log.Warn("saga: lease lost to another executor; stopping here", "saga", id)
				cancel()
			}
		}
		e.mu.Unlock()
	}
}

// inject asks Options.Inject; ErrCrash stops the executor dead.
func (e *Executor) inject(kind, step string, phase Phase) error {
	if e.o.Inject == nil {
		return nil
	}
	err := e.o.Inject(kind, step, phase)
	if errors.Is(err, ErrCrash) {
		e.mu.Lock()
		e.crashed = true
		stop := e.stop
		for _, cancel := range e.running {
			cancel()
		}
		e.mu.Unlock()
		if stop != nil {
			stop()
		}
		e.log.Warn("saga: injected crash", "kind", kind, "step", step, "phase", phase)
	}
	return err
}

// Wait polls log until saga id is no longer in flight (or ctx ends) and
// returns it as stored.
func Wait(ctx context.Context, log Log, id uuid.UUID) (Record, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := log.Saga(ctx, id)
		if err == nil && !r.State.InFlight() {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("saga %s: wait for its end: %w (state %s)", id, ctx.Err(), r.State)
		case <-tick.C:
		}
	}
}
