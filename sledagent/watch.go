package sledagent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// observeWait is how long one state-monitor poll waits on the VMM server.
const observeWait = 20 * time.Second

// startWatch starts v's watchers: one follows the server's state monitor,
// one waits for its process to end.
func (a *Agent) startWatch(v *vmm) {
	a.wg.Add(2)
	go a.watchState(v)
	go a.watchProcess(v)
}

// watchState follows the VMM server's state monitor and applies each
// observation, until the VMM is terminal, its process ends or the agent
// closes.
func (a *Agent) watchState(v *vmm) {
	defer a.wg.Done()
	failures := 0
	for {
		a.mu.Lock()
		gen, terminal, client := v.rec.ServerGen, v.state.State.Terminal(), v.client
		a.mu.Unlock()
		if terminal || a.ctx.Err() != nil {
			return
		}
		var o Observation
		var err error
		if client == nil {
			// Adopted while its server did not answer: dial it again.
			if client, err = a.dialVMM(v); err == nil {
				a.mu.Lock()
				v.client = client
				a.mu.Unlock()
				a.log.Info("an adopted VMM's server answers", "vmm_id", v.rec.ID)
				continue
			}
			if errors.Is(err, ErrTokenRefused) {
				a.refusedToken(v, err)
				return
			}
		} else {
			ctx, cancel := context.WithTimeout(a.ctx, observeWait+10*time.Second)
			o, err = client.Observe(ctx, gen, observeWait)
			cancel()
		}
		if err == nil {
			failures = 0
			a.apply(v, o)
			if !o.NoInstance && !a.checkBoard(v, client) {
				return // failed: its spec exceeds its reservation
			}
			if o.NoInstance {
				// The server does not long-poll without an instance.
				select {
				case <-a.ctx.Done():
					return
				case <-v.proc.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
			continue
		}
		if a.ctx.Err() != nil {
			return
		}
		if failures == 0 || failures%50 == 0 {
			a.log.Warn("the VMM's state monitor failed; retrying", "vmm_id", v.rec.ID, "err", err)
		}
		failures++
		select {
		case <-a.ctx.Done():
			return
		case <-v.proc.Done():
			return // watchProcess reports it
		case <-time.After(DefaultBackoff.wait(failures)):
		}
	}
}

// checkBoard compares a migration target's spec, once its server knows
// it, with what the target reserved; a board larger than the reservation
// fails the VMM and kills its server (the sled would be overcommitted).
// It answers false when it failed the VMM.
func (a *Agent) checkBoard(v *vmm, client VMMClient) bool {
	a.mu.Lock()
	need, terminal := v.rec.CheckBoard, v.state.State.Terminal()
	a.mu.Unlock()
	if !need || terminal {
		return true
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	board, err := client.SpecBoard(ctx)
	cancel()
	if err != nil || board == nil {
		return true // not known yet: the next observation asks again
	}
	a.mu.Lock()
	if a.vmms[v.rec.ID] != v || v.state.State.Terminal() {
		a.mu.Unlock()
		return true
	}
	if board.CPUs <= v.rec.CPUs && board.MemoryMiB <= v.rec.MemoryMiB {
		v.rec.CheckBoard = false
		a.saveLockedLog()
		a.mu.Unlock()
		return true
	}
	v.state = transition(v.state, StateFailed, &FailureReason{Kind: FailureExceedsReservation,
		Message: fmt.Sprintf("the spec from the migration source needs %d CPUs and %d MiB; the VMM reserved %d CPUs and %d MiB",
			board.CPUs, board.MemoryMiB, v.rec.CPUs, v.rec.MemoryMiB)})
	v.state.MigrationIn = failMigration(v.state.MigrationIn)
	v.state.MigrationOut = failMigration(v.state.MigrationOut)
	a.saveLockedLog()
	a.updateGaugeLocked()
	a.mu.Unlock()
	a.log.Warn("a migration target's spec exceeds its reservation; killing it", "vmm_id", v.rec.ID,
		"cpus", board.CPUs, "memory_mib", board.MemoryMiB, "reserved_cpus", v.rec.CPUs, "reserved_memory_mib", v.rec.MemoryMiB)
	if err := v.proc.Kill(10 * time.Second); err != nil {
		a.log.Error("a VMM that exceeds its reservation could not be killed", "vmm_id", v.rec.ID, "err", err)
	}
	a.bell.notify(v.rec.ID)
	return false
}

// refusedToken kills an adopted VMM whose server refused its token at
// last, and fails it.
func (a *Agent) refusedToken(v *vmm, err error) {
	a.log.Warn("an adopted VMM's server refused its token; killing it", "vmm_id", v.rec.ID, "pid", v.proc.Pid, "err", err)
	a.mu.Lock()
	if a.vmms[v.rec.ID] == v && !v.state.State.Terminal() {
		v.state = transition(v.state, StateFailed, &FailureReason{Kind: FailureProcessExited,
			Message: fmt.Sprintf("the VMM process (pid %d) did not answer with its token after the agent restarted, and was killed: %v", v.proc.Pid, err)})
		v.state.MigrationIn = failMigration(v.state.MigrationIn)
		v.state.MigrationOut = failMigration(v.state.MigrationOut)
		a.saveLockedLog()
		a.updateGaugeLocked()
	}
	a.mu.Unlock()
	if kerr := v.proc.Kill(10 * time.Second); kerr != nil {
		a.log.Error("a VMM that refused its token could not be killed", "vmm_id", v.rec.ID, "err", kerr)
	}
	a.bell.notify(v.rec.ID)
}

// watchProcess turns the end of a VMM's process into a failed VMM, unless
// the VMM was terminal already or was unregistered.
func (a *Agent) watchProcess(v *vmm) {
	defer a.wg.Done()
	select {
	case <-a.ctx.Done():
		return
	case <-v.proc.Done():
	}
	a.mu.Lock()
	if a.vmms[v.rec.ID] != v || v.state.State.Terminal() {
		a.mu.Unlock()
		return
	}
	status := v.proc.Status()
	how := "unknown"
	switch {
	case v.proc.signal != 0:
		how = "signal"
	case strings.HasPrefix(status, "exited"):
		how = "exit_code"
	}
	a.m.exits.WithLabelValues(how).Inc()
	v.state = transition(v.state, StateFailed, &FailureReason{Kind: FailureProcessExited,
		Message: fmt.Sprintf("the VMM process (pid %d) %s", v.proc.Pid, status)})
	v.state.MigrationIn = failMigration(v.state.MigrationIn)
	v.state.MigrationOut = failMigration(v.state.MigrationOut)
	a.log.Warn("a VMM's process ended", "vmm_id", v.rec.ID, "pid", v.proc.Pid, "status", status)
	a.saveLockedLog()
	a.updateGaugeLocked()
	a.mu.Unlock()
	a.bell.notify(v.rec.ID)
}

// failMigration ends a migration that had not ended as failed.
func failMigration(m *MigrationRuntime) *MigrationRuntime {
	if m == nil || m.State == MigrationCompleted || m.State == MigrationFailed {
		return m
	}
	out := *m
	out.State, out.Gen, out.TimeUpdated = MigrationFailed, m.Gen+1, time.Now().UTC()
	return &out
}

// apply folds a VMM server's observation into the VMM's state: each state
// change the server reports (its history since the last observation, so
// that a quick reboot is seen as two changes) bumps the generation once;
// changes of its migrations ride on the last bump, or make one. A change
// is saved and rings the doorbell.
func (a *Agent) apply(v *vmm, o Observation) {
	a.mu.Lock()
	if a.vmms[v.rec.ID] != v || v.state.State.Terminal() {
		a.mu.Unlock()
		return
	}
	v.rec.ServerGen = o.Gen
	if o.NoInstance {
		a.mu.Unlock()
		return
	}
	steps := o.History
	if len(steps) == 0 || steps[len(steps)-1].State != o.State {
		steps = append(steps, Transition{State: o.State, FailureReason: o.FailureReason})
	}
	cur, changed := v.state, false
	now := time.Now().UTC()
	for _, step := range steps {
		if cur.State.Terminal() {
			break
		}
		next := cur
		next.State, next.Failure = step.State, nil
		if step.State == StateFailed {
			next.Failure = &FailureReason{Kind: FailureVMMFailed, Message: step.FailureReason}
		}
		if !sameState(cur, next) {
			next.Gen, next.TimeUpdated = cur.Gen+1, now
			cur, changed = next, true
		}
	}
	in := foldMigration(cur.MigrationIn, o.MigrationIn)
	out := foldMigration(cur.MigrationOut, o.MigrationOut)
	if !equalPtr(in, cur.MigrationIn) || !equalPtr(out, cur.MigrationOut) {
		cur.MigrationIn, cur.MigrationOut = in, out
		if !changed {
			cur.Gen, cur.TimeUpdated = cur.Gen+1, now
			changed = true
		}
	}
	if changed {
		v.state = cur
		a.updateGaugeLocked()
	}
	a.saveLockedLog() // the server's generation moved, at least
	a.mu.Unlock()
	if changed {
		a.bell.notify(v.rec.ID)
	}
}

// foldMigration updates the agent's record of one migration from the
// server's progress; the migration's own generation grows when its state
// does.
func foldMigration(prev *MigrationRuntime, p *MigrationProgress) *MigrationRuntime {
	if p == nil {
		return prev
	}
	state := MigrationInProgress
	switch p.Phase {
	case "completed":
		state = MigrationCompleted
	case "failed":
		state = MigrationFailed
	}
	if prev != nil && prev.ID == p.ID {
		if prev.State == state {
			return prev
		}
		return &MigrationRuntime{ID: p.ID, State: state, Gen: prev.Gen + 1, TimeUpdated: time.Now().UTC()}
	}
	gen := uint64(1)
	if prev != nil {
		gen = prev.Gen + 1
	}
	return &MigrationRuntime{ID: p.ID, State: state, Gen: gen, TimeUpdated: time.Now().UTC()}
}

// sameState says whether two states differ in nothing but time and
// generation.
func sameState(x, y SledVmmState) bool {
	return x.State == y.State && equalPtr(x.Failure, y.Failure) &&
		equalPtr(x.MigrationIn, y.MigrationIn) && equalPtr(x.MigrationOut, y.MigrationOut)
}

func equalPtr[T comparable](x, y *T) bool {
	if x == nil || y == nil {
		return x == y
	}
	return *x == *y
}
