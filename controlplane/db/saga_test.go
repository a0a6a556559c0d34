package db

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/saga"
)

// newSaga is a saga record of two steps for instance (uuid.Nil: none),
// as an executor starts one.
func newSaga(instance uuid.UUID) saga.Record {
	return saga.Record{ID: uuid.New(), Kind: "test", InstanceID: uuid.NullUUID{UUID: instance, Valid: instance != uuid.Nil},
		Params: json.RawMessage(`{"n":1}`), Data: json.RawMessage(`{}`), State: saga.Running,
		Steps: []saga.StepState{saga.StepPending, saga.StepPending}, LeaseUntil: at(0), TimeCreated: at(0), TimeUpdated: at(0)}
}

func TestSagaRoundTrip(t *testing.T) {
	f := newFixture(t)
	r := newSaga(f.inst.ID)
	require.NoError(t, f.d.CreateSaga(f.ctx, r, false))
	got, err := f.d.Saga(f.ctx, r.ID)
	require.NoError(t, err)
	require.JSONEq(t, string(r.Params), string(got.Params))
	got.Params, r.Params = nil, nil
	require.Equal(t, r, got)
	_, err = f.d.Saga(f.ctx, uuid.New())
	require.ErrorIs(t, err, controlplane.ErrNotFound)
	list, err := f.d.SagasOfInstance(f.ctx, f.inst.ID)
	require.NoError(t, err)
	require.Len(t, list, 1)

	// Invariants the schema holds.
	bad := newSaga(uuid.Nil)
	bad.State = saga.Unwound // without its error
	require.ErrorIs(t, f.d.CreateSaga(f.ctx, bad, false), controlplane.ErrConflict)
	bad = newSaga(uuid.New()) // an unknown instance
	require.ErrorIs(t, f.d.CreateSaga(f.ctx, bad, false), controlplane.ErrConflict)
	bad = newSaga(uuid.Nil)
	bad.Step = 3 // beyond its two steps
	require.ErrorIs(t, f.d.CreateSaga(f.ctx, bad, false), controlplane.ErrConflict)
}

// The updater lock: one saga at a time; taking it again is no error;
// releasing it needs the holder; each change bumps its generation; a saga
// created with the lock while another holds it is not stored.
func TestUpdaterLock(t *testing.T) {
	f := newFixture(t)
	a, b := newSaga(f.inst.ID), newSaga(f.inst.ID)
	require.NoError(t, f.d.CreateSaga(f.ctx, a, true))
	holder, gen, err := f.d.InstanceUpdater(f.ctx, f.inst.ID)
	require.NoError(t, err)
	require.Equal(t, uuid.NullUUID{UUID: a.ID, Valid: true}, holder)
	require.Equal(t, int64(1), gen)

	err = f.d.CreateSaga(f.ctx, b, true)
	require.ErrorIs(t, err, controlplane.ErrInstanceBusy)
	require.ErrorIs(t, err, saga.ErrLocked)
	_, err = f.d.Saga(f.ctx, b.ID)
	require.ErrorIs(t, err, controlplane.ErrNotFound, "a saga refused the lock was stored")
	require.ErrorIs(t, f.d.LockInstance(f.ctx, f.inst.ID, b.ID), controlplane.ErrInstanceBusy)
	require.NoError(t, f.d.LockInstance(f.ctx, f.inst.ID, a.ID), "the holder takes it again")

	require.NoError(t, f.d.UnlockInstance(f.ctx, f.inst.ID, b.ID))
	holder, _, err = f.d.InstanceUpdater(f.ctx, f.inst.ID)
	require.NoError(t, err)
	require.Equal(t, a.ID, holder.UUID, "a stranger released the lock")
	require.NoError(t, f.d.UnlockInstance(f.ctx, f.inst.ID, a.ID))
	holder, gen2, err := f.d.InstanceUpdater(f.ctx, f.inst.ID)
	require.NoError(t, err)
	require.False(t, holder.Valid)
	require.Greater(t, gen2, gen)
	require.NoError(t, f.d.CreateSaga(f.ctx, b, true))
	require.ErrorIs(t, f.d.LockInstance(f.ctx, uuid.New(), a.ID), controlplane.ErrNotFound)
}

// Many sagas race for one instance's lock: exactly one wins.
func TestUpdaterLockUnderContention(t *testing.T) {
	f := newFixture(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.d.CreateSaga(f.ctx, newSaga(f.inst.ID), true)
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, controlplane.ErrInstanceBusy) {
				t.Errorf("unexpected: %v", err)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, wins)
}

// Claims take new sagas and those whose lease expired, never one another
// owner holds, nor one in skip, nor one that ended; renewals and saves
// need the owner.
func TestClaimsAndLeases(t *testing.T) {
	f := newFixture(t)
	me, other := uuid.New(), uuid.New()
	fresh, held, ended := newSaga(uuid.Nil), newSaga(uuid.Nil), newSaga(uuid.Nil)
	ended.State = saga.Done
	held.TimeCreated = at(-1) // the oldest: claimed first
	for _, r := range []saga.Record{fresh, held, ended} {
		require.NoError(t, f.d.CreateSaga(f.ctx, r, false))
	}
	got, err := f.d.ClaimSagas(f.ctx, other, nil, at(10), at(100), 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, held.ID, got[0].ID)
	require.Equal(t, other, got[0].Owner.UUID)

	got, err = f.d.ClaimSagas(f.ctx, me, nil, at(20), at(50), 10)
	require.NoError(t, err)
	require.Len(t, got, 1, "a lease another holds was taken")
	require.Equal(t, fresh.ID, got[0].ID)
	again, err := f.d.ClaimSagas(f.ctx, me, []uuid.UUID{fresh.ID}, at(21), at(50), 10)
	require.NoError(t, err)
	require.Empty(t, again, "a saga in skip was claimed")
	again, err = f.d.ClaimSagas(f.ctx, me, nil, at(21), at(50), 10)
	require.NoError(t, err)
	require.Len(t, again, 1, "its own saga, not run here, is taken back")

	kept, err := f.d.RenewLeases(f.ctx, me, []uuid.UUID{fresh.ID, held.ID}, at(150))
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{fresh.ID}, kept)

	// Once the other's lease expires, the saga is mine; the other can no
	// longer store its progress.
	got, err = f.d.ClaimSagas(f.ctx, me, []uuid.UUID{fresh.ID}, at(101), at(200), 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, held.ID, got[0].ID)
	h := got[0]
	h.Step, h.Steps[0] = 1, saga.StepDone
	require.ErrorIs(t, f.d.SaveSaga(f.ctx, h, other, at(300)), saga.ErrLeaseLost)
	require.NoError(t, f.d.SaveSaga(f.ctx, h, me, at(300)))
	stored, err := f.d.Saga(f.ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, 1, stored.Step)
	require.Equal(t, at(300), stored.LeaseUntil)

	// The limit holds.
	for range 3 {
		require.NoError(t, f.d.CreateSaga(f.ctx, newSaga(uuid.Nil), false))
	}
	got, err = f.d.ClaimSagas(f.ctx, other, nil, at(400), at(500), 2)
	require.NoError(t, err)
	require.Len(t, got, 2)
}
