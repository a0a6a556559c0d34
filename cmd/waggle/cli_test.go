package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/kvmtest"
)

// The CLI's commands end: each test runs `waggle vm ...` as a subprocess
// with a time limit, so a command that hangs fails the test.

const cliTickerJSON = `{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":"pace_ms=20"},
 "components":{"com1":{"type":"serial_port","num":"com1"}}}`

// cliProc is a running `waggle vm` subprocess.
type cliProc struct {
	args           []string
	limit          time.Duration
	stdout, stderr syncBuffer
	done           chan struct{} // closed when the process has exited
	err            error         // set before done is closed
	ctx            context.Context
}

// startCLI starts `waggle vm args...` against the server at addr; the
// process is killed after limit.
func startCLI(t *testing.T, limit time.Duration, addr string, args ...string) *cliProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	p := &cliProc{args: args, limit: limit, done: make(chan struct{}), ctx: ctx}
	cmd := exec.CommandContext(ctx, waggleBin, append([]string{"vm"}, args...)...)
	cmd.Env = append(os.Environ(), "WAGGLE_SERVER="+addr)
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	require.NoError(t, cmd.Start())
	go func() {
		p.err = cmd.Wait()
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// cliResult is how a `waggle vm` command ended.
type cliResult struct {
	stdout, stderr string
	code           int
}

// wait waits for the command to end and fails the test if it hung.
func (p *cliProc) wait(t *testing.T) cliResult {
	t.Helper()
	<-p.done
	if errors.Is(p.ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("waggle vm %s hung: not ended after %v\nstdout: %s\nstderr: %s",
			strings.Join(p.args, " "), p.limit, p.stdout.String(), p.stderr.String())
	}
	res := cliResult{stdout: p.stdout.String(), stderr: p.stderr.String()}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		res.code = ee.ExitCode()
	} else {
		require.NoError(t, p.err)
	}
	return res
}

// vmCLI runs `waggle vm args...` against the server at addr and fails the
// test if it has not ended within limit.
func vmCLI(t *testing.T, limit time.Duration, addr string, args ...string) cliResult {
	t.Helper()
	return startCLI(t, limit, addr, args...).wait(t)
}

// requireExit checks a command's exit status, showing its output if wrong.
func requireExit(t *testing.T, res cliResult, code int) {
	t.Helper()
	require.Equal(t, code, res.code, "exit status\nstdout: %s\nstderr: %s", res.stdout, res.stderr)
}

// jsonStates decodes the JSON lines of `-o json` state output.
func jsonStates(t *testing.T, out string) []api.InstanceStateView {
	t.Helper()
	var views []api.InstanceStateView
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v api.InstanceStateView
		require.NoError(t, json.Unmarshal([]byte(line), &v), "a JSON line: %q", line)
		views = append(views, v)
	}
	return views
}

// TestCLIStateCommandsEndWhenTheGoalIsMet: run on a running VM, stop on a
// destroyed one and reboots on top of each other all end, with exit 0; the
// requests the server refuses end with its error.
func TestCLIStateCommandsEndWhenTheGoalIsMet(t *testing.T) {
	kvmtest.Require(t)
	p := startServer(t)
	createRunning(t, p, cliTickerJSON, "tick 2\n")
	const limit = 20 * time.Second

	res := vmCLI(t, limit, p.addr, "run")
	requireExit(t, res, 0)
	require.Contains(t, res.stdout, "running")
	res = vmCLI(t, limit, p.addr, "run", "-o", "json")
	requireExit(t, res, 0)
	require.Equal(t, api.InstanceStateRunning, jsonStates(t, res.stdout)[0].State)

	// A reboot reboots the running guest.
	res = vmCLI(t, limit, p.addr, "reboot")
	requireExit(t, res, 0)
	require.Contains(t, res.stdout, "running")
	require.Eventually(t, func() bool { return serialCount(p.client, "ticker ready") == 2 },
		10*time.Second, 10*time.Millisecond, "the guest booted again")

	// Reboots asked while one is under way: each waits for running. (The
	// order of the requests is up to the scheduler; TestCLIFollowsScriptedStates
	// has the reboot under way for certain.)
	s, err := p.client.InstanceStatePutWithResponse(context.Background(), api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedReboot})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode(), string(s.Body))
	var reboots []*cliProc
	for range 4 {
		reboots = append(reboots, startCLI(t, limit, p.addr, "reboot"))
	}
	for _, r := range reboots {
		res := r.wait(t)
		requireExit(t, res, 0)
		require.Contains(t, res.stdout, "running")
	}
	require.Equal(t, api.InstanceStateRunning, state(t, p).State)

	res = vmCLI(t, limit, p.addr, "stop")
	requireExit(t, res, 0)
	// stop's goal is stopped; destroyed follows on its own, in the same
	// answer of the state monitor or (on a slow host) just after.
	require.Contains(t, res.stdout, "stopped")
	require.Eventually(t, func() bool { return inState(p, api.InstanceStateDestroyed) }, 10*time.Second, 10*time.Millisecond)
	for range 2 {
		res = vmCLI(t, limit, p.addr, "stop")
		requireExit(t, res, 0)
		require.Contains(t, res.stdout, "destroyed", "a destroyed VM is stopped already")
	}
	for _, verb := range []string{"run", "reboot"} {
		res = vmCLI(t, limit, p.addr, verb)
		requireExit(t, res, 1)
		require.Contains(t, res.stderr, "invalid_transition")
	}
}

// TestCLIFollowsScriptedStates drives the CLI against a scripted server, to
// reach for certain the cases a real VM reaches only by chance: a reboot
// under way, and a VM that ends or fails while the CLI waits for running.
func TestCLIFollowsScriptedStates(t *testing.T) {
	cases := []struct {
		name   string
		verb   string
		states []api.InstanceState // [0] is the state at first, then one per generation
		put    bool                // the CLI should ask the server
		code   int
		want   string // in stdout when code is 0, else in stderr
	}{
		{"reboot while rebooting", "reboot", []api.InstanceState{"rebooting", "running"}, false, 0, "running"},
		{"reboot while rebooting, then failed", "reboot", []api.InstanceState{"rebooting", "failed"}, false, 1, "the VM failed: triple fault"},
		{"run, then destroyed", "run", []api.InstanceState{"creating", "starting", "destroyed"}, true, 1, "the VM is destroyed: it will not be running"},
		{"reboot, then stopping", "reboot", []api.InstanceState{"running", "stopping"}, true, 1, "the VM is stopping: it will not be running"},
		{"stop, then failed", "stop", []api.InstanceState{"running", "stopping", "failed"}, true, 1, "the VM failed"},
		{"stop while stopping", "stop", []api.InstanceState{"stopping", "destroyed"}, true, 0, "destroyed"},
	}
	for _, version := range []string{"v1", "v2"} {
		for _, tc := range cases {
			t.Run(version+"/"+tc.name, func(t *testing.T) {
				var puts atomic.Int32
				srv := httptest.NewServer(scriptedStates(t, version, tc.states, &puts))
				defer srv.Close()
				res := vmCLI(t, 20*time.Second, strings.TrimPrefix(srv.URL, "http://"), tc.verb)
				requireExit(t, res, tc.code)
				want := tc.want
				if version == "v2" {
					want = strings.Replace(want, "failed: ", "failed: guest_triple_fault: ", 1)
				}
				if tc.code == 0 {
					require.Contains(t, res.stdout, want)
				} else {
					require.Contains(t, res.stderr, want)
				}
				if version == "v2" && tc.states[len(tc.states)-1] == api.InstanceStateFailed {
					require.Contains(t, res.stderr, "guest_triple_fault: triple fault", "v2 tells the failure's kind")
				}
				require.Equal(t, tc.put, puts.Load() == 1, "asked the server to %s", tc.verb)
			})
		}
	}
}

// scriptedStates serves the state monitor of API version (v1 or v2):
// generation 1 is states[0], and each answer to a long poll moves one
// generation on, until the last state, which it keeps (polls then time
// out). A state request is answered as the version does (v1: 204; v2: 200
// with the generation). A v1 server knows no /v2 path.
func scriptedStates(t *testing.T, version string, states []api.InstanceState, puts *atomic.Int32) http.Handler {
	mux := http.NewServeMux()
	var gen atomic.Int64
	mux.HandleFunc("PUT /"+version+"/instance/state", func(w http.ResponseWriter, r *http.Request) {
		puts.Add(1)
		if version == "v1" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int64{"gen": gen.Load()})
	})
	if version == "v1" {
		mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "not_found", "no such path")
		})
	} else {
		mux.HandleFunc("GET /v2/instance", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"gen": 1, "state": states[0],
				"properties": map[string]any{"id": uuid.New(), "name": "vm", "description": ""}})
		})
	}
	mux.HandleFunc("GET /"+version+"/instance/state-monitor", func(w http.ResponseWriter, r *http.Request) {
		var asked int
		fmt.Sscan(r.URL.Query().Get("gen"), &asked)
		next := min(asked+1, len(states)) // generations count from 1
		if next == asked {
			select { // nothing more will happen: a short long poll
			case <-r.Context().Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		gen.Store(int64(next))
		v := map[string]any{"gen": next, "state": states[next-1], "migration": map[string]any{}}
		if states[next-1] == api.InstanceStateFailed {
			if version == "v1" {
				v["failure_reason"] = "triple fault"
			} else {
				v["failure"] = map[string]string{"kind": "guest_triple_fault", "message": "triple fault"}
			}
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
		http.Error(w, "unexpected", http.StatusNotImplemented)
	})
	return mux
}

// TestCLIWatchPrintsEveryStateFromTheFirst: `vm watch -o json` prints the
// state it starts from and each change as JSON lines, and ends with the VM;
// on an ended VM it prints the state and ends at once.
func TestCLIWatchPrintsEveryStateFromTheFirst(t *testing.T) {
	kvmtest.Require(t)
	p := startServer(t)
	ctx := context.Background()
	w, err := specDecode(cliTickerJSON)
	require.NoError(t, err)
	r, err := p.client.InstanceEnsureWithResponse(ctx, specEnsure(t, api.InstanceProperties{Id: uuid.New(), Name: "w"}, w))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	first := r.JSON201.Gen

	watch := startCLI(t, 30*time.Second, p.addr, "watch", "-o", "json")
	require.Eventually(t, func() bool { return strings.Contains(watch.stdout.String(), "\n") }, 10*time.Second, 10*time.Millisecond,
		"watch printed no initial state: %s", watch.stderr.String())
	start := jsonStates(t, watch.stdout.String())
	require.Equal(t, []api.InstanceStateView{{Gen: first, State: api.InstanceStateCreating}}, start)

	requireExit(t, vmCLI(t, 20*time.Second, p.addr, "run"), 0)
	requireExit(t, vmCLI(t, 20*time.Second, p.addr, "stop"), 0)
	res := watch.wait(t)
	requireExit(t, res, 0)
	views := jsonStates(t, res.stdout)
	var seen []api.InstanceState
	for _, v := range views {
		seen = append(seen, v.State)
	}
	require.Equal(t, []api.InstanceState{api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning,
		api.InstanceStateStopping, api.InstanceStateStopped, api.InstanceStateDestroyed}, seen, "every change, none skipped")
	last := views[len(views)-1]
	for i := 1; i < len(views); i++ {
		require.Equal(t, views[i-1].Gen+1, views[i].Gen, "one generation a change")
	}

	for _, o := range []string{"text", "json"} {
		res = vmCLI(t, 10*time.Second, p.addr, "watch", "-o", o)
		requireExit(t, res, 0)
		require.Contains(t, res.stdout, "destroyed")
	}
	ended := jsonStates(t, res.stdout)
	require.Len(t, ended, 1)
	require.Equal(t, last.Gen, ended[0].Gen)
	require.Equal(t, last.State, ended[0].State)
}

// TestCLISerialEndsWithTheVM: an attached console ends when the VM does,
// and attaching to an ended VM says so at once.
func TestCLISerialEndsWithTheVM(t *testing.T) {
	kvmtest.Require(t)
	p := startServer(t)
	createRunning(t, p, cliTickerJSON, "tick 2\n")

	attached := startCLI(t, 30*time.Second, p.addr, "serial")
	require.Eventually(t, func() bool { return strings.Contains(attached.stdout.String(), "tick ") }, 10*time.Second, 10*time.Millisecond)
	requireExit(t, vmCLI(t, 20*time.Second, p.addr, "stop"), 0)
	res := attached.wait(t)
	requireExit(t, res, 0)
	require.Regexp(t, `the VM has ended \((stopped|destroyed)\)`, res.stderr, "stopped, then destroyed once its VM is closed")

	res = vmCLI(t, 10*time.Second, p.addr, "serial")
	requireExit(t, res, 1)
	require.Contains(t, res.stderr, "the VM is destroyed: its console has ended")
	res = vmCLI(t, 10*time.Second, p.addr, "serial", "-until", "tick 1000000")
	requireExit(t, res, 1)
	require.Contains(t, res.stderr, "the VM is destroyed")
}

// countingProxy forwards connections to addr and counts them.
func countingProxy(t *testing.T, addr string) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.Close() }()
				io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String(), &n
}

// TestCLIMigrate: `waggle vm migrate` moves a ticking VM from A to B (the
// target reaching A through -src-addr) and back (-o json), each time with a
// summary, the source destroyed and the guest ticking on at the target.
func TestCLIMigrate(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	createRunning(t, a, cliTickerJSON, "tick 3\n")

	help := vmCLI(t, 10*time.Second, a.addr, "help")
	require.Contains(t, help.stdout, "-src-addr host:port")

	proxy, dials := countingProxy(t, a.addr)
	attached := startCLI(t, 120*time.Second, a.addr, "serial")
	require.Eventually(t, func() bool { return strings.Contains(attached.stdout.String(), "tick ") }, 10*time.Second, 10*time.Millisecond)
	// Both servers take the tests' token from a file, so neither wrote one
	// where the CLI would look for the target's: it is named.
	res := vmCLI(t, 90*time.Second, a.addr, "migrate", "-server", a.addr, "-to", b.addr, "-to-token-file", testTokenFile, "-src-addr", proxy)
	requireExit(t, res, 0)
	// The source says where the VM went: the attached console, get, watch.
	moved := "migrated out (migration "
	ended := attached.wait(t)
	requireExit(t, ended, 0)
	require.Contains(t, ended.stderr, moved)
	for _, cmd := range []string{"get", "watch"} {
		got := vmCLI(t, 10*time.Second, a.addr, cmd)
		requireExit(t, got, 0)
		require.Contains(t, got.stdout, moved, cmd)
	}
	require.Regexp(t, `migrated mig from `+a.addr+` to `+b.addr+`\n`, res.stdout)
	require.Regexp(t, `total\s+\d[\d.]*[µm]?s\n`, res.stdout)
	require.Regexp(t, `downtime\s+\d[\d.]*[µm]?s\n`, res.stdout)
	require.Regexp(t, `throughput\s+\d+ MiB/s\n`, res.stdout)
	require.Contains(t, res.stderr, "completed", "the progress line")
	require.Positive(t, dials.Load(), "the target reached the source through -src-addr")
	requireMoved(t, a, b, "")

	// And back, for programs.
	onA := console(t, a)
	res = vmCLI(t, 90*time.Second, b.addr, "migrate", "-to", a.addr, "-to-token-file", testTokenFile, "-o", "json")
	requireExit(t, res, 0)
	var sum migrationSummary
	dec := json.NewDecoder(strings.NewReader(res.stdout))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&sum), res.stdout)
	require.False(t, dec.More(), "one JSON value: %s", res.stdout)
	require.Equal(t, "mig", sum.Name)
	require.Equal(t, b.addr, sum.From)
	require.Equal(t, a.addr, sum.To)
	require.Equal(t, b.addr, sum.SrcAddr, "-src-addr defaults to -server")
	require.NotZero(t, sum.MigrationID)
	require.Positive(t, sum.TotalUs)
	require.Positive(t, sum.DowntimeUs)
	require.LessOrEqual(t, sum.DowntimeUs, sum.TotalUs)
	require.Positive(t, sum.BytesSent)
	require.Positive(t, sum.ThroughputMiBs)
	require.Empty(t, res.stderr, "no progress bar for programs")
	requireMoved(t, b, a, onA)
}

// requireMoved checks that the VM left src (destroyed) and runs on dst,
// ticking on after src's last tick; dstBefore is dst's console before the
// migration (a server's console spans its instances).
func requireMoved(t *testing.T, src, dst *serverProc, dstBefore string) {
	t.Helper()
	awaitDestroyed(t, src)
	require.Equal(t, api.InstanceStateRunning, state(t, dst).State)
	onSrc := tickNumbers(console(t, src))
	require.NotEmpty(t, onSrc)
	var after []int
	require.Eventually(t, func() bool {
		out, err := serialHistory(dst.client)
		got := tickNumbers(strings.TrimPrefix(out, dstBefore))
		if err != nil || len(got) < 3 {
			return false
		}
		after = got // only by the check that succeeds
		return true
	}, 10*time.Second, 10*time.Millisecond, "the guest ticks on at the target")
	require.Greater(t, after[len(after)-1], onSrc[len(onSrc)-1], "ticks after the migration")
	// The console's history moved with the VM: the target shows what the
	// guest printed at the source, from its first tick there.
	full, err := serialHistory(dst.client)
	require.NoError(t, err)
	require.Contains(t, tickNumbers(full), onSrc[0], "the target's history begins with the source's")
}
