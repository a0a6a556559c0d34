package sledagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/spec"
)

// stubClient is a VMM server that accepts everything and reports nothing:
// the state monitor waits until it is cancelled. observe, when set,
// answers the monitor instead.
type stubClient struct {
	mu      sync.Mutex
	ensured int
	observe func(ctx context.Context, gen uint64) (Observation, error)
	board   *Resources // what SpecBoard answers
}

func (c *stubClient) SpecBoard(ctx context.Context) (*Resources, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.board, nil
}

func (c *stubClient) Ensure(ctx context.Context, p Properties, s *spec.Spec, m *MigrationTarget) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ensured++
	return nil
}

func (c *stubClient) Observe(ctx context.Context, gen uint64, wait time.Duration) (Observation, error) {
	if c.observe != nil {
		return c.observe(ctx, gen)
	}
	<-ctx.Done()
	return Observation{}, ctx.Err()
}
func (c *stubClient) Request(ctx context.Context, r Requested) error { return nil }
func (c *stubClient) Arm(ctx context.Context, a MigrationArm) (MigrationArmed, error) {
	return MigrationArmed{MigrationID: a.MigrationID}, nil
}
func (c *stubClient) Serial(ctx context.Context, q SerialQuery) (SerialChunk, error) {
	return SerialChunk{}, nil
}
func (c *stubClient) Console(ctx context.Context) (io.ReadWriteCloser, error) {
	return nil, errors.New("no console")
}

// stubVMMBinary writes a VMM "server" that ignores its arguments and
// sleeps: a real process that keeps the agent's command line (the shell
// waits for its sleep rather than becoming it), no HTTP.
func stubVMMBinary(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "vmm")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\nsleep 600 &\nwait\n"), 0o700))
	return path
}

// stubPortNext hands each stub agent of this test process a few ports of
// its own, between the external tests' ranges and the kernel's ephemeral
// ports.
var (
	stubPortMu   sync.Mutex
	stubPortNext = 30000 + (os.Getpid()%45)*60
)

func stubPorts() (int, int) {
	stubPortMu.Lock()
	defer stubPortMu.Unlock()
	lo := stubPortNext
	stubPortNext += 5
	return lo, lo + 4
}

// stubAgent is an agent over root whose VMM servers are stub processes
// and whose Dial hands out client (a fresh stubClient when nil).
func stubAgent(t *testing.T, root string, capacity Resources, client VMMClient) *Agent {
	t.Helper()
	lo, hi := stubPorts()
	a, err := New(Options{Root: root, Capacity: capacity, PortMin: lo, PortMax: hi,
		VMMBinary: stubVMMBinary(t), VMMArgs: []string{"server"}, Log: quiet(),
		Dial: func(ctx context.Context, addr, token string) (VMMClient, error) {
			if client != nil {
				return client, nil
			}
			return &stubClient{}, nil
		}})
	require.NoError(t, err)
	return a
}

// killAll kills the stub processes of every VMM under a, at the end of a
// test.
func killAll(t *testing.T, a *Agent) {
	a.mu.Lock()
	var pids []int
	for _, v := range a.vmms {
		pids = append(pids, v.rec.Pid)
	}
	a.mu.Unlock()
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
}

func stubRequest(fp string) EnsureRequest {
	s := spec.Spec{}
	return EnsureRequest{Properties: Properties{ID: uuid.New(), Name: "stub"}, Spec: &s,
		Resources: Resources{CPUs: 1, MemoryMiB: 64}, Fingerprint: fp}
}

// An ensure of an id that is being unregistered waits until the
// unregistration has released its process, directory, port and
// reservation: it neither sees a false insufficient_capacity nor starts a
// server in the directory about to be removed. Its own context bounds the
// wait.
func TestEnsureWaitsForUnregister(t *testing.T) {
	root := t.TempDir()
	req := stubRequest("one")
	a := stubAgent(t, root, req.Resources, nil) // room for exactly one
	defer a.Close()
	id := uuid.New()
	_, _, err := a.Ensure(context.Background(), id, req)
	require.NoError(t, err)
	killAll(t, a)

	// The old process will not end until the test says so.
	a.mu.Lock()
	v := a.vmms[id]
	stuck := &Process{Pid: v.proc.Pid, done: make(chan struct{}), pidfd: -1}
	v.proc = stuck
	a.mu.Unlock()
	unregistered := make(chan error, 1)
	go func() { unregistered <- a.Unregister(context.Background(), id, true) }()
	assert.Eventually(t, func() bool { _, err := a.Get(id); return errors.Is(err, ErrNoSuchVmm) }, 10*time.Second, time.Millisecond)

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, _, err = a.Ensure(short, id, req)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "an ensure while the id is unregistered waits, bounded by its context")

	type result struct {
		v   Vmm
		err error
	}
	ensured := make(chan result, 1)
	go func() {
		v, _, err := a.Ensure(context.Background(), id, req)
		ensured <- result{v, err}
	}()
	assert.Never(t, func() bool { return len(ensured) > 0 }, 200*time.Millisecond, 5*time.Millisecond, "the ensure did not wait")
	close(stuck.done)
	require.NoError(t, <-unregistered)
	r := <-ensured
	require.NoError(t, r.err, "no false insufficient_capacity once the reservation is released")
	killAll(t, a)
	_, err = os.Stat(filepath.Join(root, "vmms", id.String(), "token"))
	require.NoError(t, err, "the new VMM's directory is its own, not removed by the old unregistration")
	require.EqualValues(t, 1, a.Inventory().CPUs.Reserved)
}

// startStub starts a stub VMM server as an earlier agent would have, with
// tokenPath on its command line; the channel is closed when it has ended.
func startStub(t *testing.T, tokenPath string) (int, chan struct{}) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 600 & wait", "vmm", "server", "-auth-token-file", tokenPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	ended := make(chan struct{})
	go func() {
		var info unix.Siginfo
		_ = unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		close(ended)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-ended
		_ = cmd.Wait()
	})
	return cmd.Process.Pid, ended
}

func waitClosed(t *testing.T, c chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatal(what)
	}
}

// A VMM directory that no registry record owns (an agent crashed between
// starting a server and saving its record) is swept by the next agent:
// the server whose command line holds its token file is killed and the
// directory removed. Registered VMMs' directories are left alone.
func TestOrphanSweptAtStart(t *testing.T) {
	root := t.TempDir()
	a := stubAgent(t, root, Resources{CPUs: 4, MemoryMiB: 1024}, nil)
	kept := uuid.New()
	_, _, err := a.Ensure(context.Background(), kept, stubRequest("kept"))
	require.NoError(t, err)
	killAll(t, a)
	require.NoError(t, a.Close())

	orphan := filepath.Join(root, "vmms", uuid.New().String())
	require.NoError(t, os.MkdirAll(filepath.Join(orphan, "storage"), 0o700))
	token := filepath.Join(orphan, "token")
	require.NoError(t, os.WriteFile(token, []byte("x"), 0o600))
	pid, ended := startStub(t, token)
	require.Eventually(t, func() bool { return cmdlineHas(pid, token) }, 10*time.Second, time.Millisecond)

	b := stubAgent(t, root, Resources{CPUs: 4, MemoryMiB: 1024}, nil)
	defer b.Close()
	waitClosed(t, ended, "the orphan's server was not killed")
	_, err = os.Stat(orphan)
	require.ErrorIs(t, err, os.ErrNotExist, "the orphan's directory was not removed")
	_, err = os.Stat(filepath.Join(root, "vmms", kept.String(), "token"))
	require.NoError(t, err, "a registered VMM's directory is kept")
	_, err = b.Get(kept)
	require.NoError(t, err)
}

// While a new server is waited for, the registry holds a starting record
// (pid, port, token file); an agent that stops then leaves no orphan: the
// next one kills that server and removes its directory, and does not
// register it.
func TestStartingRecordSaved(t *testing.T) {
	root := t.TempDir()
	entered := make(chan struct{}, 1)
	lo, hi := stubPorts()
	a, err := New(Options{Root: root, Capacity: Resources{CPUs: 4, MemoryMiB: 1024}, PortMin: lo,
		PortMax: hi, VMMBinary: stubVMMBinary(t), Log: quiet(),
		Dial: func(ctx context.Context, addr, token string) (VMMClient, error) {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return nil, fmt.Errorf("%w", ErrVMMUnavailable)
		}})
	require.NoError(t, err)
	id := uuid.New()
	ctx, cancel := context.WithCancel(context.Background())
	ensured := make(chan error, 1)
	go func() { _, _, err := a.Ensure(ctx, id, stubRequest("s")); ensured <- err }()
	<-entered
	reg, err := loadRegistry(root)
	require.NoError(t, err)
	require.Len(t, reg.VMMs, 1)
	rec := reg.VMMs[0]
	require.True(t, rec.Starting)
	require.Equal(t, id, rec.ID)
	require.NotZero(t, rec.Pid)
	require.NotZero(t, rec.Port)
	require.Equal(t, filepath.Join(root, "vmms", id.String(), "token"), rec.TokenPath)
	require.Eventually(t, func() bool { return cmdlineHas(rec.Pid, rec.TokenPath) }, 10*time.Second, time.Millisecond)
	t.Cleanup(func() { _ = syscall.Kill(-rec.Pid, syscall.SIGKILL) })

	require.NoError(t, a.Close()) // as if it crashed: the record stays
	b := stubAgent(t, root, Resources{CPUs: 4, MemoryMiB: 1024}, nil)
	defer b.Close()
	require.False(t, pidAlive(rec.Pid) && cmdlineHas(rec.Pid, rec.TokenPath), "the starting server was not killed")
	_, err = os.Stat(filepath.Join(root, "vmms", id.String()))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = b.Get(id)
	require.ErrorIs(t, err, ErrNoSuchVmm)
	require.Zero(t, b.Inventory().CPUs.Reserved)
	cancel()
	require.Error(t, <-ensured)
}

// A registry that cannot be saved fails the ensure (a VMM not written
// down would be lost at the next restart): its process is killed, its
// directory removed and its reservation released. Both saves count: the
// starting record and the final one.
func TestEnsureFailsWhenRegistryCannotBeSaved(t *testing.T) {
	for _, when := range []string{"starting", "final"} {
		t.Run(when, func(t *testing.T) {
			root := t.TempDir()
			regPath := filepath.Join(root, registryName)
			block := func() {
				// A non-empty directory where the registry is: the rename fails.
				require.NoError(t, os.Remove(regPath))
				require.NoError(t, os.MkdirAll(filepath.Join(regPath, "x"), 0o700))
			}
			client := &stubClient{}
			lo, hi := stubPorts()
			a, err := New(Options{Root: root, Capacity: Resources{CPUs: 4, MemoryMiB: 1024}, PortMin: lo,
				PortMax: hi, VMMBinary: stubVMMBinary(t), Log: quiet(),
				Dial: func(ctx context.Context, addr, token string) (VMMClient, error) {
					if when == "final" {
						block()
					}
					return client, nil
				}})
			require.NoError(t, err)
			if when == "starting" {
				block()
			}
			id := uuid.New()
			_, _, err = a.Ensure(context.Background(), id, stubRequest("s"))
			require.ErrorContains(t, err, "registry")
			token := filepath.Join(root, "vmms", id.String(), "token")
			// Killed and waited for; on a loaded host /proc may show it for a
			// moment more.
			assert.Eventually(t, func() bool { return len(pidsWithArg(token)) == 0 }, 5*time.Second, 10*time.Millisecond,
				"the refused VMM's process runs on")
			_, err = os.Stat(filepath.Join(root, "vmms", id.String()))
			require.ErrorIs(t, err, os.ErrNotExist)
			_, err = a.Get(id)
			require.ErrorIs(t, err, ErrNoSuchVmm)
			require.Zero(t, a.Inventory().CPUs.Reserved)
			require.NoError(t, os.RemoveAll(regPath))
			require.NoError(t, a.Close())
		})
	}
}

// A migration target's reservation is checked against the spec that
// arrives from the source, once its server knows it: a board larger than
// the reservation fails the VMM (exceeds_reservation) and kills its
// server; one within it is accepted (and not asked again).
func TestTargetBoardCheckedAgainstReservation(t *testing.T) {
	for _, c := range []struct {
		board Resources
		fails bool
	}{
		{Resources{CPUs: 32, MemoryMiB: 64}, true},
		{Resources{CPUs: 1, MemoryMiB: 65}, true},
		{Resources{CPUs: 1, MemoryMiB: 64}, false},
		{Resources{CPUs: 1, MemoryMiB: 32}, false},
	} {
		t.Run(fmt.Sprint(c.board), func(t *testing.T) {
			mig := uuid.New()
			client := &stubClient{}
			var once sync.Once
			client.observe = func(ctx context.Context, gen uint64) (Observation, error) {
				var o Observation
				sent := false
				once.Do(func() {
					// The source sent its spec: the server knows it now.
					client.mu.Lock()
					b := c.board
					client.board = &b
					client.mu.Unlock()
					o, sent = Observation{Gen: 2, State: StateMigrating, MigrationIn: &MigrationProgress{ID: mig, Phase: "sync"}}, true
				})
				if sent {
					return o, nil
				}
				<-ctx.Done()
				return Observation{}, ctx.Err()
			}
			root := t.TempDir()
			a := stubAgent(t, root, Resources{CPUs: 64, MemoryMiB: 1 << 20}, client)
			defer a.Close()
			id := uuid.New()
			req := EnsureRequest{Properties: Properties{ID: uuid.New(), Name: "target"},
				Migrate:   &MigrationTarget{SrcAddr: "127.0.0.1:1", MigrationID: mig, Secret: "s"},
				Resources: Resources{CPUs: 1, MemoryMiB: 64}, Fingerprint: "t"}
			_, _, err := a.Ensure(context.Background(), id, req)
			require.NoError(t, err)
			killAll(t, a)
			a.mu.Lock()
			proc := a.vmms[id].proc
			a.mu.Unlock()
			if !c.fails {
				assert.Eventually(t, func() bool {
					a.mu.Lock()
					defer a.mu.Unlock()
					return !a.vmms[id].rec.CheckBoard
				}, 10*time.Second, time.Millisecond, "a board within the reservation is accepted")
				st, err := a.State(id)
				require.NoError(t, err)
				require.Equal(t, StateMigrating, st.State)
				require.False(t, isClosed(proc.done))
				return
			}
			assert.Eventually(t, func() bool { st, _ := a.State(id); return st.State == StateFailed }, 10*time.Second, time.Millisecond)
			st, err := a.State(id)
			require.NoError(t, err)
			require.Equal(t, FailureExceedsReservation, st.Failure.Kind)
			require.Contains(t, st.Failure.Message, fmt.Sprintf("%d CPUs and %d MiB", c.board.CPUs, c.board.MemoryMiB))
			require.Equal(t, MigrationFailed, st.MigrationIn.State)
			waitClosed(t, proc.done, "the server of a VMM that exceeds its reservation was not killed")
		})
	}
}

// TestNewChecksItsOptions: New takes each option at its limit (ports 1 and
// 65535, a range of one port, a backoff whose bounds are equal) and refuses
// or replaces it one past; an empty host and a bad backoff get defaults.
func TestNewChecksItsOptions(t *testing.T) {
	dial := func(ctx context.Context, addr, token string) (VMMClient, error) {
		return nil, errors.New("no VMMs here")
	}
	build := func(o Options) (*Agent, error) {
		o.Root, o.Dial, o.Log, o.Capacity = t.TempDir(), dial, quiet(), Resources{CPUs: 1, MemoryMiB: 64}
		a, err := New(o)
		if err == nil {
			t.Cleanup(func() { a.Close() })
		}
		return a, err
	}
	for _, ok := range []Options{{PortMin: 1, PortMax: 1}, {PortMin: 65535, PortMax: 65535}, {PortMin: 1, PortMax: 65535}} {
		_, err := build(ok)
		require.NoError(t, err, "ports %d-%d", ok.PortMin, ok.PortMax)
	}
	for _, bad := range []Options{{PortMin: 0, PortMax: 10}, {PortMin: 10, PortMax: 9}, {PortMin: 10, PortMax: 65536}, {PortMin: -1, PortMax: 1}} {
		_, err := build(bad)
		require.ErrorContains(t, err, "port range", "ports %d-%d", bad.PortMin, bad.PortMax)
	}

	a, err := build(Options{PortMin: 1, PortMax: 2})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", a.opts.Host, "an empty host is loopback")
	require.Equal(t, DefaultBackoff, a.opts.Backoff, "no backoff is the default")
	require.Equal(t, 15*time.Second, a.opts.StartTimeout)
	a, err = build(Options{PortMin: 1, PortMax: 2, Host: "10.0.0.1", StartTimeout: time.Second,
		Backoff: Backoff{Min: time.Millisecond, Max: time.Millisecond}})
	require.NoError(t, err)
	require.Equal(t, "10.0.0.1", a.opts.Host)
	require.Equal(t, time.Second, a.opts.StartTimeout)
	require.Equal(t, Backoff{Min: time.Millisecond, Max: time.Millisecond}, a.opts.Backoff, "equal bounds are a backoff")
	a, err = build(Options{PortMin: 1, PortMax: 2, Backoff: Backoff{Min: 2 * time.Millisecond, Max: time.Millisecond}})
	require.NoError(t, err)
	require.Equal(t, DefaultBackoff, a.opts.Backoff, "a maximum below the minimum is no backoff")
}

// TestListIsOrderedByID: List answers the VMMs by id (as bytes, which is
// the order of their strings), whatever order they came in.
func TestListIsOrderedByID(t *testing.T) {
	a := stubAgent(t, t.TempDir(), Resources{CPUs: 8, MemoryMiB: 8192}, nil)
	defer a.Close()
	defer killAll(t, a)
	ids := []uuid.UUID{uuid.MustParse("f0000000-0000-4000-8000-000000000000"), uuid.MustParse("00000000-0000-4000-8000-0000000000ff"),
		uuid.MustParse("80000000-0000-4000-8000-000000000000"), uuid.MustParse("00000000-0000-4000-8000-000000000001")}
	for i, id := range ids {
		_, _, err := a.Ensure(context.Background(), id, stubRequest(fmt.Sprintf("vm%d", i)))
		require.NoError(t, err)
	}
	var got []string
	for _, v := range a.List() {
		got = append(got, v.ID.String())
	}
	want := []string{ids[3].String(), ids[1].String(), ids[2].String(), ids[0].String()}
	require.Equal(t, want, got)
}

// TestInventoryAndGaugeCountTheVMMs: the inventory's reserved and free
// amounts follow the VMMs' resources, free never going below zero, and the
// VMM gauge counts them by state.
func TestInventoryAndGaugeCountTheVMMs(t *testing.T) {
	a := stubAgent(t, t.TempDir(), Resources{CPUs: 3, MemoryMiB: 1024}, nil)
	defer a.Close()
	defer killAll(t, a)
	for i := range 2 {
		_, _, err := a.Ensure(context.Background(), uuid.New(), stubRequest(fmt.Sprintf("vm%d", i))) // 1 CPU, 64 MiB each
		require.NoError(t, err)
	}
	inv := a.Inventory()
	require.Equal(t, Amount{Total: 3, Reserved: 2, Free: 1}, inv.CPUs)
	require.Equal(t, Amount{Total: 1024, Reserved: 128, Free: 896}, inv.MemoryMiB)
	require.Equal(t, 2, inv.VMMs)

	counts := map[VmmState]float64{}
	for _, v := range a.List() {
		counts[v.State.State]++
	}
	for _, s := range AllStates {
		var m dto.Metric
		require.NoError(t, a.m.vmms.WithLabelValues(string(s)).Write(&m))
		require.Equal(t, counts[s], m.GetGauge().GetValue(), "VMMs %s", s)
	}

	// A capacity that shrank below what is reserved (an agent restarted
	// with less) leaves nothing free, not a wrapped-around amount.
	a.mu.Lock()
	a.opts.Capacity = Resources{CPUs: 1, MemoryMiB: 64}
	a.mu.Unlock()
	inv = a.Inventory()
	require.Equal(t, Amount{Total: 1, Reserved: 2, Free: 0}, inv.CPUs)
	require.Equal(t, Amount{Total: 64, Reserved: 128, Free: 0}, inv.MemoryMiB)
}
