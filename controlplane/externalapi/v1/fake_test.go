package v1

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

// fakeOps is an Operations whose answers the test sets; it records the
// arguments of each call. err, when set, is every call's answer.
type fakeOps struct {
	mu        sync.Mutex
	err       error
	instances map[string]controlplane.InstanceView // by name and by id
	saga      controlplane.SagaView
	sleds     []controlplane.SledView
	created   []controlplane.InstanceCreate
	listed    []controlplane.InstanceView // what ListInstancesPage pages over; nil for ticker and alpha
	calls     []string                    // "start ref", "migrate ref target"
	serial    func(ref string, from *uint64) (io.ReadWriteCloser, error)
	// notFoundTarget makes MigrateInstance answer ErrNotFound for a target
	// sled while the instance exists.
	notFoundTarget bool
}

var (
	t0     = time.Date(2026, 11, 27, 10, 15, 0, 10e6, time.UTC)
	instID = uuid.MustParse("0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10")
	vmmID  = uuid.MustParse("2f1c7a9e-4b3d-4e5f-8a6b-7c8d9e0f1a2b")
	sledA  = uuid.MustParse("5b0e9c3a-1d7f-4e2a-8c6b-0f1e2d3c4b5a")
	sledB  = uuid.MustParse("1b0e9c3a-1d7f-4e2a-8c6b-0f1e2d3c4b5a")
	sagaID = uuid.MustParse("9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b")
)

func tickerView() controlplane.InstanceView {
	vm := &model.Vmm{ID: vmmID, InstanceID: instID, SledID: sledA, Address: "127.0.0.1:12500",
		Resources: model.Resources{CPUs: 1, MemoryMiB: 256}, TimeCreated: t0,
		Runtime: model.VmmRuntime{State: model.VmmRunning, Gen: 3, TimeUpdated: t0}}
	return controlplane.InstanceView{
		Instance: model.Instance{ID: instID, Name: "ticker", Description: "ticks", SpecVersion: "vmm-server/v1",
			Spec:      []byte(`{"board":{"cpus":1,"memory_mb":256,"chipset":"i440fx"},"boot":{"image":"ticker"}}`),
			Resources: model.Resources{CPUs: 1, MemoryMiB: 256}, TimeCreated: t0,
			Runtime: model.InstanceRuntime{State: model.InstanceVmm, Gen: 3, TimeUpdated: t0.Add(time.Second),
				ActiveVmm: uuid.NullUUID{UUID: vmmID, Valid: true}}},
		State:     model.VisibleRunning,
		ActiveVmm: vm,
	}
}

func newFakeOps() *fakeOps {
	v := tickerView()
	return &fakeOps{
		instances: map[string]controlplane.InstanceView{v.Instance.Name: v, v.Instance.ID.String(): v},
		saga: controlplane.SagaView{ID: sagaID, Kind: "instance_start", InstanceID: instID, State: controlplane.SagaRunning,
			Steps:       []controlplane.StepView{{Name: "pick_sled", State: controlplane.StepDone}, {Name: "reserve", State: controlplane.StepPending}},
			TimeCreated: t0, TimeUpdated: t0},
		sleds: []controlplane.SledView{
			{Sled: model.Sled{ID: sledA, Address: "10.0.0.7:12300", APIVersions: []string{"v1"}, State: model.SledActive,
				Capacity: model.Resources{CPUs: 16, MemoryMiB: 65536}, TimeCreated: t0, LastContact: t0}, Reserved: model.Resources{CPUs: 1, MemoryMiB: 256}, Vmms: 1},
			{Sled: model.Sled{ID: sledB, Address: "10.0.0.8:12300", APIVersions: []string{"v1"}, State: model.SledLost,
				Capacity: model.Resources{CPUs: 8, MemoryMiB: 8192}, TimeCreated: t0, LastContact: t0}},
		},
	}
}

func (f *fakeOps) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeOps) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeOps) CreateInstance(_ context.Context, req controlplane.InstanceCreate) (controlplane.InstanceView, *controlplane.SagaView, error) {
	if err := f.record("create " + req.Name); err != nil {
		return controlplane.InstanceView{}, nil, err
	}
	f.mu.Lock()
	f.created = append(f.created, req)
	f.mu.Unlock()
	v := tickerView()
	v.Instance.Name, v.Instance.Description, v.Instance.Spec = req.Name, req.Description, req.Spec
	v.Instance.Runtime = model.InstanceRuntime{State: model.InstanceCreating, Gen: 1, TimeUpdated: t0}
	v.State, v.ActiveVmm = model.VisibleCreating, nil
	if req.Start {
		s := f.saga
		return v, &s, nil
	}
	return v, nil, nil
}

func (f *fakeOps) ListInstances(context.Context) ([]controlplane.InstanceView, error) {
	if err := f.record("list"); err != nil {
		return nil, err
	}
	a := tickerView()
	b := tickerView()
	b.Instance.ID, b.Instance.Name = uuid.New(), "alpha"
	return []controlplane.InstanceView{a, b}, nil
}

// ListInstancesPage pages over listed (ticker and alpha when nil), by
// name, as the store does.
func (f *fakeOps) ListInstancesPage(_ context.Context, after string, limit int) ([]controlplane.InstanceView, error) {
	if err := f.record(fmt.Sprintf("list after %q limit %d", after, limit)); err != nil {
		return nil, err
	}
	all := f.listed
	if all == nil {
		a, b := tickerView(), tickerView()
		b.Instance.ID, b.Instance.Name = uuid.New(), "alpha"
		all = []controlplane.InstanceView{a, b}
	}
	all = slices.Clone(all)
	slices.SortFunc(all, func(a, b controlplane.InstanceView) int { return strings.Compare(a.Instance.Name, b.Instance.Name) })
	var out []controlplane.InstanceView
	for _, v := range all {
		if v.Instance.Name > after && len(out) < limit {
			out = append(out, v)
		}
	}
	return out, nil
}

func (f *fakeOps) GetInstance(_ context.Context, ref string) (controlplane.InstanceView, error) {
	if err := f.record("get " + ref); err != nil {
		return controlplane.InstanceView{}, err
	}
	v, ok := f.instances[ref]
	if !ok {
		return v, controlplane.ErrNotFound
	}
	return v, nil
}

func (f *fakeOps) sagaFor(call, ref string, extra ...string) (controlplane.SagaView, error) {
	line := call + " " + ref
	for _, x := range extra {
		line += " " + x
	}
	if err := f.record(line); err != nil {
		return controlplane.SagaView{}, err
	}
	if _, ok := f.instances[ref]; !ok {
		return controlplane.SagaView{}, controlplane.ErrNotFound
	}
	s := f.saga
	s.Kind = "instance_" + call
	return s, nil
}

func (f *fakeOps) StartInstance(_ context.Context, ref string) (controlplane.SagaView, error) {
	return f.sagaFor("start", ref)
}

func (f *fakeOps) StopInstance(_ context.Context, ref string) (controlplane.SagaView, error) {
	return f.sagaFor("stop", ref)
}

func (f *fakeOps) RebootInstance(_ context.Context, ref string) (controlplane.SagaView, error) {
	return f.sagaFor("reboot", ref)
}

func (f *fakeOps) DeleteInstance(_ context.Context, ref string) (controlplane.SagaView, error) {
	return f.sagaFor("delete", ref)
}

func (f *fakeOps) MigrateInstance(_ context.Context, ref string, target uuid.NullUUID) (controlplane.SagaView, error) {
	t := "anywhere"
	if target.Valid {
		t = target.UUID.String()
	}
	if f.notFoundTarget && target.Valid {
		f.record("migrate " + ref + " " + t)
		return controlplane.SagaView{}, controlplane.ErrNotFound
	}
	return f.sagaFor("migrate", ref, t)
}

func (f *fakeOps) Saga(_ context.Context, id uuid.UUID) (controlplane.SagaView, error) {
	if err := f.record("saga " + id.String()); err != nil {
		return controlplane.SagaView{}, err
	}
	if id != f.saga.ID {
		return controlplane.SagaView{}, controlplane.ErrNotFound
	}
	return f.saga, nil
}

func (f *fakeOps) ListSleds(context.Context) ([]controlplane.SledView, error) {
	if err := f.record("sleds"); err != nil {
		return nil, err
	}
	return f.sleds, nil
}

// ListSledsPage pages over sleds, by id, as the store does.
func (f *fakeOps) ListSledsPage(_ context.Context, after uuid.NullUUID, limit int) ([]controlplane.SledView, error) {
	if err := f.record(fmt.Sprintf("sleds after %v limit %d", after, limit)); err != nil {
		return nil, err
	}
	all := slices.Clone(f.sleds)
	slices.SortFunc(all, func(a, b controlplane.SledView) int { return strings.Compare(a.Sled.ID.String(), b.Sled.ID.String()) })
	var out []controlplane.SledView
	for _, v := range all {
		if (!after.Valid || v.Sled.ID.String() > after.UUID.String()) && len(out) < limit {
			out = append(out, v)
		}
	}
	return out, nil
}

func (f *fakeOps) OpenSerial(_ context.Context, ref string, from *uint64) (io.ReadWriteCloser, error) {
	if err := f.record("serial " + ref); err != nil {
		return nil, err
	}
	if f.serial == nil {
		return nil, controlplane.ErrInvalidState
	}
	return f.serial(ref, from)
}

var _ controlplane.Operations = (*fakeOps)(nil)
