package sledagent_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/kvmtest"
)

// dialConsole opens the agent's console WebSocket of a VMM.
func dialConsole(ctx context.Context, url, token string, id uuid.UUID) (*websocket.Conn, *http.Response, error) {
	return websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/v1/vmms/"+id.String()+"/serial",
		&websocket.DialOptions{HTTPHeader: httpkit.BearerHeader(token)})
}

// The console passthrough's refusals: no upgrade, no token, an unknown
// VMM, and the VMM server's own refusal (here it has no instance: its VM
// is faked) passed through with its code.
func TestConsoleRefusals(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, nil, bigSled)
	defer a.Close()
	url, token := serve(t, a)
	id := uuid.New()
	status, body := call(t, "PUT", url+"/v1/vmms/"+id.String(), token, tickerEnsure)
	require.Equal(t, 201, status, "%v", body)
	killVMMs(t, pidOf(t, root, id))

	status, body = call(t, "GET", url+"/v1/vmms/"+id.String()+"/serial", token, "")
	require.Equal(t, 400, status)
	require.Equal(t, "not_upgraded", body["error_code"])

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := dialConsole(ctx, url, "", id)
	require.Error(t, err)
	require.Equal(t, 401, resp.StatusCode)
	_, resp, err = dialConsole(ctx, url, token, uuid.New())
	require.Error(t, err)
	require.Equal(t, 404, resp.StatusCode)
	_, resp, err = dialConsole(ctx, url, token, id)
	require.Error(t, err)
	require.Equal(t, 409, resp.StatusCode, "the VMM server's refusal (no instance) is vmm_refused, not the 404 of an unknown VMM")
}

// On KVM: the console through the agent shows the ticker's ticks.
func TestKVMConsolePassthrough(t *testing.T) {
	kvmtest.Require(t)
	root := t.TempDir()
	killAllVMMs(t, root)
	p := startAgentProc(t, root, "", nil)
	id := registerRunning(t, p, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := dialConsole(ctx, p.url, p.token, id)
	require.NoError(t, err)
	defer ws.CloseNow()
	var got strings.Builder
	for !strings.Contains(got.String(), "tick 3") {
		typ, data, err := ws.Read(ctx)
		require.NoError(t, err, "read so far: %q", got.String())
		require.Equal(t, websocket.MessageBinary, typ)
		got.Write(data)
	}
}
