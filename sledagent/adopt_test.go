package sledagent_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/sledagent"
)

// flakyDial fails the first n dials of each address as a busy or slow
// server would (a probe that timed out, a 503 too_many_connections), then
// dials for real.
type flakyDial struct {
	mu    sync.Mutex
	left  map[string]int
	n     int
	calls int
	next  sledagent.Dialer
}

func (d *flakyDial) dial(ctx context.Context, addr, token string) (sledagent.VMMClient, error) {
	d.mu.Lock()
	d.calls++
	left, ok := d.left[addr]
	if !ok {
		left = d.n
	}
	if left > 0 {
		d.left[addr] = left - 1
		d.mu.Unlock()
		if left%2 == 0 {
			return nil, fmt.Errorf("probe http://%s/v1/instance: context deadline exceeded: %w", addr, sledagent.ErrVMMUnavailable)
		}
		return nil, fmt.Errorf("probe http://%s/v1/instance: 503 too many connections: %w", addr, sledagent.ErrVMMUnavailable)
	}
	d.mu.Unlock()
	return d.next(ctx, addr, token)
}

// A VMM whose server does not answer while a new agent adopts it (its
// pid and command line prove it is the registry's) is adopted, not
// killed: the watcher dials it again with backoff, and its state and
// later changes are followed as if nothing happened. Restarting the agent
// loses no running VMM.
func TestAdoptionSurvivesTransientDialFailures(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, nil, bigSled)
	id := uuid.New()
	v, _, err := a.Ensure(context.Background(), id, ensureReq(t, id.String()))
	require.NoError(t, err)
	pid := pidOf(t, root, id)
	killVMMs(t, pid)
	f.At(v.Addr).Set(sledagent.StateRunning, "")
	assert.Eventually(t, func() bool { return stateOf(a, id).State == sledagent.StateRunning }, 10*time.Second, 5*time.Millisecond)
	gen := stateOf(a, id).Gen
	require.NoError(t, a.Close())

	flaky := &flakyDial{left: map[string]int{}, n: 4, next: f.Dial}
	bell := newBell()
	a2 := newAgent(t, root, flaky.dial, bell, bigSled)
	defer a2.Close()
	st := stateOf(a2, id)
	require.Equal(t, sledagent.StateRunning, st.State, "adopted, not failed: %+v", st.Failure)
	require.Equal(t, gen, st.Gen)
	require.True(t, alive(pid), "a server that did not answer at once was killed")
	// The watcher reaches the server once it answers, and follows it.
	f.At(v.Addr).Set(sledagent.StateRebooting, "")
	assert.Eventually(t, func() bool { return stateOf(a2, id).State == sledagent.StateRebooting }, 20*time.Second, 5*time.Millisecond)
	require.True(t, alive(pid))
	flaky.mu.Lock()
	require.Greater(t, flaky.calls, flaky.n, "dialled again after the failures")
	flaky.mu.Unlock()
	_, err = a2.Request(context.Background(), id, sledagent.RequestStop)
	require.NoError(t, err, "requests reach the adopted server")
}

// Until an adopted server answers, requests for it answer
// ErrVMMUnavailable (not a panic on a missing client), and the VMM is not
// failed.
func TestAdoptedNotAnsweringYet(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, nil, bigSled)
	id := uuid.New()
	_, _, err := a.Ensure(context.Background(), id, ensureReq(t, id.String()))
	require.NoError(t, err)
	pid := pidOf(t, root, id)
	killVMMs(t, pid)
	require.NoError(t, a.Close())

	never := &flakyDial{left: map[string]int{}, n: 1 << 30, next: f.Dial}
	a2 := newAgent(t, root, never.dial, nil, bigSled)
	defer a2.Close()
	_, err = a2.Request(context.Background(), id, sledagent.RequestRun)
	require.ErrorIs(t, err, sledagent.ErrVMMUnavailable)
	_, err = a2.Serial(context.Background(), id, sledagent.SerialQuery{})
	require.ErrorIs(t, err, sledagent.ErrVMMUnavailable)
	require.Equal(t, sledagent.StateCreating, stateOf(a2, id).State)
	require.True(t, alive(pid))
}
