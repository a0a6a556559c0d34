package sledagent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Bell rings the control plane's doorbell for one VMM: a request with no
// body that says only that the VMM's state changed. Package
// sledagent/cpclient implements it.
type Bell interface {
	Ring(ctx context.Context, vmmID uuid.UUID) error
}

// ErrBellUnknownVmm is what a Bell answers when the control plane knows no
// such VMM. The control plane stores a VMM before it registers it here, so
// this is final, except in a race with that store's commit: the ringer
// rings again, with backoff, UnknownVmmRings times in all before it stops.
var ErrBellUnknownVmm = errors.New("the control plane knows no such VMM")

// UnknownVmmRings bounds the rings of one change that the control plane
// answers with ErrBellUnknownVmm: a few, so that a ring that raced the
// control plane's own commit of the VMM is not lost, but not forever for
// a VMM it disowned.
const UnknownVmmRings = 8

// Backoff bounds the waits between failed rings: Min doubled at each
// failure up to Max, each wait drawn at random from its upper half.
type Backoff struct {
	Min, Max time.Duration
}

// DefaultBackoff is the doorbell's backoff unless told otherwise.
var DefaultBackoff = Backoff{Min: 20 * time.Millisecond, Max: 2 * time.Second}

// wait returns the wait after the n-th failure (n from 0), jittered.
func (b Backoff) wait(n int) time.Duration {
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// doorbell keeps at most one ring in flight per VMM. A change during a
// ring sets again, and the ringer rings once more when it is done: however
// many changes happened meanwhile, one more ring covers them all.
type doorbell struct {
	bell    Bell
	backoff Backoff
	log     *slog.Logger
	m       *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	rings map[uuid.UUID]*ringState
}

type ringState struct {
	again     bool
	changedAt time.Time // the first change the running ring covers
	nextAt    time.Time // the first change the next ring covers
}

func newDoorbell(bell Bell, b Backoff, log *slog.Logger, m *metrics) *doorbell {
	ctx, cancel := context.WithCancel(context.Background())
	return &doorbell{bell: bell, backoff: b, log: log, m: m, ctx: ctx, cancel: cancel, rings: map[uuid.UUID]*ringState{}}
}

// notify says that the VMM changed: it rings now, or once more after the
// ring in flight.
func (d *doorbell) notify(id uuid.UUID) {
	if d.bell == nil {
		return
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx.Err() != nil {
		return
	}
	if st, ok := d.rings[id]; ok {
		if !st.again {
			st.again, st.nextAt = true, now
		}
		return
	}
	st := &ringState{changedAt: now}
	d.rings[id] = st
	d.wg.Add(1)
	go d.run(id, st)
}

// run rings for id until no change is left unrung.
func (d *doorbell) run(id uuid.UUID, st *ringState) {
	defer d.wg.Done()
	for {
		delivered := d.ringUntilHeard(id)
		d.mu.Lock()
		if delivered {
			d.m.ringLatency.Observe(time.Since(st.changedAt).Seconds())
		}
		if st.again && d.ctx.Err() == nil {
			st.again, st.changedAt = false, st.nextAt
			d.mu.Unlock()
			continue
		}
		delete(d.rings, id)
		d.mu.Unlock()
		return
	}
}

// ringUntilHeard rings, retrying with backoff while the control plane
// does not answer, until it heard the ring (true) or the agent closes or
// the control plane disowned the VMM UnknownVmmRings times (false).
func (d *doorbell) ringUntilHeard(id uuid.UUID) bool {
	unknown := 0
	for n := 0; ; n++ {
		ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
		err := d.bell.Ring(ctx, id)
		cancel()
		var wait time.Duration
		switch {
		case err == nil:
			d.m.rings.WithLabelValues("delivered").Inc()
			return true
		case errors.Is(err, ErrBellUnknownVmm):
			d.m.rings.WithLabelValues("unknown_vmm").Inc()
			unknown++
			if unknown >= UnknownVmmRings {
				d.log.Warn("the control plane knows no such VMM; no more rings for it", "vmm_id", id, "rings", unknown)
				return false
			}
			wait = d.backoff.wait(n)
			if unknown == 1 {
				d.log.Info("the control plane knows no such VMM yet; ringing again", "vmm_id", id, "retry_in", wait)
			}
		default:
			d.m.rings.WithLabelValues("failed").Inc()
			wait = d.backoff.wait(n)
			if n == 0 || n%20 == 0 {
				d.log.Warn("the doorbell did not ring; retrying", "vmm_id", id, "err", err, "retry_in", wait, "attempt", n+1)
			}
		}
		if d.ctx.Err() != nil {
			return false
		}
		d.m.retries.Inc()
		select {
		case <-d.ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// close stops ringing and waits for the ringers.
func (d *doorbell) close() {
	d.cancel()
	d.wg.Wait()
}
