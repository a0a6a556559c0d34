package v1

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// The console is passed through both ways: the guest's output reaches the
// client, the client's input reaches the console, and the console's end
// closes the WebSocket normally.
func TestConsoleProxy(t *testing.T) {
	ops := newFakeOps()
	guest, ours := net.Pipe()
	var gotFrom *uint64
	ops.serial = func(ref string, from *uint64) (io.ReadWriteCloser, error) {
		gotFrom = from
		return ours, nil
	}
	srv := serve(t, ops)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/instances/ticker/serial",
		&websocket.DialOptions{HTTPHeader: httpkit.BearerHeader(testToken)})
	require.NoError(t, err)
	defer ws.CloseNow()
	require.Equal(t, "serial ticker", ops.lastCall())
	require.Nil(t, gotFrom, "sled-agent v1 takes no offset: none is asked")

	go func() { _, _ = guest.Write([]byte("tick 1\n")) }()
	typ, data, err := ws.Read(ctx)
	require.NoError(t, err)
	require.Equal(t, websocket.MessageBinary, typ)
	require.Equal(t, "tick 1\n", string(data))

	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, []byte("reboot\r")))
	buf := make([]byte, 64)
	require.NoError(t, guest.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := guest.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "reboot\r", string(buf[:n]))

	require.NoError(t, guest.Close())
	_, _, err = ws.Read(ctx)
	require.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err), "%v", err)
}

// A console asked without an upgrade answers 400 not_upgraded; one the
// Operations refuse answers its code before any upgrade.
func TestConsoleRefusals(t *testing.T) {
	ops := newFakeOps()
	srv := serve(t, ops)
	a := call(t, srv, "GET", "/instances/ticker/serial", "")
	require.Equal(t, 400, a.status)
	require.Equal(t, CodeNotUpgraded, a.errBody(t).ErrorCode)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(path string) (*http.Response, error) {
		_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/instances/"+path+"/serial",
			&websocket.DialOptions{HTTPHeader: httpkit.BearerHeader(testToken)})
		return resp, err
	}
	resp, err := dial("ticker") // no serial set: the instance does not run
	require.Error(t, err)
	require.Equal(t, 409, resp.StatusCode)
	resp, err = dial("nosuch")
	require.Error(t, err)
	require.Equal(t, 409, resp.StatusCode, "the fake answers invalid_state for every ref")
	ops.err = controlplane.ErrSledUnreachable
	resp, err = dial("ticker")
	require.Error(t, err)
	require.Equal(t, 503, resp.StatusCode)
	ops.err = controlplane.ErrNotFound
	resp, err = dial("nosuch")
	require.Error(t, err)
	require.Equal(t, 404, resp.StatusCode)
}
