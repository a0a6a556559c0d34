package httpkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startServer serves h with opts on a loopback port and returns its
// address; the test's cleanup shuts it down.
func startServer(t *testing.T, h http.Handler, opts ServerOptions) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if opts.Log == nil {
		opts.Log = quiet
	}
	s := NewServer(h, opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		require.ErrorIs(t, <-done, http.ErrServerClosed)
	})
	return s, ln.Addr().String()
}

// dial opens a raw connection with a deadline that bounds the whole test
// step, so that a server that does not do what it should fails the test
// rather than hang it.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a GET on c and reads the answer.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, path string) *http.Response {
	t.Helper()
	_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, goodToken)
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	return resp
}

// closedByServer reports whether the server closed c (EOF or reset) rather
// than the test's own deadline ending the read.
func closedByServer(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestSlowBodyIsCut(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken), BodyReadTimeout: 200 * time.Millisecond})
	_, addr := startServer(t, h, ServerOptions{})
	c := dial(t, addr)
	start := time.Now()
	// Ten of the hundred bytes promised, then silence.
	_, err := fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":\"a", itemPath, goodToken)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "the server answers a body that does not come")
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	_, _ = io.Copy(io.Discard, resp.Body)
	_, err = br.ReadByte()
	require.True(t, closedByServer(err), "then closes the connection: %v", err)
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestUnreadSlowBodyIsCut: a body that no handler reads (an unauthorized
// request) cannot hold the connection either: the answer comes at once
// and closes the connection, and the server's own discarding of the body
// after the answer is bounded (by drainGrace, or the body deadline when
// shorter).
func TestUnreadSlowBodyIsCut(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken), BodyReadTimeout: 200 * time.Millisecond})
	_, addr := startServer(t, h, ServerOptions{})
	c := dial(t, addr)
	_, err := fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":\"a", itemPath)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	_, _ = io.Copy(io.Discard, resp.Body)
	_, err = br.ReadByte()
	require.True(t, closedByServer(err), "the connection is closed, not held: %v", err)
}

// TestBodyDeadlineIsClearedOnceRead: a handler that answers long after its
// body was read (a long poll) is not cut by the body deadline, and the
// connection serves the next request.
func TestBodyDeadlineIsClearedOnceRead(t *testing.T) {
	const timeout = 100 * time.Millisecond
	h, err := NewHandler(HandlerOptions{Auth: NoAuth(), Log: quiet, BodyReadTimeout: timeout}, Version{Prefix: "/v1",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				WriteError(w, r, BodyReadError(err))
				return
			}
			select { // the behaviour under test: answering after the deadline
			case <-time.After(5 * timeout):
			case <-r.Context().Done():
				return
			}
			_, _ = w.Write(body)
		})})
	require.NoError(t, err)
	_, addr := startServer(t, h, ServerOptions{})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	for range 2 {
		_, err = fmt.Fprintf(c, "POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "hello", string(body))
	}
}

func TestIdleConnectionIsClosed(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken)})
	_, addr := startServer(t, h, ServerOptions{IdleTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	require.Equal(t, http.StatusOK, roundTrip(t, c, br, "/v1/open").StatusCode)
	start := time.Now()
	_, err := br.ReadByte()
	require.True(t, closedByServer(err), "the idle keep-alive connection is closed: %v", err)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestSlowHeaderIsCut(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken)})
	_, addr := startServer(t, h, ServerOptions{ReadHeaderTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	_, err := fmt.Fprintf(c, "GET /v1/open HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)
	_, err = io.ReadAll(c)
	require.NoError(t, err, "the server closes a connection whose header does not end")
}

// TestConnectionLimit: with every place taken by a busy request, a
// newcomer is answered 503 too_many_connections; once one frees, a
// newcomer is served.
func TestConnectionLimit(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusOK)
	})
	_, addr := startServer(t, h, ServerOptions{MaxConns: 2})
	var busy []net.Conn
	for range 2 {
		c := dial(t, addr)
		_, err := fmt.Fprintf(c, "GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		busy = append(busy, c)
		<-entered // being served, so never evicted
	}
	for range 3 {
		c := dial(t, addr)
		_, err := fmt.Fprintf(c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
		if err != nil {
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			require.True(t, closedByServer(err), "refused, not left hanging: %v", err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
		require.Contains(t, string(body), CodeTooManyConnections)
	}
	close(release)
	for _, c := range busy {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err, "a busy request is never evicted")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		c.Close()
	}
	assert.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/ok")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond)
}

// TestSilentConnectionsCannotLockClientsOut: connections that send nothing
// fill every place; a client that then comes is served all the same, in
// the place of the connection quiet longest.
func TestSilentConnectionsCannotLockClientsOut(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	_, addr := startServer(t, h, ServerOptions{MaxConns: 8})
	var silent []net.Conn
	for range 8 {
		silent = append(silent, dial(t, addr))
	}
	for range 20 {
		c := dial(t, addr)
		resp := roundTrip(t, c, bufio.NewReader(c), "/ok")
		require.Equal(t, http.StatusOK, resp.StatusCode, "served despite the silent connections")
		c.Close()
	}
	// The oldest silent connection made way for the first client.
	_ = silent[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := silent[0].Read(make([]byte, 1))
	require.True(t, closedByServer(err), "the oldest silent connection was closed: %v", err)
}

// TestShutdownIsBounded: upgraded connections (which http.Server.Shutdown
// does not track) and long polls do not hold a shutdown past its context,
// and a hijacked connection still counts against the limit until closed.
func TestShutdownIsBounded(t *testing.T) {
	hijacked, polling := make(chan struct{}, 1), make(chan struct{}, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upgrade":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			hijacked <- struct{}{}
			_, _ = io.Copy(io.Discard, conn) // a stream that never ends by itself
		case "/poll":
			polling <- struct{}{}
			<-r.Context().Done()
			w.WriteHeader(http.StatusOK)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := NewServer(h, ServerOptions{Log: quiet, MaxConns: 2})
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()

	up := dial(t, addr)
	_, err = fmt.Fprintf(up, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	require.NoError(t, err)
	upr := bufio.NewReader(up)
	resp, err := http.ReadResponse(upr, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	<-hijacked

	poll := dial(t, addr)
	_, err = fmt.Fprintf(poll, "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	<-polling // busy, so not to be evicted

	// Two open and busy, one upgraded: a third is over the limit.
	third := dial(t, addr)
	_, _ = fmt.Fprintf(third, "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(third), nil); err == nil {
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = s.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the upgraded stream was still open and had to be cut")
	require.Less(t, time.Since(start), 3*time.Second)
	require.ErrorIs(t, <-served, http.ErrServerClosed)

	// The long poll was answered at once, and the stream was closed.
	resp, err = http.ReadResponse(bufio.NewReader(poll), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = upr.ReadByte()
	require.True(t, closedByServer(err), "the upgraded connection is closed: %v", err)
}

func TestShutdownWithNothingOpenIsQuick(t *testing.T) {
	s, addr := startServer(t, testHandler(t, HandlerOptions{}), ServerOptions{})
	resp, err := http.Get("http://" + addr + "/v1/open")
	require.NoError(t, err)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	_, err = http.Get("http://" + addr + "/v1/open")
	require.Error(t, err, "the listener is closed")
	require.True(t, strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "reset"), err.Error())
}
