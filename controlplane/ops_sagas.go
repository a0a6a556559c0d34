package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
)

// The kinds of the instance sagas; the API shows them, so they are stable,
// as are their steps' names.
const (
	KindInstanceStart   = "instance_start"
	KindInstanceStop    = "instance_stop"
	KindInstanceReboot  = "instance_reboot"
	KindInstanceMigrate = "instance_migrate"
	KindInstanceDelete  = "instance_delete"
)

// sagaParams are the params of the instance sagas; every id a step creates
// is chosen here, before the saga starts, so that a step run again after a
// crash creates the same thing (or finds it made).
type sagaParams struct {
	// Vmm: start, the new VMM; stop and reboot, the active VMM when asked;
	// migrate, the target VMM.
	Vmm uuid.UUID `json:"vmm_id"`
	// Migrate only: the source VMM, the migration, its one-time secret
	// (never shown: the saga's view holds no params) and the sled asked
	// for, if one was.
	Source    uuid.UUID     `json:"source_vmm_id,omitzero"`
	Migration uuid.UUID     `json:"migration_id,omitzero"`
	Secret    string        `json:"secret,omitempty"`
	Sled      uuid.NullUUID `json:"sled_id,omitzero"`
}

// newSagas builds the saga executor of the instance sagas over the Store.
func (c *ControlPlane) newSagas() error {
	o := c.o.Saga
	o.Log = c.o.Store
	for _, k := range []saga.Kind{c.startKind(), c.stopKind(), c.rebootKind(), c.migrateKind(), c.deleteKind()} {
		o.Kinds = append(o.Kinds, withErrorCodes(k))
	}
	if o.Logger == nil {
		o.Logger = c.log
	}
	if o.Now == nil {
		o.Now = c.o.Now
	}
	e, err := saga.New(o)
	if err != nil {
		return fmt.Errorf("control plane: the saga executor: %w", err)
	}
	c.sagas = e
	return nil
}

// params reads a saga's params.
func params(s *saga.Ctx) (sagaParams, error) {
	var p sagaParams
	err := s.Params(&p)
	return p, err
}

// lockStep takes the instance's updater lock for the saga (taken already
// when the saga was created; taking it again is no error) and checks that
// the instance still allows the saga (check); its undo releases the lock.
func (c *ControlPlane) lockStep(check func(ctx context.Context, in model.Instance, p sagaParams) error) saga.Step {
	return saga.Step{Name: "lock",
		Do: func(ctx context.Context, s *saga.Ctx) error {
			if err := c.o.Store.LockInstance(ctx, s.InstanceID, s.ID); err != nil {
				return err
			}
			in, err := c.o.Store.Instance(ctx, s.InstanceID)
			if err != nil {
				return err
			}
			p, err := params(s)
			if err != nil {
				return err
			}
			return check(ctx, in, p)
		},
		Undo: c.unlock}
}

// unlockStep releases the updater lock: the last step of every saga.
func (c *ControlPlane) unlockStep() saga.Step { return saga.Step{Name: "unlock", Do: c.unlock} }

func (c *ControlPlane) unlock(ctx context.Context, s *saga.Ctx) error {
	return c.o.Store.UnlockInstance(ctx, s.InstanceID, s.ID)
}

// updateInstance changes an instance's runtime through f, with the next
// generation, reading again when another writer was first. f says whether
// there is anything to change.
func (c *ControlPlane) updateInstance(ctx context.Context, id uuid.UUID, f func(r model.InstanceRuntime) (model.InstanceRuntime, bool, error)) error {
	for range 20 {
		in, err := c.o.Store.Instance(ctx, id)
		if err != nil {
			return err
		}
		next, change, err := f(in.Runtime)
		if err != nil || !change {
			return err
		}
		next.Gen, next.TimeUpdated = in.Runtime.Gen.Next(), c.o.Now().UTC()
		res, err := c.o.Store.UpdateInstanceRuntime(ctx, id, next)
		if err != nil {
			return err
		}
		if res == model.WriteUpdated {
			return nil
		}
		if res == model.WriteMissing {
			return fmt.Errorf("update instance %s: %w", id, ErrNotFound)
		}
	}
	return fmt.Errorf("update instance %s: other writers kept winning", id)
}

// pullEvery spaces the pulls a waiting saga makes itself, in case a ring
// was lost (a control plane restarting, say).
const pullEvery = 500 * time.Millisecond

// waitFor polls done until it says so, fails, or SagaWait passes. Every
// pullEvery it also pulls the VMMs pull from their agents (as the doorbell
// does when rung), so that a lost ring does not hold the saga until the
// instance watcher's round.
func (c *ControlPlane) waitFor(parent context.Context, what string, done func(ctx context.Context) (bool, error), pull ...uuid.UUID) error {
	ctx, cancel := context.WithTimeout(parent, c.o.SagaWait)
	defer cancel()
	timedOut := func() error { return fmt.Errorf("waited %s for %s: %w", c.o.SagaWait, what, errWaitTimedOut) }
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	lastPull := time.Now()
	for {
		if time.Since(lastPull) >= pullEvery {
			lastPull = time.Now()
			for _, id := range pull {
				if _, err := c.Sync(ctx, id); err != nil && ctx.Err() == nil {
					c.log.Debug("saga wait: pull failed", "vmm", id, "err", err)
				}
			}
		}
		ok, err := done(ctx)
		if err != nil && ctx.Err() != nil && parent.Err() == nil {
			return timedOut() // the wait's own deadline cut a read short: not the read's failure
		}
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return timedOut()
		case <-tick.C:
		}
	}
}

// sledOf dials the agent of a VMM's sled.
func (c *ControlPlane) sledOf(ctx context.Context, v model.Vmm) (SledClient, error) {
	s, err := c.o.Store.Sled(ctx, v.SledID)
	if err != nil {
		return nil, err
	}
	return c.o.Dial(s)
}

// candidates lists the active sleds with room for res, least reserved
// first; only want when it is valid; never the sled not.
func (c *ControlPlane) candidates(ctx context.Context, res model.Resources, want uuid.NullUUID, not uuid.UUID) ([]model.Sled, error) {
	sleds, err := c.o.Store.Sleds(ctx)
	if err != nil {
		return nil, err
	}
	type cand struct {
		s    model.Sled
		used model.Resources
	}
	var out []cand
	for _, s := range sleds {
		if s.State != model.SledActive || s.ID == not || (want.Valid && s.ID != want.UUID) {
			continue
		}
		used, err := c.o.Store.Reserved(ctx, s.ID)
		if err != nil {
			return nil, err
		}
		if used.CPUs+res.CPUs <= s.Capacity.CPUs && used.MemoryMiB+res.MemoryMiB <= s.Capacity.MemoryMiB {
			out = append(out, cand{s, used})
		}
	}
	slices.SortStableFunc(out, func(a, b cand) int {
		if a.used.CPUs != b.used.CPUs {
			return int(a.used.CPUs) - int(b.used.CPUs)
		}
		return int(a.used.MemoryMiB/1024) - int(b.used.MemoryMiB/1024)
	})
	sl := make([]model.Sled, len(out))
	for i, x := range out {
		sl[i] = x.s
	}
	return sl, nil
}

// reserve creates VMM id of instance in (state creating) on the first of
// the candidate sleds that still has room when asked, reserving its
// resources; a VMM stored already is left as it is.
func (c *ControlPlane) reserve(ctx context.Context, id uuid.UUID, in model.Instance, want uuid.NullUUID, not uuid.UUID) error {
	if _, err := c.o.Store.Vmm(ctx, id); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	sleds, err := c.candidates(ctx, in.Resources, want, not)
	if err != nil {
		return err
	}
	now := c.o.Now().UTC()
	for _, s := range sleds {
		err := c.o.Store.CreateVmm(ctx, model.Vmm{ID: id, InstanceID: in.ID, SledID: s.ID, Resources: in.Resources,
			TimeCreated: now, Runtime: model.VmmRuntime{State: model.VmmCreating, Gen: model.FirstGeneration, TimeUpdated: now}})
		if err == nil {
			c.log.Info("VMM reserved", "vmm", id, "instance", in.ID, "sled", s.ID)
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: %d CPUs and %d MiB", ErrNoCapacity, in.Resources.CPUs, in.Resources.MemoryMiB)
}

// isActive says whether VMM id is the active VMM of its instance now (a
// migration that completed): undos never take that one down.
func (c *ControlPlane) isActive(ctx context.Context, instance, id uuid.UUID) (bool, error) {
	in, err := c.o.Store.Instance(ctx, instance)
	if err != nil {
		return false, err
	}
	return in.Runtime.ActiveVmm.Valid && in.Runtime.ActiveVmm.UUID == id, nil
}

// unwindVmm ends a VMM a saga created: stored saga_unwound (releasing its
// reservation) unless terminal already, then unregistered from its sled
// with force; with retire, also retired. A VMM never stored, or retired,
// needs nothing; one that is its instance's active VMM is left alone. A
// sled whose agent does not answer is no failure of the undo: the VMM
// stays stored terminal and unretired, for the watcher to unregister and
// retire when the agent is back.
func (c *ControlPlane) unwindVmm(ctx context.Context, instance, id uuid.UUID, retire bool) error {
	v, err := c.o.Store.Vmm(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if v.TimeRetired != nil {
		return nil
	}
	if active, err := c.isActive(ctx, instance, id); err != nil || active {
		if active {
			c.log.Warn("saga undo: the VMM became the instance's active VMM; left running", "vmm", id)
		}
		return err
	}
	for range 20 {
		next, changed := v.Runtime.Transition(model.VmmSagaUnwound, c.o.Now().UTC())
		if !changed {
			break
		}
		res, err := c.o.Store.UpdateVmmRuntime(ctx, id, next)
		if err != nil {
			return err
		}
		if res != model.WriteStale {
			break
		}
		if v, err = c.o.Store.Vmm(ctx, id); err != nil {
			return err
		}
	}
	client, err := c.sledOf(ctx, v)
	if err != nil {
		return err
	}
	callCtx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	err = client.Unregister(callCtx, id)
	cancel()
	if errors.Is(err, ErrSledUnreachable) {
		// A dead agent cannot forget the VMM, and waiting for it would
		// hold the saga (and the instance's lock) for as long as the sled
		// is down. The VMM is stored terminal, its room released; it is
		// left unretired, so the instance watcher unregisters and retires
		// it once its sled answers again.
		c.log.Warn("saga undo: the VMM's sled agent does not answer; the VMM is left for the watcher to unregister",
			"vmm", id, "sled", v.SledID, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("unregister VMM %s from sled %s: %w", id, v.SledID, err)
	}
	if retire {
		if err := c.o.Store.RetireVmm(ctx, id, c.o.Now().UTC()); err != nil && !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return nil
}
