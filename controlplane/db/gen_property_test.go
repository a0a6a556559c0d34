package db

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"

	"github.com/wagglevm/waggle/controlplane/model"
)

// randomVmmState picks a state; a terminal one now and then.
func randomVmmState(rng *rand.Rand) model.VmmState {
	states := []model.VmmState{model.VmmStarting, model.VmmRunning, model.VmmStopping, model.VmmStopped,
		model.VmmRebooting, model.VmmMigrating}
	if rng.IntN(25) == 0 {
		return model.VmmFailed(model.FailureReason{Kind: model.FailureVMMFailed, Message: fmt.Sprint(rng.IntN(100))})
	}
	return states[rng.IntN(len(states))]
}

// Random writes of a VMM's runtime, through both doors (UpdateVmmRuntime
// and ApplySledVmmState), against a model of the rule: a write applies iff
// its generation is above the stored one and the stored state is not
// terminal. After each, the result and the stored runtime are the model's.
func TestVmmGenerationRuleHoldsOverRandomWrites(t *testing.T) {
	f := newFixture(t)
	for seed := uint64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		in := f.addInstance(t, fmt.Sprintf("prop-%d", seed))
		v := f.addVmm(t, in, f.sled)
		want := v.Runtime
		for i := range 60 {
			r := vmmRT(randomVmmState(rng), model.Generation(1+rng.IntN(40)))
			var (
				got model.WriteResult
				err error
			)
			if rng.IntN(2) == 0 {
				got, err = f.d.UpdateVmmRuntime(f.ctx, v.ID, r)
			} else {
				var ap controlplane.Applied
				ap, err = f.d.ApplySledVmmState(f.ctx, v.ID, "", sledState(r), at(i))
				got = ap.Vmm
			}
			require.NoError(t, err)
			expect := model.WriteStale
			if r.Gen > want.Gen && !want.State.IsTerminal() {
				expect, want = model.WriteUpdated, r
			}
			require.Equal(t, expect, got, "seed %d step %d: %v over %v", seed, i, r, want)
			stored, err := f.d.Vmm(f.ctx, v.ID)
			require.NoError(t, err)
			require.Equal(t, want, stored.Runtime, "seed %d step %d", seed, i)
			reserved := false
			require.NoError(t, f.d.Pool().QueryRow(f.ctx, "SELECT EXISTS (SELECT 1 FROM sled_reservation WHERE vmm_id = $1)", v.ID).Scan(&reserved))
			require.Equal(t, !want.State.IsDestroyable(), reserved, "seed %d step %d: a reservation exactly while the VMM can run", seed, i)
		}
	}
}

// Writers race with random generations on one instance; each generation
// carries its own state (a failure whose message is the generation). At
// the end the stored generation is the greatest written and the state the
// one written with it, and no writer was told "updated" for a generation
// below one already stored before it.
func TestInstanceGenerationRuleUnderConcurrentWriters(t *testing.T) {
	f := newFixture(t)
	runtimeOf := func(g model.Generation) model.InstanceRuntime {
		return model.InstanceRuntime{State: model.InstanceFailed, Gen: g, TimeUpdated: at(int(g)),
			Failure: &model.FailureReason{Kind: model.FailureVMMGone, Message: fmt.Sprint(g)}}
	}
	const writers, each = 6, 25
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		maxGen  model.Generation
		errs    []error
		updated = map[model.Generation]int{}
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range each {
				g := model.Generation(2 + rng.IntN(200))
				res, err := f.d.UpdateInstanceRuntime(f.ctx, f.inst.ID, runtimeOf(g))
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				if res == model.WriteUpdated {
					updated[g]++
				}
				maxGen = max(maxGen, g)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, runtimeOf(maxGen), f.instanceRuntime(t, f.inst.ID))
	for g, n := range updated {
		require.Equal(t, 1, n, "generation %d applied %d times", g, n)
	}
	require.Equal(t, 1, updated[maxGen])
}
