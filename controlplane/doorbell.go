package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
)

// ErrQueueFull is wrapped in the ErrUnavailable of a ring that found the
// doorbell's queue full.
var ErrQueueFull = errors.New("the doorbell's queue is full")

// Ring is the doorbell: a VMM's state changed on its sled. It checks that
// the VMM is known (ErrNotFound, or ErrUnavailable while the database is
// away), queues a pull of its state unless one is queued already (a ring
// during a pull means one more pull), and returns at once: it never calls
// the sled agent, whose request is still open.
func (c *ControlPlane) Ring(ctx context.Context, id uuid.UUID) error {
	c.metrics.rings.Inc()
	if _, err := c.o.Store.Vmm(ctx, id); err != nil {
		return fmt.Errorf("ring for VMM %s: %w", id, err)
	}
	if !c.enqueue(id) {
		return fmt.Errorf("ring for VMM %s: %w: %w", id, ErrUnavailable, ErrQueueFull)
	}
	return nil
}

// enqueue queues a pull of id, or marks the pull under way to run once
// more; false when the queue is full.
func (c *ControlPlane) enqueue(id uuid.UUID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.queued[id]; ok {
		if st.pulling {
			st.again = true
		}
		c.metrics.coalesced.Inc()
		return true
	}
	// Every id in ready is in queued, so while queued stays within the
	// channel's capacity no send on ready blocks.
	if len(c.queued) >= cap(c.ready) {
		return false
	}
	c.queued[id] = &ringState{since: c.o.Now()}
	c.ready <- id
	return true
}

// work pulls the states of rung VMMs until ctx ends.
func (c *ControlPlane) work(ctx context.Context) {
	for {
		var id uuid.UUID
		select {
		case <-ctx.Done():
			return
		case id = <-c.ready:
		}
		c.mu.Lock()
		st := c.queued[id]
		st.pulling = true
		since := st.since
		c.mu.Unlock()

		err := c.pullWithRetry(ctx, id)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("doorbell: the VMM's state was not pulled; the instance watcher will", "vmm", id, "err", err)
		}
		if err == nil {
			c.metrics.ringLatency.Observe(c.o.Now().Sub(since).Seconds())
		}

		c.mu.Lock()
		if st.again && ctx.Err() == nil {
			st.pulling, st.again, st.since = false, false, c.o.Now()
			c.ready <- id // cannot block: see enqueue
		} else {
			delete(c.queued, id)
		}
		c.mu.Unlock()
	}
}

// pullWithRetry pulls a VMM's state, asking an agent that does not answer
// (or a database that is away) again with backoff, a few times.
func (c *ControlPlane) pullWithRetry(ctx context.Context, id uuid.UUID) error {
	wait := c.o.RetryBackoff
	var err error
	for attempt := 1; ; attempt++ {
		_, err = c.Sync(ctx, id)
		retry := errors.Is(err, ErrSledUnreachable) || errors.Is(err, ErrUnavailable)
		if err == nil || !retry || attempt >= c.o.PullAttempts {
			return err
		}
		c.metrics.pullRetries.Inc()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// Outcome says what a Sync found.
type Outcome string

const (
	OutcomeUpdated     Outcome = "updated"     // a newer state was stored
	OutcomeStale       Outcome = "stale"       // nothing newer
	OutcomeMissing     Outcome = "missing"     // the control plane knows no such VMM
	OutcomeVmmGone     Outcome = "vmm_gone"    // the sled answered, but without the VMM: failed, vmm_gone
	OutcomeRetired     Outcome = "retired"     // terminal and stored; its agent told to forget it
	OutcomeUnreachable Outcome = "unreachable" // the sled's agent did not answer
	OutcomeError       Outcome = "error"       // anything else (an agent's garbage, the database)
	OutcomeSkipped     Outcome = "skipped"     // not on a sled yet, or retired already
)

// Sync pulls one VMM's state from its sled agent and stores it: the VMM
// (generation-checked), its migrations and its instance; a terminal VMM
// whose final state is stored is then unregistered from its sled and
// retired. A VMM its sled no longer knows fails with reason vmm_gone.
func (c *ControlPlane) Sync(ctx context.Context, id uuid.UUID) (Outcome, error) {
	out, err := c.sync(ctx, id)
	c.metrics.pulls.WithLabelValues(string(out)).Inc()
	return out, err
}

func (c *ControlPlane) sync(ctx context.Context, id uuid.UUID) (Outcome, error) {
	v, err := c.o.Store.Vmm(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return OutcomeMissing, nil
	case err != nil:
		return OutcomeError, fmt.Errorf("read VMM %s: %w", id, err)
	case v.TimeRetired != nil:
		return OutcomeSkipped, nil
	}
	sled, err := c.o.Store.Sled(ctx, v.SledID)
	if err != nil {
		return OutcomeError, fmt.Errorf("read the sled of VMM %s: %w", id, err)
	}
	client, err := c.o.Dial(sled)
	if err != nil {
		return OutcomeError, fmt.Errorf("reach sled %s: %w", sled.ID, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	addr, st, err := client.VmmState(callCtx, id)
	cancel()
	now := c.o.Now()
	switch {
	case errors.Is(err, ErrVmmGone):
		return c.gone(ctx, v, now)
	case errors.Is(err, ErrSledUnreachable):
		return OutcomeUnreachable, fmt.Errorf("pull VMM %s from sled %s: %w", id, sled.ID, err)
	case err != nil:
		return OutcomeError, fmt.Errorf("pull VMM %s from sled %s: %w", id, sled.ID, err)
	}
	c.touch(ctx, sled.ID, now)
	applied, err := c.o.Store.ApplySledVmmState(ctx, id, addr, st, now)
	if err != nil {
		return OutcomeError, fmt.Errorf("store the state of VMM %s: %w", id, err)
	}
	out := OutcomeStale
	switch {
	case applied.Vmm == model.WriteMissing:
		return OutcomeMissing, nil
	case applied.Vmm == model.WriteUpdated || applied.Migrations > 0 || applied.Instance:
		out = OutcomeUpdated
		c.log.Debug("VMM state stored", "vmm", id, "state", applied.Stored.Runtime.State.String(),
			"gen", applied.Stored.Runtime.Gen, "instance_changed", applied.Instance)
	}
	if applied.Stored.Runtime.State.IsTerminal() {
		if err := c.retire(ctx, client, applied.Stored, now); err != nil {
			return OutcomeError, err
		}
		return OutcomeRetired, nil
	}
	return out, nil
}

// gone handles a VMM its sled does not know: one that should be there
// fails with reason vmm_gone; a terminal one is retired (its agent forgot
// it already); one not registered yet is left alone.
func (c *ControlPlane) gone(ctx context.Context, v model.Vmm, now time.Time) (Outcome, error) {
	switch {
	case v.Runtime.State.IsTerminal():
		if err := c.o.Store.RetireVmm(ctx, v.ID, now); err != nil {
			return OutcomeError, fmt.Errorf("retire VMM %s: %w", v.ID, err)
		}
		return OutcomeRetired, nil
	case !v.Runtime.State.ExistsOnSled():
		return OutcomeSkipped, nil
	}
	failed, _ := v.Runtime.Transition(model.VmmFailed(model.FailureReason{Kind: model.FailureVMMGone,
		Message: fmt.Sprintf("sled %s answers that it does not know the VMM (it was %s)", v.SledID, v.Runtime.State)}), now)
	if _, err := c.o.Store.ApplySledVmmState(ctx, v.ID, "", model.SledVmmState{Vmm: failed}, now); err != nil {
		return OutcomeError, fmt.Errorf("fail VMM %s (gone from its sled): %w", v.ID, err)
	}
	if err := c.o.Store.RetireVmm(ctx, v.ID, now); err != nil {
		return OutcomeError, fmt.Errorf("retire VMM %s: %w", v.ID, err)
	}
	c.log.Warn("VMM gone from its sled: failed", "vmm", v.ID, "sled", v.SledID)
	return OutcomeVmmGone, nil
}

// retire tells a terminal VMM's agent to forget it, its final state being
// stored, and records that.
func (c *ControlPlane) retire(ctx context.Context, client SledClient, v model.Vmm, now time.Time) error {
	callCtx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	defer cancel()
	if err := client.Unregister(callCtx, v.ID); err != nil {
		return fmt.Errorf("unregister terminal VMM %s from sled %s: %w", v.ID, v.SledID, err)
	}
	if err := c.o.Store.RetireVmm(ctx, v.ID, now); err != nil {
		return fmt.Errorf("retire VMM %s: %w", v.ID, err)
	}
	c.log.Info("VMM retired", "vmm", v.ID, "sled", v.SledID, "state", v.Runtime.State.String())
	return nil
}

// touchEvery spaces the writes of a sled's last contact: every answer
// counts as contact, but one write a second says as much as a thousand.
const touchEvery = time.Second

// touch notes that a sled answered at now, writing it at most once per
// touchEvery for each sled.
func (c *ControlPlane) touch(ctx context.Context, sled uuid.UUID, now time.Time) {
	c.touchMu.Lock()
	last, ok := c.touched[sled]
	due := !ok || now.Sub(last) >= touchEvery
	if due {
		c.touched[sled] = now
	}
	c.touchMu.Unlock()
	if !due {
		return
	}
	if err := c.o.Store.TouchSled(ctx, sled, now); err != nil {
		c.log.Warn("could not note the sled's contact", "sled", sled, "err", err)
	}
}
