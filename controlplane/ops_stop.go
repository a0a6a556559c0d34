package controlplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
)

// stopKind is the instance stop saga:
//
//	lock          take the updater lock; the instance runs on the VMM it had when asked
//	request_stop  ask the VMM to stop (one its sled forgot is left to the doorbell and the watcher)
//	wait_stopped  wait (SagaWait) until the instance has no VMM and the VMM is retired: it ended, its final
//	              state is stored and its sled told to forget it
//	unlock        release the lock
//
// Nothing is undone but the lock: a VMM asked to stop may stop still.
func (c *ControlPlane) stopKind() saga.Kind {
	return saga.Kind{Name: KindInstanceStop, Steps: []saga.Step{
		c.lockStep(func(ctx context.Context, in model.Instance, p sagaParams) error {
			if !in.Runtime.ActiveVmm.Valid || in.Runtime.ActiveVmm.UUID != p.Vmm {
				return fmt.Errorf("%w: instance %s no longer runs on VMM %s", ErrInvalidState, in.Name, p.Vmm)
			}
			return nil
		}),
		{Name: "request_stop", Do: func(ctx context.Context, s *saga.Ctx) error {
			p, err := params(s)
			if err != nil {
				return err
			}
			if active, err := c.isActive(ctx, s.InstanceID, p.Vmm); err != nil || !active {
				return err
			}
			err = c.onSled(ctx, p.Vmm, func(ctx context.Context, cl SledClient) error { return cl.Request(ctx, p.Vmm, RequestStop) })
			if errors.Is(err, ErrVmmGone) {
				return nil
			}
			return err
		}},
		{Name: "wait_stopped", Do: func(ctx context.Context, s *saga.Ctx) error {
			p, err := params(s)
			if err != nil {
				return err
			}
			return c.waitFor(ctx, fmt.Sprintf("VMM %s to stop", p.Vmm), func(ctx context.Context) (bool, error) {
				active, err := c.isActive(ctx, s.InstanceID, p.Vmm)
				if err != nil || active {
					return false, err
				}
				v, err := c.o.Store.Vmm(ctx, p.Vmm)
				return err == nil && v.TimeRetired != nil, err
			}, p.Vmm)
		}},
		c.unlockStep(),
	}}
}

// rebootKind is the instance reboot saga:
//
//	lock            take the updater lock; the instance runs on the VMM it had when asked, and it runs
//	request_reboot  ask the VMM to reboot (not again when a reboot was stored since the lock)
//	wait_running    wait (SagaWait) until the VMM is stored running at a generation after the request
//	unlock          release the lock
func (c *ControlPlane) rebootKind() saga.Kind {
	return saga.Kind{Name: KindInstanceReboot, Steps: []saga.Step{
		{Name: "lock",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				if err := c.lockStep(func(ctx context.Context, in model.Instance, p sagaParams) error {
					if !in.Runtime.ActiveVmm.Valid || in.Runtime.ActiveVmm.UUID != p.Vmm {
						return fmt.Errorf("%w: instance %s no longer runs on VMM %s", ErrInvalidState, in.Name, p.Vmm)
					}
					return nil
				}).Do(ctx, s); err != nil {
					return err
				}
				p, err := params(s)
				if err != nil {
					return err
				}
				v, err := c.o.Store.Vmm(ctx, p.Vmm)
				if err != nil {
					return err
				}
				if v.Runtime.State != model.VmmRunning {
					return fmt.Errorf("%w: the instance's VMM is %s, not running", ErrInvalidState, v.Runtime.State)
				}
				return s.Put("from_gen", v.Runtime.Gen)
			},
			Undo: c.unlock},
		{Name: "request_reboot", Do: func(ctx context.Context, s *saga.Ctx) error {
			p, from, err := c.rebootFrom(s)
			if err != nil {
				return err
			}
			if v, err := c.o.Store.Vmm(ctx, p.Vmm); err != nil || v.Runtime.Gen > from {
				return err // a reboot was stored since: asked already
			}
			return c.onSled(ctx, p.Vmm, func(ctx context.Context, cl SledClient) error { return cl.Request(ctx, p.Vmm, RequestReboot) })
		}},
		{Name: "wait_running", Do: func(ctx context.Context, s *saga.Ctx) error {
			p, from, err := c.rebootFrom(s)
			if err != nil {
				return err
			}
			return c.waitFor(ctx, fmt.Sprintf("VMM %s to run again", p.Vmm), func(ctx context.Context) (bool, error) {
				v, err := c.o.Store.Vmm(ctx, p.Vmm)
				if err != nil {
					return false, err
				}
				if v.Runtime.State.IsTerminal() {
					return false, fmt.Errorf("%w while it rebooted: %s", errVmmEnded, v.Runtime.State)
				}
				return v.Runtime.Gen > from && v.Runtime.State == model.VmmRunning, nil
			}, p.Vmm)
		}},
		c.unlockStep(),
	}}
}

// rebootFrom reads a reboot saga's params and the VMM generation it
// started from.
func (c *ControlPlane) rebootFrom(s *saga.Ctx) (sagaParams, model.Generation, error) {
	p, err := params(s)
	if err != nil {
		return p, 0, err
	}
	var from model.Generation
	if ok, err := s.Get("from_gen", &from); err != nil || !ok {
		return p, 0, fmt.Errorf("the reboot saga lost its starting generation: %v", err)
	}
	return p, from, nil
}

// deleteKind is the instance delete saga:
//
//	lock     take the updater lock; the instance has no VMM (no_vmm or failed)
//	destroy  mark it destroyed (its name is free again)
//	unlock   release the lock
func (c *ControlPlane) deleteKind() saga.Kind {
	return saga.Kind{Name: KindInstanceDelete, Steps: []saga.Step{
		c.lockStep(func(ctx context.Context, in model.Instance, p sagaParams) error {
			if in.Runtime.State == model.InstanceDestroyed {
				return nil
			}
			return deletable(in)
		}),
		{Name: "destroy", Do: func(ctx context.Context, s *saga.Ctx) error {
			return c.updateInstance(ctx, s.InstanceID, func(r model.InstanceRuntime) (model.InstanceRuntime, bool, error) {
				switch r.State {
				case model.InstanceDestroyed:
					return r, false, nil
				case model.InstanceNoVmm, model.InstanceFailed:
				default:
					return r, false, fmt.Errorf("%w: the instance is %s", ErrInvalidState, r.State)
				}
				r.State, r.Failure = model.InstanceDestroyed, nil
				return r, true, nil
			})
		}},
		c.unlockStep(),
	}}
}

// deletable says whether an instance may be deleted.
func deletable(in model.Instance) error {
	if in.Runtime.State != model.InstanceNoVmm && in.Runtime.State != model.InstanceFailed {
		return fmt.Errorf("%w: instance %s is %s; stop it first", ErrInvalidState, in.Name, in.Runtime.State)
	}
	return nil
}
