package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// These tests run `waggle server` in the test's process (no VM is made,
// so they need no KVM) and look at its authentication, its token file,
// its warning and its shutdown.

// inProcServer is a runServer running in a goroutine.
type inProcServer struct {
	addr   string
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan error // receives runServer's result
}

var listenAddr = regexp.MustCompile(`waggle server listening"? addr=(\S+)`)

// runInProc starts runServer with args; it fails the test when the server
// does not come up. The test's cleanup stops it.
func runInProc(t *testing.T, args ...string) *inProcServer {
	t.Helper()
	p := startInProc(t, args...)
	var ended *error // set by the check that saw the server end
	require.Eventually(t, func() bool {
		if m := listenAddr.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1]
			return true
		}
		select {
		case err := <-p.done:
			ended = &err
			return true
		default:
			return false
		}
	}, 10*time.Second, 5*time.Millisecond, "the server did not start listening")
	if ended != nil {
		t.Fatalf("the server ended: %v\n%s", *ended, p.stderr.String())
	}
	return p
}

func startInProc(t *testing.T, args ...string) *inProcServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcServer{stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- runServer(ctx, args, p.stderr) }()
	t.Cleanup(cancel)
	return p
}

// stop cancels the server's context (as SIGTERM does) and returns its
// result and how long it took to return.
func (p *inProcServer) stop(t *testing.T) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	p.cancel()
	select {
	case err := <-p.done:
		return err, time.Since(start)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop")
		return nil, 0
	}
}

func get(t *testing.T, addr, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/instance", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestServerGeneratesItsToken(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	p := runInProc(t, "-listen", "127.0.0.1:0")
	path, err := httpkit.DefaultTokenPath(p.addr)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(path, state))
	fi, err := os.Stat(path)
	require.NoError(t, err, "the token is written for the port the listener got")
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	token, err := httpkit.ReadTokenFile(path)
	require.NoError(t, err)
	require.Len(t, token, 43)

	require.Equal(t, http.StatusUnauthorized, get(t, p.addr, ""))
	require.Equal(t, http.StatusUnauthorized, get(t, p.addr, token[1:]))
	require.Equal(t, http.StatusNotFound, get(t, p.addr, token), "with the token: no instance yet")
	require.Contains(t, p.stderr.String(), path, "the log says where the token is")
	require.NotContains(t, p.stderr.String(), token, "and never what it is")
	require.NotContains(t, p.stderr.String(), "WARNING")

	err, _ = p.stop(t)
	require.NoError(t, err)
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "the generated token goes with its server")
}

func TestServerTokenFile(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	token := "file-token-0123456789abcdefghijklmnopqrstuvwxyz"
	for _, c := range []struct {
		name, content string
		mode          os.FileMode
		msg           string
	}{
		{"readable", token, 0o644, "chmod 600"},
		{"short", "short-token", 0o600, "at least 32"},
		{"missing", "", 0, "no such file"},
	} {
		path := filepath.Join(dir, c.name)
		if c.mode != 0 {
			path = write(c.name, c.content, c.mode)
		}
		p := startInProc(t, "-listen", "127.0.0.1:0", "-auth-token-file", path)
		select {
		case err := <-p.done:
			require.ErrorContains(t, err, "--auth-token-file")
			require.ErrorContains(t, err, c.msg)
			require.NotContains(t, err.Error(), token)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the server started with a bad token file", c.name)
		}
	}

	path := write("good", token+"\n", 0o600)
	p := runInProc(t, "-listen", "127.0.0.1:0", "--auth-token-file", path)
	require.Equal(t, http.StatusUnauthorized, get(t, p.addr, ""))
	require.Equal(t, http.StatusNotFound, get(t, p.addr, token))
	entries, _ := os.ReadDir(filepath.Join(state, "waggle", "tokens"))
	require.Empty(t, entries, "a server given its token writes none")
}

// TestServerWarnsOffLoopback: a server that other hosts can reach, with
// a token nobody chose, says so in a line a person will read.
func TestServerWarnsOffLoopback(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	p := runInProc(t, "-listen", "0.0.0.0:0")
	var warning string
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if strings.HasPrefix(line, "WARNING: ") {
			warning = line
		}
	}
	require.NotEmpty(t, warning, p.stderr.String())
	require.Contains(t, warning, "--auth-token-file")
	err, _ := p.stop(t)
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, httpkit.WriteTokenFile(path, "chosen-0123456789abcdefghijklmnopqrstuvwxyz"))
	p = runInProc(t, "-listen", "0.0.0.0:0", "-auth-token-file", path)
	require.NotContains(t, p.stderr.String(), "WARNING")
}

// TestServerStopsWithinItsGrace: a client that holds a request open (a
// body that never ends, slower than any timeout) does not keep the server
// from stopping within its grace period.
func TestServerStopsWithinItsGrace(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	const grace = 300 * time.Millisecond
	p := runInProc(t, "-listen", "127.0.0.1:0", "-shutdown-grace", grace.String(), "-body-timeout", "1m")
	path, err := httpkit.DefaultTokenPath(p.addr)
	require.NoError(t, err)
	token, err := httpkit.ReadTokenFile(path)
	require.NoError(t, err)
	c, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer c.Close()
	// The server asks for the body (100 Continue) when the handler reads
	// it: from then on the request is surely in flight. The body never comes.
	fmt.Fprintf(c, "PUT /v1/instance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n", token)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusContinue, resp.StatusCode)
	_, err = c.Write([]byte("{"))
	require.NoError(t, err)
	err, took := p.stop(t)
	require.NoError(t, err)
	require.GreaterOrEqual(t, took, grace, "the request held the server until its grace ended")
	require.Less(t, took, 10*grace, "the server stops within its grace period (and a little)")
	require.Contains(t, p.stderr.String(), "shutting down")
}

// TestServerLimitsFromFlags: -body-timeout, -idle-timeout and -max-conns
// reach the server: a slow body is answered 408, an idle keep-alive
// connection is closed, and a connection over the limit is refused.
func TestServerLimitsFromFlags(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	p := runInProc(t, "-listen", "127.0.0.1:0", "-body-timeout", "200ms", "-idle-timeout", "200ms", "-max-conns", "1")
	path, err := httpkit.DefaultTokenPath(p.addr)
	require.NoError(t, err)
	token, err := httpkit.ReadTokenFile(path)
	require.NoError(t, err)
	// tryDial fails nothing: it serves inside Eventually's condition too.
	tryDial := func() (net.Conn, *bufio.Reader, error) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			return nil, nil, err
		}
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			c.Close()
			return nil, nil, err
		}
		return c, bufio.NewReader(c), nil
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, br, err := tryDial()
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c, br
	}

	c, br := dial()
	fmt.Fprintf(c, "PUT /v1/instance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", token)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	c.Close()

	// The slot frees when the server sees the close: retry until it has.
	var idle net.Conn
	var idleR *bufio.Reader
	require.Eventually(t, func() bool {
		c, br, err := tryDial()
		if err != nil {
			return false
		}
		fmt.Fprintf(c, "GET /v1/instance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", token)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusNotFound {
			c.Close()
			return false
		}
		resp.Body.Close()
		idle, idleR = c, br // only by the check that succeeds
		return true
	}, 5*time.Second, 10*time.Millisecond)
	t.Cleanup(func() { idle.Close() })

	// The idle one is closed by the server (-idle-timeout).
	_, err = idleR.ReadByte()
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closed the idle connection: %v", err)

	// -max-conns: with one place and a long idle timeout, a newcomer takes
	// the place of an idle connection, which is closed at once (a second
	// place would have left it open).
	q := runInProc(t, "-listen", "127.0.0.1:0", "-idle-timeout", "1m", "-max-conns", "1")
	qpath, err := httpkit.DefaultTokenPath(q.addr)
	require.NoError(t, err)
	qtoken, err := httpkit.ReadTokenFile(qpath)
	require.NoError(t, err)
	// tryGet fails nothing: it serves inside Eventually's condition too.
	tryGet := func() (net.Conn, *bufio.Reader, int) {
		c, err := net.Dial("tcp", q.addr)
		if err != nil {
			return nil, nil, 0
		}
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			c.Close()
			return nil, nil, 0
		}
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET /v1/instance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", qtoken)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			c.Close()
			return nil, nil, 0
		}
		resp.Body.Close()
		return c, br, resp.StatusCode
	}
	c1, first, status := tryGet()
	require.Equal(t, http.StatusNotFound, status)
	t.Cleanup(func() { c1.Close() })
	// The first connection turns idle a moment after its answer: until
	// then a newcomer finds the one place busy (503) and tries again.
	require.Eventually(t, func() bool {
		c, _, status := tryGet()
		if c != nil {
			defer c.Close()
		}
		return status == http.StatusNotFound
	}, 5*time.Second, 10*time.Millisecond)
	_, err = first.ReadByte()
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the idle connection made way: %v", err)
}

// blockingServer is an HTTP server whose shutdown lasts until its context
// ends, as one with a connection that never finishes does.
type blockingServer struct{}

func (blockingServer) Shutdown(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestShutdownIsBoundedByOneGrace: a server whose connections use up the
// whole grace period and a runtime that does not close do not make the
// shutdown last longer than that one grace period (and a little), not one
// period each.
func TestShutdownIsBoundedByOneGrace(t *testing.T) {
	const grace = 400 * time.Millisecond
	stuck := make(chan struct{})
	defer close(stuck)
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	require.NoError(t, shutdown(ctx, log, blockingServer{}, func() { <-stuck }))
	took := time.Since(start)
	require.GreaterOrEqual(t, took, grace)
	require.Less(t, took, grace+grace/2, "one grace period bounds the whole shutdown")
	require.Contains(t, buf.String(), "did not close within the grace period")

	// A runtime that closes at once ends the shutdown at once.
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	start = time.Now()
	require.NoError(t, shutdown(ctx2, log, &http.Server{}, func() {}))
	require.Less(t, time.Since(start), 5*time.Second)
}
