package db

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/internal/pgembed/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// t0 is the tests' clock: microseconds, as the database keeps them.
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openT opens a store on a fresh database.
func openT(t testing.TB) (*DB, context.Context) {
	t.Helper()
	ctx := ctxT(t)
	d, err := Open(ctx, pgtest.Database(t))
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d, ctx
}

// fixture is a sled and an instance on a fresh store.
type fixture struct {
	d    *DB
	ctx  context.Context
	sled model.Sled
	inst model.Instance
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	d, ctx := openT(t)
	f := &fixture{d: d, ctx: ctx}
	f.sled = f.addSled(t, capacity16)
	f.inst = f.addInstance(t, "vm-1")
	return f
}

func (f *fixture) addSled(t testing.TB, capacity model.Resources) model.Sled {
	t.Helper()
	s := model.Sled{ID: uuid.New(), Address: "127.0.0.1:12345", APIVersions: []string{"v1"}, Capacity: capacity,
		TimeCreated: at(0), LastContact: at(0)}
	require.NoError(t, f.d.RegisterSled(f.ctx, s))
	s.State = model.SledActive
	return s
}

func (f *fixture) addInstance(t testing.TB, name string) model.Instance {
	t.Helper()
	in := model.Instance{ID: uuid.New(), Name: name, Description: "a test VM", SpecVersion: "v1",
		Spec: []byte(`{"version":"v1","spec":{"vcpus":2,"memory_mib":1024}}`), Resources: model.Resources{CPUs: 2, MemoryMiB: 1024},
		TimeCreated: at(0), Runtime: model.InstanceRuntime{State: model.InstanceNoVmm, Gen: 1, TimeUpdated: at(0)}}
	require.NoError(t, f.d.CreateInstance(f.ctx, in))
	return in
}

// addVmm creates a VMM of instance in on sled s, in state creating.
func (f *fixture) addVmm(t testing.TB, in model.Instance, s model.Sled) model.Vmm {
	t.Helper()
	v := model.Vmm{ID: uuid.New(), InstanceID: in.ID, SledID: s.ID, Resources: in.Resources, TimeCreated: at(1),
		Runtime: model.VmmRuntime{State: model.VmmCreating, Gen: 1, TimeUpdated: at(1)}}
	require.NoError(t, f.d.CreateVmm(f.ctx, v))
	return v
}

// start gives the instance a running active VMM (as a start saga would)
// and returns it.
func (f *fixture) start(t testing.TB, in model.Instance, s model.Sled) model.Vmm {
	t.Helper()
	v := f.addVmm(t, in, s)
	cur, err := f.d.Instance(f.ctx, in.ID)
	require.NoError(t, err)
	r := cur.Runtime
	r.State, r.ActiveVmm, r.Failure = model.InstanceVmm, uuid.NullUUID{UUID: v.ID, Valid: true}, nil
	r.Gen, r.TimeUpdated = r.Gen.Next(), at(2)
	res, err := f.d.UpdateInstanceRuntime(f.ctx, in.ID, r)
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, res)
	v.Runtime = model.VmmRuntime{State: model.VmmRunning, Gen: 3, TimeUpdated: at(3)}
	ap, err := f.d.ApplySledVmmState(f.ctx, v.ID, "127.0.0.1:4000", model.SledVmmState{Vmm: v.Runtime}, at(3))
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, ap.Vmm)
	return v
}

func (f *fixture) instanceRuntime(t testing.TB, id uuid.UUID) model.InstanceRuntime {
	t.Helper()
	in, err := f.d.Instance(f.ctx, id)
	require.NoError(t, err)
	return in.Runtime
}

// snapshot is every row of every table, as JSON text, in a fixed order:
// what "changed nothing" compares.
func snapshot(t testing.TB, ctx context.Context, pool *pgxpool.Pool) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"sled", "instance", "vmm", "migration", "sled_reservation"} {
		rows, err := pool.Query(ctx, "SELECT to_jsonb(r)::TEXT FROM "+table+" r ORDER BY 1")
		require.NoError(t, err)
		for rows.Next() {
			var s string
			require.NoError(t, rows.Scan(&s))
			out = append(out, table+": "+s)
		}
		require.NoError(t, rows.Err())
	}
	return out
}

func nu(id uuid.UUID) uuid.NullUUID { return uuid.NullUUID{UUID: id, Valid: true} }

var capacity16 = model.Resources{CPUs: 16, MemoryMiB: 65536}

// vmmRT is a VMM runtime at generation gen, updated at at(gen).
func vmmRT(s model.VmmState, gen model.Generation) model.VmmRuntime {
	return model.VmmRuntime{State: s, Gen: gen, TimeUpdated: at(int(gen))}
}

func running(gen model.Generation) model.VmmRuntime { return vmmRT(model.VmmRunning, gen) }

func sledState(r model.VmmRuntime) model.SledVmmState { return model.SledVmmState{Vmm: r} }
