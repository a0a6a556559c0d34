package vmmclient

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/server"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/spec"
)

// recordingCore is a VMM server's core that keeps what it was asked and
// answers a failed instance: enough of server.Core for the v2 client's
// calls, behind the real HTTP handler (validation, auth, every version).
type recordingCore struct {
	server.Core // the calls the test does not make; nil, so one would panic
	mu          sync.Mutex
	ensured     []server.EnsureRequest
	requested   []server.Requested
}

func (c *recordingCore) Ensure(_ context.Context, req server.EnsureRequest) (server.Instance, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ensured = append(c.ensured, req)
	return server.Instance{Properties: req.Properties, State: server.StateCreating, Gen: 1}, true, nil
}

func (c *recordingCore) Instance(context.Context) (server.Instance, error) {
	return server.Instance{}, server.ErrNoInstance
}

func (c *recordingCore) RequestState(_ context.Context, r server.Requested) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requested = append(c.requested, r)
	return 2, nil
}

const failedMessage = "failed: the guest reported a panic (pvpanic)"

func (c *recordingCore) WaitGen(context.Context, uint64) (server.Instance, server.MigrationStatus, []server.Transition, error) {
	now := time.Now()
	return server.Instance{State: server.StateFailed, Gen: 3, FailureKind: server.FailureGuestPanicked, FailureReason: failedMessage},
		server.MigrationStatus{}, []server.Transition{
			{Gen: 2, State: server.StateRunning, At: now},
			{Gen: 3, State: server.StateFailed, FailureKind: server.FailureGuestPanicked, FailureReason: failedMessage, At: now},
		}, nil
}

// TestV2ClientCarriesWhatOnlyV2Says: through today's server's real
// handler, the agent's v2 client ensures a spec only v2 can say (a pvpanic
// device, an explicit SMBIOS table), and it reaches the core whole; a
// migration target's v1 replacements arrive as the same components; a
// state change is accepted (v2 answers 200 with the generation); a failed
// instance's message is the agent's failure reason.
func TestV2ClientCarriesWhatOnlyV2Says(t *testing.T) {
	core := &recordingCore{}
	token := strings.Repeat("t", 43)
	h, err := server.NewHandler(core, httpkit.HandlerOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Auth: httpkit.BearerToken(token)})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(nil)(context.Background(), strings.TrimPrefix(srv.URL, "http://"), token)
	require.NoError(t, err)
	require.IsType(t, &v2Client{}, c, "today's server speaks v2")

	s, err := spec.NewBuilder().SetBoard(spec.Board{CPUs: 1, MemoryMiB: 64, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "panic", Cmdline: "panic_after=3"}).
		SetSMBIOS(spec.SMBIOS{Manufacturer: "Acme", Family: "rockets"}).
		Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1}).
		Add(spec.MustKey("panic0"), spec.PVPanic{}).Build()
	require.NoError(t, err)
	props := sledagent.Properties{ID: uuid.New(), Name: "v2only", Description: "d"}
	require.NoError(t, c.Ensure(context.Background(), props, &s, nil))

	id := uuid.New()
	require.NoError(t, c.Ensure(context.Background(), props, nil, &sledagent.MigrationTarget{SrcAddr: "127.0.0.1:1", MigrationID: id,
		Secret: strings.Repeat("s", 43), ReplaceVersion: "vmm-server/v1",
		Replace: map[string]json.RawMessage{"disk0-be": json.RawMessage(`{"type":"file_storage_backend","path":"disks/b.img"}`)}}))

	core.mu.Lock()
	require.Len(t, core.ensured, 2)
	got := core.ensured[0]
	mig := core.ensured[1].Migrate
	core.mu.Unlock()
	require.NotNil(t, got.Spec)
	require.True(t, s.Equal(*got.Spec), "the spec reached the core whole:\n%v\n%v", s, *got.Spec)
	require.Equal(t, "d", got.Properties.Description)
	require.NotNil(t, mig)
	require.Equal(t, id, mig.MigrationID)
	require.Equal(t, spec.FileStorageBackend{Path: "disks/b.img", BlockSize: 512}, mig.Replace[spec.MustKey("disk0-be")])

	require.NoError(t, c.Request(context.Background(), sledagent.Requested("run")))
	core.mu.Lock()
	require.Equal(t, []server.Requested{server.RequestRun}, core.requested)
	core.mu.Unlock()

	o, err := c.Observe(context.Background(), 1, time.Second)
	require.NoError(t, err)
	require.Equal(t, sledagent.VmmState("failed"), o.State)
	require.Equal(t, failedMessage, o.FailureReason)
	require.Len(t, o.History, 2)
	require.Equal(t, failedMessage, o.History[1].FailureReason)
	require.Empty(t, o.History[0].FailureReason)
}
