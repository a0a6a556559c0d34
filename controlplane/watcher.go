package controlplane

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
)

// CheckClass is what the instance watcher made of one VMM's check.
type CheckClass string

const (
	CheckOK              CheckClass = "ok"               // its agent answered with its state (stored if newer)
	CheckVmmGone         CheckClass = "vmm_gone"         // its agent answered without it: failed, vmm_gone
	CheckSledUnreachable CheckClass = "sled_unreachable" // its agent did not answer
	CheckError           CheckClass = "error"            // anything else; logged
)

// WatchReport counts one round of the instance watcher.
type WatchReport struct {
	Sleds     int                // sleds looked at
	Checks    map[CheckClass]int // VMMs checked, by class
	SledsLost []uuid.UUID        // sleds marked lost this round
	// SledsRevived are sleds lost before this round whose agents answered
	// it: active again, their VMMs checked like any other's.
	SledsRevived []uuid.UUID
}

// watch runs a round at once, then one every WatchInterval, until ctx
// ends.
func (c *ControlPlane) watch(ctx context.Context) {
	t := time.NewTicker(c.o.WatchInterval)
	defer t.Stop()
	for {
		if _, err := c.WatchOnce(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("instance watcher: round cut short", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WatchOnce runs one round of the instance watcher: every active sled is
// asked whether it answers; every VMM on a sled that answers and that is
// not retired is pulled as a ring would (at most WatchConcurrency at once
// over the fleet); a sled silent since SledLostAfter is marked lost and
// its VMMs failed with reason sled_lost. It returns an error only when the
// database could not list the fleet.
func (c *ControlPlane) WatchOnce(ctx context.Context) (WatchReport, error) {
	c.metrics.rounds.Inc()
	rep := WatchReport{Checks: map[CheckClass]int{}}
	sleds, err := c.o.Store.Sleds(ctx)
	if err != nil {
		return rep, err
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, c.o.WatchConcurrency)
	)
	count := func(class CheckClass, n int) {
		mu.Lock()
		rep.Checks[class] += n
		mu.Unlock()
		c.metrics.checks.WithLabelValues(string(class)).Add(float64(n))
	}
	for _, s := range sleds {
		answered := false
		switch s.State {
		case model.SledActive:
		case model.SledLost:
			if !c.maybeRevive(ctx, s) {
				continue
			}
			rep.SledsRevived = append(rep.SledsRevived, s.ID)
			answered = true
		default:
			continue
		}
		rep.Sleds++
		vmms, err := c.o.Store.VmmsOnSled(ctx, s.ID)
		if err != nil {
			return rep, err
		}
		if !answered && !c.sledAnswers(ctx, s) {
			count(CheckSledUnreachable, len(vmms))
			if lost, err := c.maybeLose(ctx, s); err != nil {
				c.log.Warn("instance watcher: could not mark a silent sled lost", "sled", s.ID, "err", err)
			} else if lost {
				rep.SledsLost = append(rep.SledsLost, s.ID)
			}
			continue
		}
		for _, v := range vmms {
			if !v.Runtime.State.ExistsOnSled() && !v.Runtime.State.IsTerminal() {
				continue // not registered on its sled yet
			}
			wg.Add(1)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				wg.Done()
				wg.Wait()
				return rep, ctx.Err()
			}
			go func(id uuid.UUID) {
				defer wg.Done()
				defer func() { <-sem }()
				count(c.classify(ctx, id), 1)
			}(v.ID)
		}
	}
	wg.Wait()
	return rep, nil
}

// classify checks one VMM and says what it found.
func (c *ControlPlane) classify(ctx context.Context, id uuid.UUID) CheckClass {
	out, err := c.Sync(ctx, id)
	switch {
	case out == OutcomeVmmGone:
		return CheckVmmGone
	case errors.Is(err, ErrSledUnreachable):
		return CheckSledUnreachable
	case err != nil:
		c.log.Warn("instance watcher: check failed", "vmm", id, "err", err)
		return CheckError
	}
	return CheckOK
}

// sledAnswers pings a sled's agent, noting the contact when it answers.
func (c *ControlPlane) sledAnswers(ctx context.Context, s model.Sled) bool {
	if !c.ping(ctx, s) {
		return false
	}
	c.touch(ctx, s.ID, c.o.Now())
	return true
}

// ping says whether a sled's agent answers, within CallTimeout.
func (c *ControlPlane) ping(ctx context.Context, s model.Sled) bool {
	client, err := c.o.Dial(s)
	if err != nil {
		c.log.Warn("instance watcher: cannot reach a sled", "sled", s.ID, "err", err)
		return false
	}
	callCtx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	defer cancel()
	return client.Ping(callCtx) == nil
}

// maybeRevive makes a lost sled active again when its agent answers, its
// last contact now: a sled that was only out of reach (a partition, a
// paused host) comes back without its agent having to restart and
// register. The VMMs failed when it was lost stay failed, a terminal state
// being final; the round then checks them as on any active sled, which
// tells the agent to forget each (their guests must not run on beside the
// instances' new VMMs) and retires it. It says whether the sled is active
// again.
func (c *ControlPlane) maybeRevive(ctx context.Context, s model.Sled) bool {
	if !c.ping(ctx, s) {
		return false
	}
	revived, err := c.o.Store.ReviveSled(ctx, s.ID, c.o.Now())
	if err != nil {
		c.log.Warn("instance watcher: could not mark a lost sled active again", "sled", s.ID, "err", err)
		return false
	}
	if revived {
		c.metrics.sledsRevived.Inc()
		c.log.Warn("sled heard again: active; the VMMs failed while it was lost are unregistered from it", "sled", s.ID,
			"silent_since", s.LastContact)
	}
	return revived
}

// maybeLose marks a sled lost when it has been silent since SledLostAfter.
func (c *ControlPlane) maybeLose(ctx context.Context, s model.Sled) (bool, error) {
	now := c.o.Now()
	failed, lost, err := c.o.Store.MarkSledLost(ctx, s.ID, now.Add(-c.o.SledLostAfter), now)
	if err != nil || !lost {
		return false, err
	}
	c.metrics.sledsLost.Inc()
	c.log.Error("sled lost: silent too long; its VMMs failed", "sled", s.ID, "silent_since", s.LastContact, "vmms_failed", len(failed))
	return true, nil
}
