package sledagent_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/sledagent"
)

// BenchmarkDoorbell measures, over a thousand changes of one VMM's state
// (each waited for before the next), the time from the change to the
// doorbell's arrival at a control-plane stand-in over loopback HTTP, and
// to the state pulled back from the agent's API (GET /v1/vmms/{id}/state)
// with the change's generation. It reports p50 and p99 of both (aim: p99
// under 20 ms).
//
// The VMM server process is real; its instance is a fake (this benchmark
// needs no KVM): a change is the fake instance's state moving, which the
// agent's watcher sees at once. It thus measures the agent (watch, state,
// generation, doorbell, API) and the loopback, not a VM's transitions.
func BenchmarkDoorbell(b *testing.B) {
	b.Log("VMM: a real waggle server process with a fake instance (no VM is needed for this measure)")
	for range b.N {
		arrive, pull := doorbellLatencies(b, 1000)
		b.ReportMetric(pct(arrive, 50), "ring-p50-ms")
		b.ReportMetric(pct(arrive, 99), "ring-p99-ms")
		b.ReportMetric(pct(pull, 50), "pulled-p50-ms")
		b.ReportMetric(pct(pull, 99), "pulled-p99-ms")
	}
}

// TestDoorbellLatency runs the benchmark's measure briefly, so that it is
// known to work (no timing is asserted).
func TestDoorbellLatency(t *testing.T) {
	arrive, pull := doorbellLatencies(t, 50)
	require.Len(t, arrive, 50)
	require.Len(t, pull, 50)
	t.Logf("over 50 changes: ring p50 %.2f ms p99 %.2f ms; pulled p50 %.2f ms p99 %.2f ms",
		pct(arrive, 50), pct(arrive, 99), pct(pull, 50), pct(pull, 99))
}

func doorbellLatencies(tb testing.TB, n int) (arrive, pull []time.Duration) {
	cp := newControlPlane(tb)
	cp.up()
	f := newFakes()
	root, err := os.MkdirTemp("", "sledagent-bench-")
	require.NoError(tb, err)
	defer os.RemoveAll(root)
	a := newAgent(tb, root, f.dial, cp.bell(), bigSled)
	defer a.Close()
	url, token := serve(tb, a)
	cp.agent = agentClient(tb, url, token)
	id := uuid.New()
	v, _, err := a.Ensure(context.Background(), id, ensureReq(tb, "bench"))
	require.NoError(tb, err)
	defer a.Unregister(context.Background(), id, true)
	inst := f.at(v.Addr)
	// Wait for the registration's own ring and pull.
	waitPulled(tb, cp, id, int64(stateOf(a, id).Gen))
	drain(cp.arrived)
	states := []sledagent.VmmState{sledagent.StateRunning, sledagent.StateRebooting}
	for i := range n {
		want := int64(stateOf(a, id).Gen) + 1
		start := time.Now()
		inst.set(states[i%2], "")
		var rang time.Time
		for {
			arr := <-cp.arrived
			if rang.IsZero() {
				rang = arr.at
			}
			if arr.gen >= want {
				arrive = append(arrive, rang.Sub(start))
				pull = append(pull, arr.got.Sub(start))
				break
			}
		}
	}
	return arrive, pull
}

func waitPulled(tb testing.TB, cp *controlPlane, id uuid.UUID, gen int64) {
	deadline := time.After(20 * time.Second)
	for {
		select {
		case a := <-cp.arrived:
			if a.id == id && a.gen >= gen {
				return
			}
		case <-deadline:
			tb.Fatalf("generation %d of %s was never pulled", gen, id)
		}
	}
}

func drain(c chan ringArrival) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// pct returns the p-th percentile of ds in milliseconds.
func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return float64(s[i]) / float64(time.Millisecond)
}
