package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
)

// Options configure a ControlPlane. Zero values take the defaults named.
type Options struct {
	Store  Store      // required
	Dial   SledDialer // required
	Logger *slog.Logger

	// Workers pull the states of rung VMMs, at most this many at once
	// (default 8).
	Workers int
	// QueueLimit bounds the VMMs waiting to be pulled; a ring beyond it
	// answers ErrUnavailable, and the agent rings again (default 65536).
	QueueLimit int
	// CallTimeout bounds each call to a sled agent (default 10 s).
	CallTimeout time.Duration
	// PullAttempts is how often a rung VMM's state is asked of an agent
	// that does not answer before the instance watcher is left to it
	// (default 3, spaced by RetryBackoff, doubling).
	PullAttempts int
	RetryBackoff time.Duration // default 100 ms

	// WatchInterval spaces the instance watcher's rounds (default 30 s; a
	// negative value turns the watcher off). The first round runs at once.
	WatchInterval time.Duration
	// WatchConcurrency bounds the VMMs the watcher checks at once, over
	// every sled (default 16).
	WatchConcurrency int
	// SledLostAfter is how long a sled may stay silent before it is marked
	// lost and its VMMs failed with reason sled_lost (default 5 min).
	SledLostAfter time.Duration

	// Now is the clock (default time.Now).
	Now func() time.Time

	// Saga configures the saga executor; its Log (the Store), Kinds (the
	// instance sagas) and Logger are set by New. SagaWait bounds each wait
	// of a saga for a VMM to run, stop or hand off (default 60 s).
	Saga     saga.Options
	SagaWait time.Duration
}

func (o *Options) setDefaults() error {
	if o.Store == nil || o.Dial == nil {
		return errors.New("control plane: a Store and a SledDialer are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.QueueLimit <= 0 {
		o.QueueLimit = 65536
	}
	if o.PullAttempts <= 0 {
		o.PullAttempts = 3
	}
	if o.WatchConcurrency <= 0 {
		o.WatchConcurrency = 16
	}
	def(&o.CallTimeout, 10*time.Second)
	def(&o.RetryBackoff, 100*time.Millisecond)
	def(&o.WatchInterval, 30*time.Second)
	def(&o.SledLostAfter, 5*time.Minute)
	def(&o.SagaWait, 60*time.Second)
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// ControlPlane is the runtime: the doorbell's queue and workers, the
// instance watcher, over a Store and the fleet's sled agents.
type ControlPlane struct {
	o       Options
	log     *slog.Logger
	metrics *Metrics

	// mu guards the doorbell's queue: every VMM id appears at most once in
	// ready; queued holds the ids in ready or being pulled, with whether a
	// ring came during the pull (then it is pulled once more).
	mu     sync.Mutex
	queued map[uuid.UUID]*ringState
	ready  chan uuid.UUID

	touchMu sync.Mutex
	touched map[uuid.UUID]time.Time // guarded by touchMu: when each sled's contact was last written

	sagas *saga.Executor // runs the instance sagas (ops_*.go)
}

// ringState is one VMM's place in the doorbell's queue.
type ringState struct {
	pulling bool      // a worker pulls it now
	again   bool      // rung during the pull: pull once more after
	since   time.Time // the oldest ring not yet answered by a pull
}

// New returns a control plane; Run starts its workers and watcher.
func New(o Options) (*ControlPlane, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	c := &ControlPlane{o: o, log: o.Logger, metrics: newMetrics(),
		queued: map[uuid.UUID]*ringState{}, ready: make(chan uuid.UUID, o.QueueLimit), touched: map[uuid.UUID]time.Time{}}
	if err := c.newSagas(); err != nil {
		return nil, err
	}
	return c, nil
}

// Run works the doorbell's queue and runs the instance watcher until ctx
// ends, then waits for the pulls under way (each bounded by CallTimeout).
func (c *ControlPlane) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range c.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.work(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.sagas.Run(ctx); err != nil {
			c.log.Error("the saga executor stopped", "err", err)
		}
	}()
	if c.o.WatchInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watch(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// RegisterSled registers a sled or renews its registration.
func (c *ControlPlane) RegisterSled(ctx context.Context, s model.Sled) error {
	s.State, s.LastContact = model.SledActive, c.o.Now()
	if err := c.o.Store.RegisterSled(ctx, s); err != nil {
		return fmt.Errorf("register sled %s: %w", s.ID, err)
	}
	c.log.Info("sled registered", "sled", s.ID, "address", s.Address, "versions", s.APIVersions,
		"cpus", s.Capacity.CPUs, "memory_mib", s.Capacity.MemoryMiB)
	return nil
}
