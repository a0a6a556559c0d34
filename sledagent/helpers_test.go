package sledagent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/api"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
	"github.com/wagglevm/waggle/spec"
)

// waggleBin is the waggle binary the tests start VMM servers (and agents)
// from, built once by TestMain.
var waggleBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sledagent-test-")
	if err != nil {
		panic(err)
	}
	waggleBin = filepath.Join(dir, "waggle")
	out, err := exec.Command("go", "build", "-o", waggleBin, "github.com/wagglevm/waggle/cmd/waggle").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build waggle: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// portBase hands each agent of this test process a range of its own,
// below the kernel's ephemeral ports (32768 and up), which the machine's
// outgoing connections take at random.
var (
	portMu   sync.Mutex
	portNext = 10000 + (os.Getpid()%190)*100
)

func portRange(n int) (int, int) {
	portMu.Lock()
	defer portMu.Unlock()
	lo := portNext
	portNext += n
	return lo, lo + n - 1
}

// bellRecorder is a control plane stand-in's doorbell: it counts rings per
// VMM and can be made to fail.
type bellRecorder struct {
	mu    sync.Mutex
	rings map[uuid.UUID]int
	down  bool
	fails int
	block chan struct{} // non-nil: each ring waits for a receive... until closed
	ring  chan uuid.UUID
}

func newBell() *bellRecorder {
	return &bellRecorder{rings: map[uuid.UUID]int{}, ring: make(chan uuid.UUID, 1000)}
}

func (b *bellRecorder) Ring(ctx context.Context, id uuid.UUID) error {
	b.mu.Lock()
	block, down := b.block, b.down
	b.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if down {
		b.fails++
		return fmt.Errorf("control plane down")
	}
	b.rings[id]++
	select {
	case b.ring <- id:
	default:
	}
	return nil
}

func (b *bellRecorder) count(id uuid.UUID) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rings[id]
}

// fakeInstance stands in for the VM of a real VMM server process (there is
// no KVM here): the process, its port, its token and the token check are
// real; the instance's ensure and state are played by the test.
type fakeInstance struct {
	mu       sync.Mutex
	gen      uint64
	obs      sledagent.Observation
	changed  chan struct{}
	ensured  int
	requests []sledagent.Requested
}

type fakeClient struct {
	sledagent.VMMClient // the real client, for what is not faked
	inst                *fakeInstance
}

func (f *fakeClient) Ensure(ctx context.Context, p sledagent.Properties, s *spec.Spec, m *sledagent.MigrationTarget) error {
	f.inst.mu.Lock()
	defer f.inst.mu.Unlock()
	f.inst.ensured++
	f.inst.gen = 1
	f.inst.obs = sledagent.Observation{Gen: 1, State: sledagent.StateCreating}
	return nil
}

func (f *fakeClient) Observe(ctx context.Context, gen uint64, wait time.Duration) (sledagent.Observation, error) {
	for {
		f.inst.mu.Lock()
		obs, ch := f.inst.obs, f.inst.changed
		f.inst.mu.Unlock()
		if obs.Gen > gen {
			return obs, nil
		}
		// A real call, so that a dead process fails the watch as it would.
		if _, err := f.VMMClient.Serial(ctx, sledagent.SerialQuery{}); err != nil && isUnavailable(err) {
			return sledagent.Observation{}, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return sledagent.Observation{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (f *fakeClient) Request(ctx context.Context, r sledagent.Requested) error {
	f.inst.mu.Lock()
	f.inst.requests = append(f.inst.requests, r)
	f.inst.mu.Unlock()
	next := map[sledagent.Requested]sledagent.VmmState{sledagent.RequestRun: sledagent.StateRunning,
		sledagent.RequestStop: sledagent.StateStopped, sledagent.RequestReboot: sledagent.StateRunning}[r]
	f.inst.set(next, "")
	return nil
}

func (f *fakeClient) Arm(ctx context.Context, a sledagent.MigrationArm) (sledagent.MigrationArmed, error) {
	out := sledagent.MigrationArmed{MigrationID: a.MigrationID, ExpiresAt: time.Now().Add(5 * time.Minute)}
	if a.Secret == "" {
		out.Secret = "made-by-the-server-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	}
	return out, nil
}

// set moves the fake instance to a state.
func (fi *fakeInstance) set(s sledagent.VmmState, reason string) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.gen++
	fi.obs = sledagent.Observation{Gen: fi.gen, State: s, FailureReason: reason}
	if fi.changed != nil {
		close(fi.changed)
	}
	fi.changed = make(chan struct{})
}

func isUnavailable(err error) bool {
	return err != nil && errors.Is(err, sledagent.ErrVMMUnavailable)
}

// fakes dials real VMM server processes (the token check is real) and
// hands out clients whose instance is fake.
type fakes struct {
	mu   sync.Mutex
	byAd map[string]*fakeInstance
	real sledagent.Dialer
}

func newFakes() *fakes { return &fakes{byAd: map[string]*fakeInstance{}, real: vmmclient.New(nil)} }

func (f *fakes) dial(ctx context.Context, addr, token string) (sledagent.VMMClient, error) {
	c, err := f.real(ctx, addr, token)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.byAd[addr]
	if !ok {
		inst = &fakeInstance{changed: make(chan struct{})}
		f.byAd[addr] = inst
	}
	return &fakeClient{VMMClient: c, inst: inst}, nil
}

func (f *fakes) at(addr string) *fakeInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byAd[addr]
}

// newAgent starts an agent over root with real VMM server processes.
func newAgent(t testing.TB, root string, dial sledagent.Dialer, bell sledagent.Bell, capacity sledagent.Resources) *sledagent.Agent {
	t.Helper()
	lo, hi := portRange(40)
	a, err := sledagent.New(sledagent.Options{Root: root, Capacity: capacity, PortMin: lo, PortMax: hi,
		VMMBinary: waggleBin, VMMArgs: []string{"server"}, Dial: dial, Bell: bell,
		Backoff: sledagent.Backoff{Min: time.Millisecond, Max: 20 * time.Millisecond}})
	require.NoError(t, err)
	return a
}

// killVMMs kills every VMM process registered beneath root, at the end of
// a test (they outlive agents by design).
func killVMMs(t testing.TB, pids ...int) {
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
}

// serve puts the agent's API on a test server and returns its URL and
// token.
func serve(t testing.TB, a *sledagent.Agent) (string, string) {
	t.Helper()
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	h, err := api.NewHandler(a, httpkit.HandlerOptions{Auth: httpkit.BearerToken(token)})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, token
}

// pidOf reads a VMM's pid from the agent's registry on disk.
func pidOf(t *testing.T, root string, id uuid.UUID) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "registry.json"))
	require.NoError(t, err)
	var reg struct {
		VMMs []struct {
			ID  uuid.UUID `json:"vmm_id"`
			Pid int       `json:"pid"`
		} `json:"vmms"`
	}
	require.NoError(t, json.Unmarshal(data, &reg))
	for _, v := range reg.VMMs {
		if v.ID == id {
			return v.Pid
		}
	}
	t.Fatalf("VMM %s is not in the registry", id)
	return 0
}

// alive says whether pid runs (not a zombie).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	for i := len(data) - 1; i >= 0; i-- {
		if data[i] == ')' {
			return i+2 < len(data) && data[i+2] != 'Z'
		}
	}
	return true
}

// tickerSpec is a small ticker VM.
func tickerSpec(t testing.TB) spec.Spec {
	t.Helper()
	s, err := specFromJSON(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":"pace_ms=20"},"components":{"com1":{"type":"serial_port","num":"com1"}}}`)
	require.NoError(t, err)
	return s
}
