package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runDemo runs scripts/demo.sh with the test's binary and env added.
func runDemo(t *testing.T, env ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/demo.sh")
	cmd.Env = append(os.Environ(), append([]string{"WAGGLE_BIN=" + waggleBin, "TMPDIR=" + t.TempDir(),
		"XDG_STATE_HOME=" + t.TempDir(), "WAGGLE_TOKEN_FILE=" + testTokenFile}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	require.NoError(t, ctx.Err(), "the demo hung\nstdout: %s\nstderr: %s", out.String(), errb.String())
	return out.String(), errb.String(), err
}

var keptLog = regexp.MustCompile(`the server's log is kept in (\S+)`)

// TestDemoStopsWhenItsServerCannotStart: when the demo's server cannot
// listen, the demo fails saying so, shows why, and keeps the log.
func TestDemoStopsWhenItsServerCannotStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, stderr, err := runDemo(t, "WAGGLE_DEMO_LISTEN="+ln.Addr().String())
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "the demo fails: %v\n%s", err, stderr)
	require.Contains(t, stderr, "the server did not start")
	require.Contains(t, stderr, "address already in use")
	m := keptLog.FindStringSubmatch(stderr)
	require.NotNil(t, m, "the log's path: %s", stderr)
	data, err := os.ReadFile(m[1])
	require.NoError(t, err, "the log is kept")
	require.Contains(t, string(data), "address already in use")
}

// TestDemoUsesItsOwnServer: a server already listening where the CLI
// looks by default (127.0.0.1:12400, and $WAGGLE_SERVER) gets no request
// from the demo, which starts a server of its own on a free port. Without
// /dev/kvm the demo stops saying so; with it, it runs to the end.
func TestDemoUsesItsOwnServer(t *testing.T) {
	var hits atomic.Int32
	squatter := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "not the demo's server", http.StatusTeapot)
	})
	others := []string{}
	for _, addr := range []string{"127.0.0.1:12400", "127.0.0.1:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // 12400 is taken already: whatever it is, the demo must not use it either
		}
		srv := &http.Server{Handler: squatter}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		others = append(others, ln.Addr().String())
	}
	require.NotEmpty(t, others)
	stdout, stderr, err := runDemo(t, "WAGGLE_SERVER="+others[len(others)-1])
	require.Zero(t, hits.Load(), "the demo called a server it did not start\nstdout: %s\nstderr: %s", stdout, stderr)
	if _, serr := os.Stat("/dev/kvm"); serr != nil {
		require.Error(t, err)
		require.Contains(t, stderr, "this machine has no /dev/kvm")
		require.Regexp(t, `waggle server listening.* addr=127\.0\.0\.1:\d+`, stderr, "its own server, on a port the kernel picked")
		for _, o := range others {
			require.NotContains(t, stderr, "addr="+o+" ")
		}
		return
	}
	require.NoError(t, err, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Contains(t, stdout, "tick 10")
	require.Contains(t, stdout, "== demo done")
}
