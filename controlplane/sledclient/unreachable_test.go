package sledclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
)

// closedAddr is an address where nothing listens.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// hang answers nothing until the client goes away.
func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// hangMidBody sends the status and part of a body, then nothing more.
func hangMidBody(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	_, _ = w.Write([]byte(`{"vmm_id":`))
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

// reset cuts the connection with a TCP reset, answering nothing.
func reset(w http.ResponseWriter, r *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// Every way an agent fails to answer is ErrSledUnreachable, for every
// call, within the client's timeout: refused, hung before or in the middle
// of its answer, reset.
func TestUnreachable(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addrs := map[string]string{
		"refused":       closedAddr(t),
		"hangs":         newAgent(t, hang).addr(),
		"hangs in body": newAgent(t, hangMidBody).addr(),
		"resets":        newAgent(t, reset).addr(),
	}
	for name, addr := range addrs {
		c := dialSled(t, uuid.New(), addr, WithTimeout(timeout))
		calls := map[string]func(ctx context.Context) error{
			"ping":       c.Ping,
			"unregister": func(ctx context.Context) error { return c.Unregister(ctx, uuid.New()) },
			"state": func(ctx context.Context) error {
				_, _, err := c.VmmState(ctx, uuid.New())
				return err
			},
		}
		for call, f := range calls {
			start := time.Now()
			err := f(ctxT(t))
			took := time.Since(start)
			require.ErrorIs(t, err, controlplane.ErrSledUnreachable, "%s %s", name, call)
			require.False(t, errors.Is(err, controlplane.ErrVmmGone))
			require.ErrorContains(t, err, addr)
			require.Less(t, took, timeout+5*time.Second, "%s %s: bounded by the client's timeout", name, call)
			noToken(t, err)
		}
	}
}

// The caller's context bounds a call too: a deadline that passes is the
// agent not answering; a cancellation is the caller's, not the agent's.
func TestCallerContext(t *testing.T) {
	c := dialSled(t, uuid.New(), newAgent(t, hang).addr()) // the default timeout: 10 s
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx)
	require.ErrorIs(t, err, controlplane.ErrSledUnreachable)
	require.Less(t, time.Since(start), 5*time.Second)

	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Ping(ctx) }()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, errors.Is(err, controlplane.ErrSledUnreachable), "%v", err)
	case <-time.After(testTimeout):
		t.Fatal("a cancelled call did not return")
	}
}
