package sledclient

import (
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	agentapi "github.com/wagglevm/waggle/sledagent/api"
	"github.com/wagglevm/waggle/sledagent/sledtest"
)

// Against the real sled agent's API (an agent with no VMMs, so no VMM
// server process is needed): the ping reaches it, an unknown VMM is gone,
// unregistering one is no error, and the versions it registers with
// negotiate. (The control plane's fleet tests drive VMMs through it.)
func TestRealAgent(t *testing.T) {
	sled := uuid.New()
	a, err := sledagent.New(sledagent.Options{Root: t.TempDir(), SledID: sled, Capacity: sledagent.Resources{CPUs: 2, MemoryMiB: 256},
		PortMin: 40000, PortMax: 40001, VMMBinary: "/bin/false", Dial: sledtest.NewFakes().Dial,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	h, err := agentapi.NewHandler(a, httpkit.HandlerOptions{Auth: httpkit.BearerToken(testToken), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	v, err := Negotiate(agentapi.Versions)
	require.NoError(t, err)
	require.Equal(t, "v1", v)

	c, err := New(func(string) (string, error) { return testToken, nil })(model.Sled{ID: sled, Address: addr, APIVersions: agentapi.Versions})
	require.NoError(t, err)
	require.NoError(t, c.Ping(ctxT(t)))
	_, _, err = c.VmmState(ctxT(t), uuid.New())
	require.ErrorIs(t, err, controlplane.ErrVmmGone)
	require.NoError(t, c.Unregister(ctxT(t), uuid.New()))

	// Another sled's record at this address, and a token the agent does
	// not take: errors, neither gone nor unreachable.
	other, err := New(func(string) (string, error) { return testToken, nil })(model.Sled{ID: uuid.New(), Address: addr, APIVersions: []string{"v1"}})
	require.NoError(t, err)
	require.ErrorIs(t, other.Ping(ctxT(t)), ErrBadAnswer)
	wrong, err := New(func(string) (string, error) { return "not-the-token", nil })(model.Sled{ID: sled, Address: addr, APIVersions: []string{"v1"}})
	require.NoError(t, err)
	_, _, err = wrong.VmmState(ctxT(t), uuid.New())
	require.ErrorContains(t, err, "refused the control plane's token")
	require.False(t, errors.Is(err, controlplane.ErrVmmGone) || errors.Is(err, controlplane.ErrSledUnreachable))
}
