package sledagent_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/api"
	"github.com/wagglevm/waggle/sledagent/sledtest"
	"github.com/wagglevm/waggle/spec"
)

// waggleBin is the waggle binary the tests start VMM servers (and agents)
// from, built once by TestMain.
var waggleBin string

func TestMain(m *testing.M) {
	bin, cleanup, err := sledtest.BuildWaggle()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	waggleBin = bin
	code := m.Run()
	cleanup()
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

// newFakes dials real VMM server processes and plays their instances.
func newFakes() *sledtest.Fakes { return sledtest.NewFakes() }

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
	pid, err := sledtest.RegistryPid(root, id)
	require.NoError(t, err)
	return pid
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
