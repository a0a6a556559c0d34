package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/saga"
	"github.com/wagglevm/waggle/versions"
)

var _ Operations = (*ControlPlane)(nil)

// instanceName is what an instance's name may be, as the external API's
// contract says: a DNS label (1 to 63 lowercase letters, digits and '-',
// starting with a letter, not ending with '-'), which the sled agent also
// accepts (it becomes the VM's SMBIOS serial number). A name that reads as
// a UUID is refused apart (checkName), since a reference to an instance is
// its id or its name.
var instanceName = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// maxDescription bounds an instance's description, as the sled agent does.
const maxDescription = 512

// CreateInstance validates the request and stores the instance, stopped,
// in one statement: there is nothing to undo, so no saga (a crash leaves
// the instance stored or not at all). With Start, it then starts the
// instance's start saga and answers its view. ErrInvalidSpec names the
// field at fault (name, description, spec_version, spec); ErrNameInUse.
func (c *ControlPlane) CreateInstance(ctx context.Context, req InstanceCreate) (InstanceView, *SagaView, error) {
	in, err := c.validate(req)
	if err != nil {
		return InstanceView{}, nil, err
	}
	if _, err := c.o.Store.InstanceByName(ctx, req.Name); err == nil {
		return InstanceView{}, nil, fmt.Errorf("create instance %q: %w", req.Name, ErrNameInUse)
	} else if !errors.Is(err, ErrNotFound) {
		return InstanceView{}, nil, fmt.Errorf("create instance %q: %w", req.Name, err)
	}
	if err := c.o.Store.CreateInstance(ctx, in); err != nil {
		if errors.Is(err, ErrConflict) && strings.Contains(err.Error(), "instance_name_unique") {
			return InstanceView{}, nil, fmt.Errorf("create instance %q: %w", req.Name, ErrNameInUse)
		}
		return InstanceView{}, nil, fmt.Errorf("create instance %q: %w", req.Name, err)
	}
	c.log.Info("instance created", "instance", in.ID, "name", in.Name, "cpus", in.Resources.CPUs, "memory_mib", in.Resources.MemoryMiB)
	var sv *SagaView
	if req.Start {
		v, err := c.StartInstance(ctx, in.ID.String())
		if err != nil {
			return InstanceView{}, nil, fmt.Errorf("created instance %q, but its start: %w", req.Name, err)
		}
		sv = &v
	}
	view, err := c.GetInstance(ctx, in.ID.String())
	return view, sv, err
}

// validate checks a create request and makes its instance.
func (c *ControlPlane) validate(req InstanceCreate) (model.Instance, error) {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidSpec, field, fmt.Sprintf(format, args...))
	}
	if !instanceName.MatchString(req.Name) {
		return model.Instance{}, bad("name", "%q is not 1 to 63 lowercase letters, digits or '-', starting with a letter and not ending with '-'", req.Name)
	}
	if _, err := uuid.Parse(req.Name); err == nil {
		return model.Instance{}, bad("name", "%q reads as a UUID, which would name an instance by id", req.Name)
	}
	if n := utf8.RuneCountInString(req.Description); n > maxDescription {
		return model.Instance{}, bad("description", "%d characters, more than %d", n, maxDescription)
	}
	spoke, ok := versions.Lookup(req.SpecVersion)
	if !ok {
		return model.Instance{}, bad("spec_version", "%q is not one this control plane accepts (%s)", req.SpecVersion, strings.Join(versions.Names(), ", "))
	}
	sp, err := spoke.Decode(req.Spec)
	if err != nil {
		return model.Instance{}, bad("spec", "%v", err)
	}
	b := sp.Board()
	now := c.o.Now().UTC()
	return model.Instance{ID: uuid.New(), Name: req.Name, Description: req.Description, SpecVersion: req.SpecVersion,
		Spec: req.Spec, Resources: model.Resources{CPUs: b.CPUs, MemoryMiB: b.MemoryMiB}, TimeCreated: now,
		Runtime: model.InstanceRuntime{State: model.InstanceNoVmm, Gen: model.FirstGeneration, TimeUpdated: now}}, nil
}

// resolve reads the instance named by ref: its id, or its name; a
// destroyed one is not found.
func (c *ControlPlane) resolve(ctx context.Context, ref string) (model.Instance, error) {
	var (
		in  model.Instance
		err error
	)
	if id, perr := uuid.Parse(ref); perr == nil {
		in, err = c.o.Store.Instance(ctx, id)
	} else {
		in, err = c.o.Store.InstanceByName(ctx, ref)
	}
	if err == nil && in.Runtime.State == model.InstanceDestroyed {
		err = ErrNotFound
	}
	if err != nil {
		return model.Instance{}, fmt.Errorf("instance %q: %w", ref, err)
	}
	return in, nil
}

// ListInstances lists the instances not destroyed, by name.
func (c *ControlPlane) ListInstances(ctx context.Context) ([]InstanceView, error) {
	ins, err := c.o.Store.Instances(ctx)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return c.views(ctx, ins)
}

// ListInstancesPage lists at most limit instances not destroyed whose
// names sort after after ("" for the first page), by name.
func (c *ControlPlane) ListInstancesPage(ctx context.Context, after string, limit int) ([]InstanceView, error) {
	ins, err := c.o.Store.InstancesAfter(ctx, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list instances after %q: %w", after, err)
	}
	return c.views(ctx, ins)
}

// views makes the views of instances, in their order.
func (c *ControlPlane) views(ctx context.Context, ins []model.Instance) ([]InstanceView, error) {
	out := make([]InstanceView, 0, len(ins))
	for _, in := range ins {
		v, err := c.view(ctx, in)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// GetInstance reads one instance by id or name.
func (c *ControlPlane) GetInstance(ctx context.Context, ref string) (InstanceView, error) {
	in, err := c.resolve(ctx, ref)
	if err != nil {
		return InstanceView{}, err
	}
	return c.view(ctx, in)
}

// view derives what users see of an instance.
func (c *ControlPlane) view(ctx context.Context, in model.Instance) (InstanceView, error) {
	v := InstanceView{Instance: in}
	var st *model.VmmState
	if in.Runtime.ActiveVmm.Valid {
		vmm, err := c.o.Store.Vmm(ctx, in.Runtime.ActiveVmm.UUID)
		if err != nil {
			return InstanceView{}, fmt.Errorf("instance %s: its active VMM: %w", in.ID, err)
		}
		v.ActiveVmm, st = &vmm, &vmm.Runtime.State
	}
	if in.Runtime.Migration.Valid {
		m, err := c.o.Store.Migration(ctx, in.Runtime.Migration.UUID)
		if err != nil {
			return InstanceView{}, fmt.Errorf("instance %s: its migration: %w", in.ID, err)
		}
		v.Migration = &m
	}
	v.State = model.Derive(in.Runtime, st)
	return v, nil
}

// StartInstance starts a stopped or failed instance (the start saga).
func (c *ControlPlane) StartInstance(ctx context.Context, ref string) (SagaView, error) {
	in, err := c.resolve(ctx, ref)
	if err != nil {
		return SagaView{}, err
	}
	if err := startable(in); err != nil {
		return SagaView{}, err
	}
	return c.startSaga(ctx, KindInstanceStart, in, sagaParams{Vmm: uuid.New()})
}

// StopInstance stops an instance that has a VMM (the stop saga).
func (c *ControlPlane) StopInstance(ctx context.Context, ref string) (SagaView, error) {
	in, err := c.resolve(ctx, ref)
	if err != nil {
		return SagaView{}, err
	}
	if !in.Runtime.ActiveVmm.Valid {
		return SagaView{}, fmt.Errorf("%w: instance %s is %s; it has no VMM to stop", ErrInvalidState, in.Name, in.Runtime.State)
	}
	return c.startSaga(ctx, KindInstanceStop, in, sagaParams{Vmm: in.Runtime.ActiveVmm.UUID})
}

// RebootInstance reboots a running instance (the reboot saga).
func (c *ControlPlane) RebootInstance(ctx context.Context, ref string) (SagaView, error) {
	in, err := c.resolve(ctx, ref)
	if err != nil {
		return SagaView{}, err
	}
	if !in.Runtime.ActiveVmm.Valid {
		return SagaView{}, fmt.Errorf("%w: instance %s is %s; it does not run", ErrInvalidState, in.Name, in.Runtime.State)
	}
	return c.startSaga(ctx, KindInstanceReboot, in, sagaParams{Vmm: in.Runtime.ActiveVmm.UUID})
}

// MigrateInstance moves a running instance to sled target, or to any other
// active sled with room (the migrate saga). ErrSameSled when target is the
// sled it runs on; ErrNotFound for an unknown sled.
func (c *ControlPlane) MigrateInstance(ctx context.Context, ref string, target uuid.NullUUID) (SagaView, error) {
	in, err := c.resolve(ctx, ref)
	if err != nil {
		return SagaView{}, err
	}
	if err := c.migratable(ctx, in, in.Runtime.ActiveVmm.UUID); err != nil {
		return SagaView{}, err
	}
	src, err := c.o.Store.Vmm(ctx, in.Runtime.ActiveVmm.UUID)
	if err != nil {
		return SagaView{}, fmt.Errorf("migrate instance %s: %w", in.Name, err)
	}
	if target.Valid {
		if target.UUID == src.SledID {
			return SagaView{}, fmt.Errorf("migrate instance %s to sled %s: %w", in.Name, target.UUID, ErrSameSled)
		}
		if _, err := c.o.Store.Sled(ctx, target.UUID); err != nil {
			return SagaView{}, fmt.Errorf("migrate instance %s: sled %s: %w", in.Name, target.UUID, err)
		}
	}
	secret, err := newSecret()
	if err != nil {
		return SagaView{}, err
	}
	return c.startSaga(ctx, KindInstanceMigrate, in, sagaParams{Vmm: uuid.New(), Source: src.ID, Migration: uuid.New(),
		Secret: secret, Sled: target})
}

// DeleteInstance deletes an instance that has no VMM (the delete saga).
func (c *ControlPlane) DeleteInstance(ctx context.Context, ref string) (SagaView, error) {
	in, err := c.resolve(ctx, ref)
	if err != nil {
		return SagaView{}, err
	}
	if err := deletable(in); err != nil {
		return SagaView{}, err
	}
	return c.startSaga(ctx, KindInstanceDelete, in, sagaParams{})
}

// newSecret makes a migration's one-time secret: 32 random bytes, base64url
// (43 characters).
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a migration secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// startSaga stores a saga of kind for in, taking its updater lock in the
// same transaction (ErrInstanceBusy), and answers its view.
func (c *ControlPlane) startSaga(ctx context.Context, kind string, in model.Instance, p sagaParams) (SagaView, error) {
	r, err := c.sagas.Start(ctx, kind, uuid.NullUUID{UUID: in.ID, Valid: true}, p, true)
	if err != nil {
		return SagaView{}, fmt.Errorf("%s of instance %s: %w", kind, in.Name, err)
	}
	return c.sagaView(r), nil
}

// Saga reads a saga's progress (ErrNotFound).
func (c *ControlPlane) Saga(ctx context.Context, id uuid.UUID) (SagaView, error) {
	r, err := c.o.Store.Saga(ctx, id)
	if err != nil {
		return SagaView{}, fmt.Errorf("saga %s: %w", id, err)
	}
	return c.sagaView(r), nil
}

// sagaView shows a saga's progress: its steps by name, never its params.
func (c *ControlPlane) sagaView(r saga.Record) SagaView {
	v := SagaView{ID: r.ID, Kind: r.Kind, InstanceID: r.InstanceID.UUID, State: SagaState(r.State), Error: r.Error,
		TimeCreated: r.TimeCreated, TimeUpdated: r.TimeUpdated}
	if r.State == saga.Unwound || r.State == saga.Stuck || r.Error != "" {
		v.ErrorCode = storedErrorCode(r)
	}
	k, _ := c.sagas.Kind(r.Kind)
	for i, st := range r.Steps {
		name := fmt.Sprintf("step_%d", i)
		if i < len(k.Steps) {
			name = k.Steps[i].Name
		}
		v.Steps = append(v.Steps, StepView{Name: name, State: StepState(st)})
	}
	return v
}

// ListSleds lists the sleds with what their VMMs reserve.
func (c *ControlPlane) ListSleds(ctx context.Context) ([]SledView, error) {
	sleds, err := c.o.Store.Sleds(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sleds: %w", err)
	}
	return c.sledViews(ctx, sleds)
}

// ListSledsPage lists at most limit sleds whose ids sort after after
// (from the first when after is not Valid), by id.
func (c *ControlPlane) ListSledsPage(ctx context.Context, after uuid.NullUUID, limit int) ([]SledView, error) {
	sleds, err := c.o.Store.SledsAfter(ctx, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list sleds: %w", err)
	}
	return c.sledViews(ctx, sleds)
}

// sledViews adds to each sled what its VMMs reserve and how many it holds.
func (c *ControlPlane) sledViews(ctx context.Context, sleds []model.Sled) ([]SledView, error) {
	out := make([]SledView, 0, len(sleds))
	for _, s := range sleds {
		res, err := c.o.Store.Reserved(ctx, s.ID)
		if err != nil {
			return nil, fmt.Errorf("list sleds: %w", err)
		}
		vmms, err := c.o.Store.VmmsOnSled(ctx, s.ID)
		if err != nil {
			return nil, fmt.Errorf("list sleds: %w", err)
		}
		out = append(out, SledView{Sled: s, Reserved: res, Vmms: len(vmms)})
	}
	return out, nil
}

// OpenSerial attaches to the serial console of the instance's active VMM
// through its sled agent (ErrInvalidState when it has none). The agent's
// WebSocket starts with the output the VMM server still keeps; fromStart
// is not passed on (sled-agent v1's WebSocket takes no offset): read
// earlier output with the agent's serial history.
func (c *ControlPlane) OpenSerial(ctx context.Context, ref string, fromStart *uint64) (io.ReadWriteCloser, error) {
	in, err := c.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	if !in.Runtime.ActiveVmm.Valid {
		return nil, fmt.Errorf("%w: instance %s is %s; it has no console", ErrInvalidState, in.Name, in.Runtime.State)
	}
	v, err := c.o.Store.Vmm(ctx, in.Runtime.ActiveVmm.UUID)
	if err != nil {
		return nil, fmt.Errorf("the console of instance %s: %w", in.Name, err)
	}
	cl, err := c.sledOf(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("the console of instance %s: %w", in.Name, err)
	}
	conn, err := cl.Serial(ctx, v.ID)
	if err != nil {
		return nil, fmt.Errorf("the console of instance %s: %w", in.Name, err)
	}
	return conn, nil
}
