package controlplane

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
)

// startKind is the instance start saga:
//
//	lock          take the updater lock; the instance has no VMM (no_vmm or failed)
//	reserve       create the VMM (creating) on the active sled with room that is least reserved, reserving
//	point         point the instance at it (state vmm)
//	register      register it on its sled with the instance's spec (a refused spec: ErrInvalidSpec)
//	run           ask it to run
//	wait_running  wait (SagaWait) until the doorbell has stored it running
//	unlock        release the lock
//
// Undos: unregister (force) and mark the VMM saga_unwound (a failed one
// stays failed), point the instance back (no_vmm, unless the VMM's failure
// made it failed with its reason), release and retire the VMM, unlock.
func (c *ControlPlane) startKind() saga.Kind {
	vmmOf := func(s *saga.Ctx) uuid.UUID { p, _ := params(s); return p.Vmm }
	return saga.Kind{Name: KindInstanceStart, Steps: []saga.Step{
		c.lockStep(func(ctx context.Context, in model.Instance, p sagaParams) error {
			if in.Runtime.ActiveVmm.Valid && in.Runtime.ActiveVmm.UUID == p.Vmm {
				return nil // this saga's own VMM
			}
			return startable(in)
		}),
		{Name: "reserve",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				in, err := c.o.Store.Instance(ctx, s.InstanceID)
				if err != nil {
					return err
				}
				return c.reserve(ctx, vmmOf(s), in, uuid.NullUUID{}, uuid.Nil)
			},
			Undo: func(ctx context.Context, s *saga.Ctx) error { return c.unwindVmm(ctx, s.InstanceID, vmmOf(s), true) }},
		{Name: "point",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				id := vmmOf(s)
				return c.updateInstance(ctx, s.InstanceID, func(r model.InstanceRuntime) (model.InstanceRuntime, bool, error) {
					if r.ActiveVmm.Valid && r.ActiveVmm.UUID == id {
						return r, false, nil
					}
					if r.State != model.InstanceNoVmm && r.State != model.InstanceFailed {
						return r, false, fmt.Errorf("%w: the instance is %s", ErrInvalidState, r.State)
					}
					r.State, r.ActiveVmm, r.Failure = model.InstanceVmm, uuid.NullUUID{UUID: id, Valid: true}, nil
					return r, true, nil
				})
			},
			Undo: func(ctx context.Context, s *saga.Ctx) error { return c.unpoint(ctx, s.InstanceID, vmmOf(s)) }},
		{Name: "register",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				in, err := c.o.Store.Instance(ctx, s.InstanceID)
				if err != nil {
					return err
				}
				return c.onSledWithin(ctx, c.o.SagaWait, vmmOf(s), func(ctx context.Context, cl SledClient) error {
					return cl.Register(ctx, vmmOf(s), VmmRegistration{InstanceID: in.ID, Name: in.Name,
						Description: in.Description, SpecVersion: in.SpecVersion, Spec: in.Spec})
				})
			},
			Undo: func(ctx context.Context, s *saga.Ctx) error { return c.unwindVmm(ctx, s.InstanceID, vmmOf(s), false) }},
		{Name: "run",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				return c.onSled(ctx, vmmOf(s), func(ctx context.Context, cl SledClient) error {
					return cl.Request(ctx, vmmOf(s), RequestRun)
				})
			}},
		{Name: "wait_running",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				id := vmmOf(s)
				return c.waitFor(ctx, fmt.Sprintf("VMM %s to run", id), func(ctx context.Context) (bool, error) {
					v, err := c.o.Store.Vmm(ctx, id)
					if err != nil {
						return false, err
					}
					if v.Runtime.State.IsTerminal() {
						return false, fmt.Errorf("%w before it ran: %s", errVmmEnded, v.Runtime.State)
					}
					return v.Runtime.State == model.VmmRunning, nil
				}, id)
			}},
		c.unlockStep(),
	}}
}

// startable says whether an instance may be started.
func startable(in model.Instance) error {
	if in.Runtime.State != model.InstanceNoVmm && in.Runtime.State != model.InstanceFailed {
		return fmt.Errorf("%w: instance %s is %s; only a stopped or failed instance starts", ErrInvalidState, in.Name, in.Runtime.State)
	}
	return nil
}

// unpoint points the instance away from VMM id, when it points at it:
// no VMM, no migration.
func (c *ControlPlane) unpoint(ctx context.Context, instance, id uuid.UUID) error {
	return c.updateInstance(ctx, instance, func(r model.InstanceRuntime) (model.InstanceRuntime, bool, error) {
		if !r.ActiveVmm.Valid || r.ActiveVmm.UUID != id {
			return r, false, nil
		}
		r.State, r.ActiveVmm, r.TargetVmm, r.Migration, r.Failure = model.InstanceNoVmm, uuid.NullUUID{}, uuid.NullUUID{}, uuid.NullUUID{}, nil
		return r, true, nil
	})
}

// onSled calls f with the agent of VMM id's sled, bounded by CallTimeout.
func (c *ControlPlane) onSled(ctx context.Context, id uuid.UUID, f func(ctx context.Context, cl SledClient) error) error {
	return c.onSledWithin(ctx, c.o.CallTimeout, id, f)
}

// onSledWithin calls f with the agent of VMM id's sled, bounded by d (a
// registration starts a VMM server process, and takes longer than a call).
func (c *ControlPlane) onSledWithin(ctx context.Context, d time.Duration, id uuid.UUID, f func(ctx context.Context, cl SledClient) error) error {
	v, err := c.o.Store.Vmm(ctx, id)
	if err != nil {
		return err
	}
	cl, err := c.sledOf(ctx, v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx, cl)
}
