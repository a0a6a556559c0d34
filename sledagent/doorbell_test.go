package sledagent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptedBell is a control plane stand-in: each ring waits for the test
// to let it through (gate), and fails while down.
type scriptedBell struct {
	gate     chan struct{}
	inFlight atomic.Int32
	maxIn    atomic.Int32
	down     atomic.Bool
	mu       sync.Mutex
	heard    map[uuid.UUID]int
	tries    atomic.Int32
}

func (b *scriptedBell) Ring(ctx context.Context, id uuid.UUID) error {
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for {
		m := b.maxIn.Load()
		if n <= m || b.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	b.tries.Add(1)
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.down.Load() {
		return errors.New("connection refused")
	}
	b.mu.Lock()
	b.heard[id]++
	b.mu.Unlock()
	return nil
}

func (b *scriptedBell) count(id uuid.UUID) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.heard[id]
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Changes during a ring cause exactly one more ring, and never two rings of
// one VMM at once.
func TestDoorbellCoalesces(t *testing.T) {
	b := &scriptedBell{gate: make(chan struct{}), heard: map[uuid.UUID]int{}}
	d := newDoorbell(b, Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, quiet(), newMetrics())
	defer d.close()
	id := uuid.New()
	d.notify(id)
	assert.Eventually(t, func() bool { return b.inFlight.Load() == 1 }, 5*time.Second, time.Millisecond)
	for range 100 {
		d.notify(id) // during the ring
	}
	b.gate <- struct{}{} // the first ring is heard
	assert.Eventually(t, func() bool { return b.count(id) == 1 && b.inFlight.Load() == 1 }, 5*time.Second, time.Millisecond)
	b.gate <- struct{}{} // the one more ring
	assert.Eventually(t, func() bool { return b.count(id) == 2 }, 5*time.Second, time.Millisecond)
	assert.Eventually(t, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.rings) == 0 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 2, b.count(id), "100 changes during a ring make one more ring")
	require.EqualValues(t, 1, b.maxIn.Load(), "at most one ring in flight per VMM")
	require.EqualValues(t, 2, value(d.m.rings.WithLabelValues("delivered")))
	var h dto.Metric
	require.NoError(t, d.m.ringLatency.Write(&h))
	require.EqualValues(t, 2, h.GetHistogram().GetSampleCount(), "each heard ring's latency is observed")
}

// Rings to a control plane that is down are retried with backoff; when it
// comes back every VMM's change arrives, and each VMM has at most one ring
// in flight meanwhile.
func TestDoorbellDownThenUp(t *testing.T) {
	b := &scriptedBell{heard: map[uuid.UUID]int{}}
	b.down.Store(true)
	d := newDoorbell(b, Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}, quiet(), newMetrics())
	defer d.close()
	ids := make([]uuid.UUID, 20)
	for i := range ids {
		ids[i] = uuid.New()
		d.notify(ids[i])
		d.notify(ids[i])
	}
	assert.Eventually(t, func() bool { return b.tries.Load() > 100 }, 5*time.Second, time.Millisecond, "retried while down")
	require.LessOrEqual(t, int(b.maxIn.Load()), len(ids), "one ring in flight per VMM at most")
	for _, id := range ids {
		require.Zero(t, b.count(id))
	}
	b.down.Store(false)
	for _, id := range ids {
		assert.Eventually(t, func() bool { return b.count(id) >= 1 }, 5*time.Second, time.Millisecond, "nothing lost: %s", id)
	}
	assert.Eventually(t, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.rings) == 0 }, 5*time.Second, time.Millisecond)
	for _, id := range ids {
		require.LessOrEqual(t, b.count(id), 2, "coalesced: two changes, at most two rings")
	}
	require.Greater(t, value(d.m.retries), 0.0)
}

// The backoff doubles up to its bound and is jittered within the upper
// half of each step.
func TestBackoffBoundedJittered(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond}
	seen := map[time.Duration]bool{}
	for n := range 50 {
		for range 20 {
			w := b.wait(n)
			step := min(b.Min<<min(n, 10), b.Max)
			require.GreaterOrEqual(t, w, step/2, "n=%d", n)
			require.LessOrEqual(t, w, step, "n=%d", n)
			seen[w] = true
		}
	}
	require.Greater(t, len(seen), 10, "jittered")
}

// A VMM the control plane disowns gets a bounded number of rings, then no
// more.
func TestDoorbellStopsForUnknownVmm(t *testing.T) {
	var tries atomic.Int32
	bell := bellFunc(func(ctx context.Context, id uuid.UUID) error { tries.Add(1); return ErrBellUnknownVmm })
	d := newDoorbell(bell, Backoff{Min: time.Millisecond, Max: time.Millisecond}, quiet(), newMetrics())
	id := uuid.New()
	d.notify(id)
	assert.Eventually(t, func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.rings) == 0 }, 5*time.Second, time.Millisecond)
	d.close()
	require.EqualValues(t, UnknownVmmRings, tries.Load())
}

// A ring that races the control plane's commit of the VMM (it answers 404
// a few times, then knows the VMM) is heard in the end: the change is not
// lost.
func TestDoorbellRetriesUnknownVmmAFewTimes(t *testing.T) {
	var tries atomic.Int32
	heard := make(chan struct{})
	bell := bellFunc(func(ctx context.Context, id uuid.UUID) error {
		if tries.Add(1) <= 3 {
			return ErrBellUnknownVmm
		}
		close(heard)
		return nil
	})
	m := newMetrics()
	d := newDoorbell(bell, Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}, quiet(), m)
	defer d.close()
	d.notify(uuid.New())
	select {
	case <-heard:
	case <-time.After(10 * time.Second):
		t.Fatal("the ring was dropped after the control plane answered 404")
	}
	require.EqualValues(t, 3, value(m.rings.WithLabelValues("unknown_vmm")))
}

type bellFunc func(ctx context.Context, id uuid.UUID) error

func (f bellFunc) Ring(ctx context.Context, id uuid.UUID) error { return f(ctx, id) }

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
