package db

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

func TestCreateVmmReservesAndReadsBack(t *testing.T) {
	f := newFixture(t)
	v := f.addVmm(t, f.inst, f.sled)
	got, err := f.d.Vmm(f.ctx, v.ID)
	require.NoError(t, err)
	require.Equal(t, v, got)
	reserved, err := f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, f.inst.Resources, reserved)

	err = f.d.CreateVmm(f.ctx, v)
	require.ErrorIs(t, err, controlplane.ErrConflict, "the same id twice")
	require.Contains(t, err.Error(), "vmm_pkey")
	reserved, err = f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, f.inst.Resources, reserved, "a refused VMM reserved nothing")

	_, err = f.d.Vmm(f.ctx, uuid.New())
	require.ErrorIs(t, err, controlplane.ErrNotFound)
}

func TestCreateVmmConflicts(t *testing.T) {
	f := newFixture(t)
	small := f.addSled(t, model.Resources{CPUs: 3, MemoryMiB: 4096})
	f.addVmm(t, f.inst, small)
	mk := func(in uuid.UUID, sled uuid.UUID, r model.Resources) model.Vmm {
		return model.Vmm{ID: uuid.New(), InstanceID: in, SledID: sled, Resources: r, TimeCreated: at(1),
			Runtime: model.VmmRuntime{State: model.VmmCreating, Gen: 1, TimeUpdated: at(1)}}
	}
	for name, tc := range map[string]struct {
		v    model.Vmm
		want string
	}{
		"cpus":     {mk(f.inst.ID, small.ID, model.Resources{CPUs: 2, MemoryMiB: 1}), "lacks room"},
		"memory":   {mk(f.inst.ID, small.ID, model.Resources{CPUs: 1, MemoryMiB: 4096}), "lacks room"},
		"no sled":  {mk(f.inst.ID, uuid.New(), model.Resources{CPUs: 1, MemoryMiB: 1}), "does not exist"},
		"no inst.": {mk(uuid.New(), small.ID, model.Resources{CPUs: 1, MemoryMiB: 1}), "does not exist"},
	} {
		err := f.d.CreateVmm(f.ctx, tc.v)
		require.ErrorIs(t, err, controlplane.ErrConflict, name)
		require.Contains(t, err.Error(), tc.want, name)
	}
	// Exactly what is left fits.
	require.NoError(t, f.d.CreateVmm(f.ctx, mk(f.inst.ID, small.ID, model.Resources{CPUs: 1, MemoryMiB: 3072})))

	_, lost, err := f.d.MarkSledLost(f.ctx, f.sled.ID, at(60), at(60))
	require.NoError(t, err)
	require.True(t, lost)
	err = f.d.CreateVmm(f.ctx, mk(f.inst.ID, f.sled.ID, model.Resources{CPUs: 1, MemoryMiB: 1}))
	require.ErrorIs(t, err, controlplane.ErrConflict)
	require.Contains(t, err.Error(), "lost")

	bad := mk(f.inst.ID, small.ID, model.Resources{CPUs: 0, MemoryMiB: 1})
	require.ErrorContains(t, f.d.CreateVmm(f.ctx, bad), "resources.cpus")
	bad = mk(f.inst.ID, small.ID, model.Resources{CPUs: 1, MemoryMiB: 1})
	bad.Runtime.State = model.VmmState{}
	require.ErrorContains(t, f.d.CreateVmm(f.ctx, bad), "runtime.state")
}

// Many VMMs asked for at once on a nearly full sled: exactly as many as
// fit are created, never more.
func TestConcurrentCreateVmmNeverOverReserves(t *testing.T) {
	f := newFixture(t)
	sled := f.addSled(t, model.Resources{CPUs: 10, MemoryMiB: 10 * 1024})
	// 7 of 10 taken.
	for range 7 {
		in := f.addInstance(t, "filler-"+uuid.NewString())
		in.Resources = model.Resources{CPUs: 1, MemoryMiB: 1024}
		f.addVmm(t, in, sled)
	}
	const racers = 12
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		ok, full  int
		otherErrs []error
	)
	for i := range racers {
		in := f.addInstance(t, "racer-"+uuid.NewString())
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.d.CreateVmm(f.ctx, model.Vmm{ID: uuid.New(), InstanceID: in.ID, SledID: sled.ID,
				Resources: model.Resources{CPUs: 1, MemoryMiB: 1024}, TimeCreated: at(i),
				Runtime: model.VmmRuntime{State: model.VmmCreating, Gen: 1, TimeUpdated: at(i)}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, controlplane.ErrConflict):
				full++
			default:
				otherErrs = append(otherErrs, err)
			}
		}()
	}
	wg.Wait()
	require.Empty(t, otherErrs)
	require.Equal(t, 3, ok)
	require.Equal(t, racers-3, full)
	reserved, err := f.d.Reserved(f.ctx, sled.ID)
	require.NoError(t, err)
	require.Equal(t, model.Resources{CPUs: 10, MemoryMiB: 10 * 1024}, reserved)
}

func TestUpdateVmmRuntimeGenerationsAndRelease(t *testing.T) {
	f := newFixture(t)
	v := f.addVmm(t, f.inst, f.sled)
	for _, step := range []struct {
		r    model.VmmRuntime
		want model.WriteResult
	}{
		{vmmRT(model.VmmStarting, 2), model.WriteUpdated},
		{vmmRT(model.VmmStarting, 2), model.WriteStale}, // equal
		{vmmRT(model.VmmCreating, 1), model.WriteStale}, // older
		{running(5), model.WriteUpdated},                // a gap is fine
		{vmmRT(model.VmmStopping, 4), model.WriteStale},
	} {
		res, err := f.d.UpdateVmmRuntime(f.ctx, v.ID, step.r)
		require.NoError(t, err)
		require.Equal(t, step.want, res, "%v", step.r)
	}
	got, err := f.d.Vmm(f.ctx, v.ID)
	require.NoError(t, err)
	require.Equal(t, running(5), got.Runtime)
	reserved, err := f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Equal(t, f.inst.Resources, reserved, "a running VMM holds its reservation")

	res, err := f.d.UpdateVmmRuntime(f.ctx, uuid.New(), running(9))
	require.NoError(t, err)
	require.Equal(t, model.WriteMissing, res)

	failed := vmmRT(model.VmmFailed(model.FailureReason{Kind: model.FailureProcessExited, Message: "signal: killed"}), 6)
	res, err = f.d.UpdateVmmRuntime(f.ctx, v.ID, failed)
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, res)
	reserved, err = f.d.Reserved(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Zero(t, reserved, "a destroyable VMM's reservation is released")

	// Terminal is final: a newer report does not bring it back.
	res, err = f.d.UpdateVmmRuntime(f.ctx, v.ID, running(7))
	require.NoError(t, err)
	require.Equal(t, model.WriteStale, res)
	got, err = f.d.Vmm(f.ctx, v.ID)
	require.NoError(t, err)
	require.Equal(t, failed, got.Runtime)
}

func TestVmmsOnSledAndRetire(t *testing.T) {
	f := newFixture(t)
	var ids []uuid.UUID
	for range 3 {
		ids = append(ids, f.addVmm(t, f.inst, f.sled).ID)
	}
	in2 := f.addInstance(t, "elsewhere")
	f.addVmm(t, in2, f.addSled(t, capacity16))

	list, err := f.d.VmmsOnSled(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Len(t, list, 3)
	for i := 1; i < len(list); i++ {
		require.Less(t, list[i-1].ID.String(), list[i].ID.String())
	}

	err = f.d.RetireVmm(f.ctx, ids[0], at(10))
	require.ErrorIs(t, err, controlplane.ErrConflict, "a VMM that is not terminal")
	require.ErrorIs(t, f.d.RetireVmm(f.ctx, uuid.New(), at(10)), controlplane.ErrNotFound)

	_, err = f.d.UpdateVmmRuntime(f.ctx, ids[0], vmmRT(model.VmmDestroyed, 2))
	require.NoError(t, err)
	require.NoError(t, f.d.RetireVmm(f.ctx, ids[0], at(10)))
	require.NoError(t, f.d.RetireVmm(f.ctx, ids[0], at(11)), "retiring twice is no error")
	v, err := f.d.Vmm(f.ctx, ids[0])
	require.NoError(t, err)
	require.NotNil(t, v.TimeRetired)
	require.Equal(t, at(10), *v.TimeRetired, "the first retirement stands")

	list, err = f.d.VmmsOnSled(f.ctx, f.sled.ID)
	require.NoError(t, err)
	require.Len(t, list, 2)
	for _, v := range list {
		require.NotEqual(t, ids[0], v.ID)
	}
}
