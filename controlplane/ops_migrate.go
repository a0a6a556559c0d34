package controlplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
)

// migrateKind is the instance migrate saga:
//
//	lock              take the updater lock; the instance runs on its source VMM, running, not migrating
//	reserve_target    create the target VMM (creating) on the sled asked for, or the least reserved other
//	                  active sled with room, reserving
//	create_migration  store the migration and point the instance at the target and the migration
//	arm_source        arm the source VMM for the migration with its one-time secret
//	register_target   register the target on its sled as the migration's target (the source's address, the
//	                  migration id, the secret, the instance's resources)
//	wait_handoff      wait (SagaWait) until the doorbell hands the instance to the target and retires the source,
//	                  or the migration fails
//	unlock            release the lock
//
// The source's agent is armed before the target is registered, as the
// sled-agent API asks. Undos: unregister (force) the target and mark it
// saga_unwound, drop the migration from the instance, release and retire
// the target, unlock; the source runs on. An undo never takes down a
// target that became the active VMM (a hand-off that came late).
func (c *ControlPlane) migrateKind() saga.Kind {
	p := func(s *saga.Ctx) sagaParams { p, _ := params(s); return p }
	return saga.Kind{Name: KindInstanceMigrate, Steps: []saga.Step{
		c.lockStep(func(ctx context.Context, in model.Instance, p sagaParams) error {
			if in.Runtime.Migration.Valid && in.Runtime.Migration.UUID == p.Migration {
				return nil // this saga's own migration
			}
			return c.migratable(ctx, in, p.Source)
		}),
		{Name: "reserve_target",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				in, err := c.o.Store.Instance(ctx, s.InstanceID)
				if err != nil {
					return err
				}
				src, err := c.o.Store.Vmm(ctx, p(s).Source)
				if err != nil {
					return err
				}
				if p(s).Sled.Valid && p(s).Sled.UUID == src.SledID {
					return fmt.Errorf("%w: sled %s", ErrSameSled, src.SledID)
				}
				return c.reserve(ctx, p(s).Vmm, in, p(s).Sled, src.SledID)
			},
			Undo: func(ctx context.Context, s *saga.Ctx) error { return c.unwindVmm(ctx, s.InstanceID, p(s).Vmm, true) }},
		{Name: "create_migration",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				if _, err := c.o.Store.Migration(ctx, p(s).Migration); err == nil {
					return nil
				} else if !errors.Is(err, ErrNotFound) {
					return err
				}
				return c.o.Store.CreateMigration(ctx, model.Migration{ID: p(s).Migration, InstanceID: s.InstanceID,
					SourceVmm: p(s).Source, TargetVmm: p(s).Vmm, TimeCreated: c.o.Now().UTC()})
			},
			Undo: func(ctx context.Context, s *saga.Ctx) error {
				return c.updateInstance(ctx, s.InstanceID, func(r model.InstanceRuntime) (model.InstanceRuntime, bool, error) {
					if !r.Migration.Valid || r.Migration.UUID != p(s).Migration {
						return r, false, nil
					}
					r.TargetVmm, r.Migration = uuid.NullUUID{}, uuid.NullUUID{}
					return r, true, nil
				})
			}},
		{Name: "arm_source",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				return c.onSled(ctx, p(s).Source, func(ctx context.Context, cl SledClient) error {
					return cl.ArmMigrationSource(ctx, p(s).Source, p(s).Migration, p(s).Secret)
				})
			}},
		{Name: "register_target",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				in, err := c.o.Store.Instance(ctx, s.InstanceID)
				if err != nil {
					return err
				}
				src, err := c.o.Store.Vmm(ctx, p(s).Source)
				if err != nil {
					return err
				}
				if src.Address == "" {
					return fmt.Errorf("the source VMM %s has no address stored yet", src.ID)
				}
				return c.onSledWithin(ctx, c.o.SagaWait, p(s).Vmm, func(ctx context.Context, cl SledClient) error {
					return cl.Register(ctx, p(s).Vmm, VmmRegistration{InstanceID: in.ID, Name: in.Name, Description: in.Description,
						Migrate: &MigrationTarget{SourceAddr: src.Address, MigrationID: p(s).Migration, Secret: p(s).Secret,
							Resources: in.Resources}})
				})
			},
			Undo: func(ctx context.Context, s *saga.Ctx) error {
				if done, err := c.handedOff(ctx, p(s)); err != nil || done {
					return err
				}
				return c.unwindVmm(ctx, s.InstanceID, p(s).Vmm, false)
			}},
		{Name: "wait_handoff",
			Do: func(ctx context.Context, s *saga.Ctx) error {
				return c.waitFor(ctx, fmt.Sprintf("migration %s to hand off", p(s).Migration), func(ctx context.Context) (bool, error) {
					in, err := c.o.Store.Instance(ctx, s.InstanceID)
					if err != nil {
						return false, err
					}
					r := in.Runtime
					switch {
					case r.ActiveVmm.Valid && r.ActiveVmm.UUID == p(s).Vmm:
						return c.handOffSettled(ctx, p(s))
					case !r.Migration.Valid || r.Migration.UUID != p(s).Migration:
						return false, fmt.Errorf("%w: the instance no longer migrates to VMM %s", errMigrationFailed, p(s).Vmm)
					}
					t, err := c.o.Store.Vmm(ctx, p(s).Vmm)
					if err != nil {
						return false, err
					}
					if t.Runtime.State.IsTerminal() {
						return false, fmt.Errorf("%w: the target VMM is %s", errMigrationFailed, t.Runtime.State)
					}
					return false, nil
				}, p(s).Vmm, p(s).Source)
			}},
		c.unlockStep(),
	}}
}

// handOffSettled says whether a migration that handed its instance to the
// target is over as users see it: the source, ended, is retired, and the
// target's own report has been stored (the source's report of the hand-off
// can come first, and until the target's arrives the instance would show
// the target as it was registered, starting). Whatever the target is once
// reported, running or not, is the instance's life from then on; the saga
// does not fail for it.
func (c *ControlPlane) handOffSettled(ctx context.Context, p sagaParams) (bool, error) {
	src, err := c.o.Store.Vmm(ctx, p.Source)
	if err != nil || src.TimeRetired == nil {
		return false, err
	}
	t, err := c.o.Store.Vmm(ctx, p.Vmm)
	if err != nil {
		return false, err
	}
	switch t.Runtime.State.Name() {
	case "creating", "starting", "migrating":
		return false, nil
	}
	return true, nil
}

// migratable says whether an instance may migrate away from VMM source.
func (c *ControlPlane) migratable(ctx context.Context, in model.Instance, source uuid.UUID) error {
	r := in.Runtime
	switch {
	case !r.ActiveVmm.Valid || r.ActiveVmm.UUID != source:
		return fmt.Errorf("%w: instance %s does not run (on VMM %s)", ErrInvalidState, in.Name, source)
	case r.Migration.Valid:
		return fmt.Errorf("%w: instance %s migrates already", ErrInvalidState, in.Name)
	}
	v, err := c.o.Store.Vmm(ctx, source)
	if err != nil {
		return err
	}
	if v.Runtime.State != model.VmmRunning {
		return fmt.Errorf("%w: instance %s's VMM is %s, not running", ErrInvalidState, in.Name, v.Runtime.State)
	}
	return nil
}

// handedOff asks the agents of a migration's target and source where the
// migration stands, before an undo takes the target down. Completed on
// either side: the target has the VM, whatever the database has heard
// yet; it stores what the agents say at once (the hand-off) and answers
// true, and the undo keeps the target. In progress: the stream is not
// interrupted; it waits (SagaWait) for its end. Pending, failed, or an
// agent that does not answer: false, and the target is taken down (the
// source runs on).
func (c *ControlPlane) handedOff(ctx context.Context, p sagaParams) (bool, error) {
	completed := false
	err := c.waitFor(ctx, fmt.Sprintf("migration %s to end before its undo", p.Migration), func(ctx context.Context) (bool, error) {
		inProgress := false
		for _, side := range []struct {
			id uuid.UUID
			in bool
		}{{p.Vmm, true}, {p.Source, false}} {
			var st model.SledVmmState
			err := c.onSled(ctx, side.id, func(ctx context.Context, cl SledClient) error {
				var err error
				_, st, err = cl.VmmState(ctx, side.id)
				return err
			})
			if err != nil {
				if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrVmmGone) {
					c.log.Warn("saga undo: could not ask where the migration stands", "vmm", side.id, "err", err)
				}
				continue
			}
			m := st.MigrationOut
			if side.in {
				m = st.MigrationIn
			}
			if m == nil || m.ID != p.Migration {
				continue
			}
			switch m.State {
			case model.MigrationCompleted:
				completed = true
				return true, nil
			case model.MigrationInProgress:
				inProgress = true
			}
		}
		return !inProgress, nil
	})
	if err != nil || !completed {
		return false, err
	}
	c.log.Warn("saga undo: the migration completed; the target keeps the instance", "migration", p.Migration, "target", p.Vmm)
	for _, id := range []uuid.UUID{p.Vmm, p.Source} {
		if _, err := c.Sync(ctx, id); err != nil {
			return true, fmt.Errorf("store the hand-off of migration %s: %w", p.Migration, err)
		}
	}
	return true, nil
}
