package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/spec"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	specv2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
	"github.com/wagglevm/waggle/vmconfig"
)

// These tests need no KVM: they run the CLI in the test process (run, as
// main does) or as the built binary, against fake servers that answer the
// v1 contract's shapes, or against no server at all.

// runCLI runs `waggle args...` in the test process with a time limit.
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &stdout, &stderr)
	require.NoError(t, ctx.Err(), "waggle %s did not end in time", strings.Join(args, " "))
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// fakeServer is an httptest server with the routes a test gives it; any
// other request fails the test, but for the CLI's question whether a
// server with no v2 routes serves v2. It counts the requests it got.
type fakeServer struct {
	*httptest.Server
	addr     string // host:port
	requests atomic.Int32
	mux      *http.ServeMux // more routes may be added while it serves
}

func newFake(t *testing.T, routes map[string]http.HandlerFunc) *fakeServer {
	t.Helper()
	mux := http.NewServeMux()
	servesV2 := false
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
		servesV2 = servesV2 || strings.Contains(pattern, "/v2/")
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/") && !servesV2 {
			// A fake without v2 routes is a server that serves only v1,
			// as v0.1.0 does; the CLI asks for v2 first.
			writeError(w, http.StatusNotFound, "not_found", "no such path")
			return
		}
		t.Errorf("fake server: unexpected request %s %s", r.Method, r.URL)
		writeError(w, http.StatusNotFound, "not_found", "no such path")
	})
	f := &fakeServer{mux: mux}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	f.addr = strings.TrimPrefix(f.URL, "http://")
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers the contract's Error schema.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error_code": code, "message": msg, "request_id": "req-1"})
}

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestCLIHelpExitsZeroOnStdout: -h, -help and --help on waggle, on every
// vm command and on server and version print the help on stdout, nothing
// on stderr, and exit 0, in the process and as the built binary.
func TestCLIHelpExitsZeroOnStdout(t *testing.T) {
	var lines [][]string
	for _, h := range []string{"-h", "-help", "--help"} {
		lines = append(lines, []string{h}, []string{"vm", h}, []string{"server", h}, []string{"sled-agent", h}, []string{"version", h})
		for _, c := range vmCommands {
			lines = append(lines, []string{"vm", c.name, h})
		}
	}
	lines = append(lines, []string{"help"}, []string{"vm", "help"},
		[]string{"vm", "get", "-server", "127.0.0.1:1", "-h"}, []string{"vm", "migrate", "-to", "x:1", "--help"})
	for _, args := range lines {
		res := cli(t, args...)
		require.Equal(t, 0, res.code, "waggle %v: exit status\nstderr: %s", args, res.stderr)
		require.Empty(t, res.stderr, "waggle %v: nothing on stderr", args)
		require.Contains(t, strings.ToLower(res.stdout), "usage", "waggle %v: the help on stdout", args)
	}
	// A command's help lists its own flags.
	require.Contains(t, cli(t, "vm", "create", "-h").stdout, "-config")
	require.Contains(t, cli(t, "vm", "migrate", "-h").stdout, "-src-addr")
	require.Contains(t, cli(t, "server", "-h").stdout, "-listen")
	require.Contains(t, cli(t, "sled-agent", "--help").stdout, "-vmm-ports")

	for _, args := range [][]string{{"vm", "create", "--help"}, {"server", "-h"}, {"--help"}} {
		cmd := exec.Command(waggleBin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "waggle %v: exit status 0\nstderr: %s", args, stderr.String())
		require.Empty(t, stderr.String(), "waggle %v", args)
		require.Contains(t, strings.ToLower(stdout.String()), "usage", "waggle %v", args)
	}
}

// TestCLIMistakesExitNonZeroOnStderr: a command line the CLI cannot use
// exits 2 with the reason on stderr and nothing on stdout.
func TestCLIMistakesExitNonZeroOnStderr(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"fly"}, `unknown command "fly"`},
		{[]string{"vm"}, "usage"},
		{[]string{"vm", "fly"}, `unknown command "fly"`},
		{[]string{"vm", "get", "-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"vm", "get", "-o", "yaml"}, "want text or json"},
		{[]string{"vm", "get", "extra"}, "unexpected arguments"},
		{[]string{"vm", "create"}, "exactly one of -spec and -config"},
		{[]string{"vm", "migrate"}, "-to is required"},
		{[]string{"vm", "get", "-server", "ftp://host:1"}, "-server"},
		{[]string{"vm", "get", "-server", "host:99999"}, "-server"},
		{[]string{"vm", "migrate", "-to", "host:0"}, "-to"},
		{[]string{"version", "extra"}, "unexpected arguments"},
		{[]string{"server", "-bogus"}, "-bogus"},
		{[]string{"sled-agent", "-bogus"}, "-bogus"},
	} {
		res := cli(t, tc.args...)
		require.Equal(t, 2, res.code, "waggle %v: exit status\nstdout: %s\nstderr: %s", tc.args, res.stdout, res.stderr)
		require.Contains(t, res.stderr, tc.want, "waggle %v", tc.args)
		require.Empty(t, res.stdout, "waggle %v: nothing on stdout", tc.args)
	}
}

// TestCLIRefusedConnectionSaysNoServer: where nothing listens, every
// command that calls the server says so in words, not as a dial error.
func TestCLIRefusedConnectionSaysNoServer(t *testing.T) {
	addr := refusedAddr(t)
	for _, args := range [][]string{
		{"vm", "get", "-server", addr},
		{"vm", "get", "-server", "http://" + addr},
		{"vm", "run", "-server", addr},
		{"vm", "stop", "-server", addr},
		{"vm", "watch", "-server", addr},
		{"vm", "spec", "-server", addr},
		{"vm", "serial", "-server", addr},
		{"vm", "serial", "-history", "-server", addr},
		{"vm", "create", "-config", "../../examples/ticker.toml", "-server", addr},
		{"vm", "migrate", "-server", addr, "-to", refusedAddr(t)},
	} {
		res := cli(t, args...)
		require.Equal(t, 1, res.code, "waggle %v\nstderr: %s", args, res.stderr)
		require.Contains(t, res.stderr, "no waggle server at "+addr+" (start one with `waggle server`", "waggle %v", args)
		require.NotContains(t, res.stderr, "dial tcp", "waggle %v", args)
		require.NotContains(t, res.stderr, "connection refused", "waggle %v", args)
	}
}

// TestParseServer: -server and -to take host:port, http(s)://host:port
// or a bare host, which means port 12400.
func TestParseServer(t *testing.T) {
	for in, want := range map[string]endpoint{
		"127.0.0.1:12401":        {"http", "127.0.0.1:12401", ""},
		"http://127.0.0.1:12401": {"http", "127.0.0.1:12401", ""},
		"http://h.example:80/":   {"http", "h.example:80", ""},
		"http://h.example:80/v1": {"http", "h.example:80", "v1"},
		"https://h.example:443":  {"https", "h.example:443", ""},
		"HTTP://h:1":             {"http", "h:1", ""},
		"h.example":              {"http", "h.example:12400", ""},
		"http://h.example":       {"http", "h.example:12400", ""},
		"localhost":              {"http", "localhost:12400", ""},
		"10.0.0.7":               {"http", "10.0.0.7:12400", ""},
		"[::1]":                  {"http", "[::1]:12400", ""},
		"::1":                    {"http", "[::1]:12400", ""},
		"[::1]:9":                {"http", "[::1]:9", ""},
		" h:5 ":                  {"http", "h:5", ""},
	} {
		got, err := parseServer(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "ftp://h:1", "h:0", "h:65536", "h:x", ":12400", "http://h:1/other",
		"http://u:p@h:1", "http://h:1?x=1", "a b", "h/x", "[::1"} {
		_, err := parseServer(in)
		require.Error(t, err, "%q", in)
	}
	ep, _ := parseServer("https://h:1")
	require.Equal(t, "https://h:1", ep.baseURL())
	require.Equal(t, "wss://h:1/v2/instance/serial", ep.wsURL("/v2/instance/serial"))
	ep, _ = parseServer("h")
	require.Equal(t, "ws://h:12400/v1/instance/serial", ep.wsURL("/v1/instance/serial"))
}

// TestCLIServerFlagForms: the CLI reaches a server given as
// http://host:port as it does one given as host:port.
func TestCLIServerFlagForms(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.Instance{Properties: api.InstanceProperties{Id: uuid.New(), Name: "fake"}, State: api.InstanceStateRunning, Gen: 3})
		},
	})
	for _, s := range []string{f.addr, "http://" + f.addr, "http://" + f.addr + "/"} {
		res := cli(t, "vm", "get", "-server", s)
		require.Equal(t, 0, res.code, "-server %s: %s", s, res.stderr)
		require.Contains(t, res.stdout, "fake")
	}
	t.Setenv("WAGGLE_SERVER", "http://"+f.addr)
	res := cli(t, "vm", "get")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "running")
}

// TestCLIMigrateToTheSameServerRefused: -to naming the server the VM runs
// on, written the same way or another, is refused before any request.
func TestCLIMigrateToTheSameServerRefused(t *testing.T) {
	f := newFake(t, nil)
	_, port, err := net.SplitHostPort(f.addr)
	require.NoError(t, err)
	for _, to := range []string{f.addr, "http://" + f.addr, "localhost:" + port} {
		res := cli(t, "vm", "migrate", "-server", f.addr, "-to", to)
		require.Equal(t, 1, res.code, "-to %s\nstderr: %s", to, res.stderr)
		require.Contains(t, res.stderr, "is the server the VM runs on", "-to %s", to)
		require.Contains(t, res.stderr, "another `waggle server`")
	}
	require.Zero(t, f.requests.Load(), "no request reached the server")

	// Another port is another server.
	ctx := context.Background()
	a, _ := parseServer("127.0.0.1:" + port)
	b, _ := parseServer("127.0.0.1:1")
	require.False(t, sameServer(ctx, a, b))
	b, _ = parseServer("LOCALHOST:" + port)
	require.True(t, sameServer(ctx, a, b))
	b, _ = parseServer("10.255.255.1:" + port)
	require.False(t, sameServer(ctx, a, b))
}

// TestCLICreateTwiceSaysWhatDiffersAndWhatToDo: a create refused with 409
// instance_exists names the VM the server has, what differs, and the CLI
// command that frees the server; no_instance names `waggle vm create`,
// never an HTTP route.
func TestCLICreateTwiceSaysWhatDiffersAndWhatToDo(t *testing.T) {
	have := uuid.New()
	props := api.InstanceProperties{Id: have, Name: "ticker", Description: ptr("prints a tick every 200 ms")} // as in examples/ticker.toml
	spec, err := specDecode(`{"board":{"cpus":1,"memory_mb":128,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":"pace_ms=200"},
		"components":{"com1":{"type":"serial_port","num":"com1"}}}`)
	require.NoError(t, err)
	f := newFake(t, map[string]http.HandlerFunc{
		"PUT /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusConflict, "instance_exists", "a different instance already exists")
		},
		"GET /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.Instance{Properties: props, State: api.InstanceStateRunning, Gen: 3})
		},
		"GET /v1/instance/spec": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.InstanceSpecView{Properties: props,
				State: api.InstanceStateRunning, Gen: 3, SpecStatus: api.InstanceSpecStatusPresent, Spec: &spec})
		},
	})
	res := cli(t, "vm", "create", "-config", "../../examples/ticker.toml", "-server", f.addr)
	require.Equal(t, 1, res.code, res.stderr)
	require.Contains(t, res.stderr, fmt.Sprintf(`already has a VM: "ticker" (id %s, running)`, have))
	require.Contains(t, res.stderr, "differs in id (without -id, each create makes a new one), spec (board)")
	require.Contains(t, res.stderr, "stop that one first with `waggle vm stop`")
	require.Contains(t, res.stderr, "409 instance_exists")

	// The same id, so only the spec differs.
	res = cli(t, "vm", "create", "-config", "../../examples/ticker.toml", "-id", have.String(), "-server", f.addr)
	require.Equal(t, 1, res.code, res.stderr)
	require.Contains(t, res.stderr, "differs in spec (board)")

	none := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "no_instance", "no instance has been created; ensure one with PUT /instance")
		},
	})
	res = cli(t, "vm", "get", "-server", none.addr)
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "the server at "+none.addr+" has no VM; create one with `waggle vm create")
	require.NotContains(t, res.stderr, "PUT /instance")
}

// TestSpecDiff: the parts of two specs that differ, by name.
func TestSpecDiff(t *testing.T) {
	decode := func(js string) spec.Spec {
		w, err := specv1.DecodeInstanceSpec([]byte(js))
		require.NoError(t, err)
		s, err := specv1.ToSpec(w)
		require.NoError(t, err)
		return s
	}
	a := decode(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker"},
		"components":{"com1":{"type":"serial_port","num":"com1"},"com2":{"type":"serial_port","num":"com2"}}}`)
	b := decode(`{"board":{"cpus":2,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":""},
		"components":{"com1":{"type":"serial_port","num":"com1"},"com3":{"type":"serial_port","num":"com3"}}}`)
	require.Empty(t, specDiff(a, a))
	require.Equal(t, []string{"board", "components.com2", "components.com3"}, specDiff(a, b),
		"an empty cmdline is the default: the same boot")
	w, err := specv2.DecodeInstanceSpec([]byte(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker"},
		"components":{"com1":{"type":"serial_port","num":"com1"},"com2":{"type":"serial_port","num":"com2"}},
		"smbios":{"manufacturer":"x"}}`))
	require.NoError(t, err)
	c, err := specv2.ToSpec(w)
	require.NoError(t, err)
	require.Equal(t, []string{"smbios"}, specDiff(a, c), "what only v2 says is compared too")
}

// monitorScript is a fake state monitor: answers[i] is what a long poll
// from generation i's predecessor gets, in order; a poll at the last
// answer's generation waits for the client to go away.
type monitorScript struct {
	mu      sync.Mutex
	answers []api.InstanceStateView
	puts    atomic.Int32
}

func (m *monitorScript) routes(t *testing.T) map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"PUT /v1/instance/state": func(w http.ResponseWriter, r *http.Request) {
			m.puts.Add(1)
			w.WriteHeader(http.StatusNoContent)
		},
		"GET /v1/instance/state-monitor": func(w http.ResponseWriter, r *http.Request) {
			var gen int64
			fmt.Sscan(r.URL.Query().Get("gen"), &gen)
			m.mu.Lock()
			answers := m.answers
			m.mu.Unlock()
			if r.URL.Query().Get("timeout_ms") == "0" {
				writeJSON(w, 200, answers[0])
				return
			}
			for _, a := range answers {
				if a.Gen > gen {
					writeJSON(w, 200, a)
					return
				}
			}
			<-r.Context().Done()
		},
	}
}

func transition(gen int64, s api.InstanceState) api.StateTransition {
	return api.StateTransition{Gen: gen, State: s, At: time.Date(2026, 11, 27, 10, 0, 0, int(gen)*1e6, time.UTC)}
}

// TestCLIPrintsEveryTransition: when one answer of the state monitor
// carries several transitions (its history), `vm run`, `vm stop` and
// `vm watch` print each, in order; without a history they print the
// state the server answered.
func TestCLIPrintsEveryTransition(t *testing.T) {
	hist := func(ts ...api.StateTransition) *[]api.StateTransition { return &ts }
	run := &monitorScript{answers: []api.InstanceStateView{
		{Gen: 1, State: api.InstanceStateCreating},
		{Gen: 3, State: api.InstanceStateRunning, History: hist(transition(2, api.InstanceStateStarting), transition(3, api.InstanceStateRunning))},
	}}
	f := newFake(t, run.routes(t))
	res := cli(t, "vm", "run", "-server", f.addr)
	require.Equal(t, 0, res.code, res.stderr)
	requireStates(t, res.stdout, "creating", "starting", "running")
	require.EqualValues(t, 1, run.puts.Load())

	stop := &monitorScript{answers: []api.InstanceStateView{
		{Gen: 3, State: api.InstanceStateRunning},
		{Gen: 6, State: api.InstanceStateDestroyed, History: hist(
			transition(2, api.InstanceStateStarting), // before the asked generation: not printed
			transition(4, api.InstanceStateStopping), transition(5, api.InstanceStateStopped), transition(6, api.InstanceStateDestroyed))},
	}}
	f = newFake(t, stop.routes(t))
	res = cli(t, "vm", "stop", "-server", f.addr)
	require.Equal(t, 0, res.code, res.stderr)
	requireStates(t, res.stdout, "running", "stopping", "stopped", "destroyed")

	res = cli(t, "vm", "watch", "-server", f.addr, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var gens []int64
	var states []api.InstanceState
	for _, v := range jsonStates(t, res.stdout) {
		gens, states = append(gens, v.Gen), append(states, v.State)
	}
	require.Equal(t, []int64{3, 4, 5, 6}, gens)
	require.Equal(t, []api.InstanceState{"running", "stopping", "stopped", "destroyed"}, states)

	// A server without a history: the states it answers.
	old := &monitorScript{answers: []api.InstanceStateView{
		{Gen: 1, State: api.InstanceStateCreating},
		{Gen: 3, State: api.InstanceStateRunning},
	}}
	f = newFake(t, old.routes(t))
	res = cli(t, "vm", "run", "-server", f.addr)
	require.Equal(t, 0, res.code, res.stderr)
	requireStates(t, res.stdout, "creating", "running")
}

// requireStates checks that text output lists exactly these states, one a
// line, in order.
func requireStates(t *testing.T, out string, want ...string) {
	t.Helper()
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		require.GreaterOrEqual(t, len(f), 4, "a state line: %q", line)
		got = append(got, strings.TrimSuffix(f[3], ":"))
	}
	require.Equal(t, want, got, out)
}

// TestChangesAfter: the transitions after the asked generation, oldest
// first, ending with the current state, each once.
func TestChangesAfter(t *testing.T) {
	at := func(gen int64, s string) historyEntry {
		return historyEntry{Gen: gen, State: s, At: time.Date(2026, 11, 27, 10, 0, 0, int(gen)*1e6, time.UTC)}
	}
	h := []historyEntry{at(3, "stopping"), at(2, "running"), at(4, "stopped"), at(4, "stopped"), at(5, "destroyed")}
	got := changesAfter(stateView{Gen: 5, State: "destroyed", History: h}, 2)
	var gens []int64
	for _, c := range got {
		gens = append(gens, c.Gen)
	}
	require.Equal(t, []int64{3, 4, 5}, gens)
	require.Equal(t, stateDestroyed, got[2].State)
	require.NotNil(t, got[2].At)
	require.Nil(t, changesAfter(stateView{Gen: 5, State: "destroyed", History: h}, 5), "nothing new")
	got = changesAfter(stateView{Gen: 7, State: "running"}, 5)
	require.Len(t, got, 1)
	require.Equal(t, int64(7), got[0].Gen)
}

// movedSource is a fake source whose VM left by a completed migration.
func movedSource(t *testing.T, id uuid.UUID) *fakeServer {
	gone := api.InstanceStateView{Gen: 9, State: api.InstanceStateDestroyed, Migration: api.MigrationStatus{
		MigrationOut: &api.MigrationProgress{MigrationId: id, Phase: api.MigrationPhaseCompleted, BytesSent: 1 << 20, Rounds: 2},
	}}
	m := &monitorScript{answers: []api.InstanceStateView{gone}}
	routes := m.routes(t)
	routes["GET /v1/instance"] = func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Instance{Properties: api.InstanceProperties{Id: uuid.New(), Name: "ticker"}, State: api.InstanceStateDestroyed, Gen: 9})
	}
	return newFake(t, routes)
}

// TestCLISaysWhereAMigratedVMWent: on a source after a migration, get,
// watch, run and serial say that the VM migrated out, and by which
// migration.
func TestCLISaysWhereAMigratedVMWent(t *testing.T) {
	id := uuid.New()
	f := movedSource(t, id)
	want := fmt.Sprintf("migrated out (migration %s completed)", id)
	for _, args := range [][]string{{"get"}, {"watch"}} {
		res := cli(t, append([]string{"vm"}, append(args, "-server", f.addr)...)...)
		require.Equal(t, 0, res.code, "%v: %s", args, res.stderr)
		require.Contains(t, res.stdout, want, "%v", args)
	}
	for _, args := range [][]string{{"serial"}, {"serial", "-until", "tick 9"}} {
		res := cli(t, append([]string{"vm"}, append(args, "-server", f.addr)...)...)
		require.Equal(t, 1, res.code, "%v", args)
		require.Contains(t, res.stderr, want, "%v", args)
	}
	res := cli(t, "vm", "watch", "-server", f.addr, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var line stateChange
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &line))
	require.NotNil(t, line.MigratedOut)
	require.Equal(t, id, line.MigratedOut.MigrationID)
}

// fakeMigration is a fake source and target: the source arms with a
// secret it makes, the target records its ensure and shows the phases.
type fakeMigration struct {
	src, dst *fakeServer
	secret   string
	mu       sync.Mutex
	armedID  uuid.UUID
	ensure   map[string]any // the target's ensure body
}

func newFakeMigration(t *testing.T) *fakeMigration {
	m := &fakeMigration{secret: "s3cr3t-" + strings.Repeat("A", 40)}
	m.src = newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.Instance{Properties: api.InstanceProperties{Id: uuid.New(), Name: "mig"}, State: api.InstanceStateRunning, Gen: 3})
		},
		"PUT /v1/instance/migrate/expect": func(w http.ResponseWriter, r *http.Request) {
			var req api.InstanceMigrateExpectRequest
			assert.NoError(t, json.NewDecoder(r.Body).Decode(&req))
			assert.Nil(t, req.Secret, "the CLI lets the source make the secret")
			m.mu.Lock()
			m.armedID = req.MigrationId
			m.mu.Unlock()
			writeJSON(w, 200, api.MigrationArmed{MigrationId: req.MigrationId, ExpiresAt: time.Now().Add(5 * time.Minute), Secret: &m.secret})
		},
		"GET /v1/instance/migration-status": func(w http.ResponseWriter, r *http.Request) {
			tot, down := int64(25000), int64(700)
			writeJSON(w, 200, api.MigrationStatus{MigrationOut: &api.MigrationProgress{MigrationId: m.id(),
				Phase: api.MigrationPhaseCompleted, BytesSent: 3 << 20, Rounds: 2, TotalUs: &tot, DowntimeUs: &down}})
		},
	})
	var polls atomic.Int32
	phases := []api.MigrationPhase{"negotiate", "ram_precopy", "ram_precopy", "ram_precopy", "device_state", "completed"}
	m.dst = newFake(t, map[string]http.HandlerFunc{
		"PUT /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			assert.NoError(t, json.NewDecoder(r.Body).Decode(&body))
			m.mu.Lock()
			m.ensure = body
			m.mu.Unlock()
			writeJSON(w, 201, api.Instance{Properties: api.InstanceProperties{Id: uuid.New(), Name: "mig"}, State: api.InstanceStateMigrating, Gen: 1})
		},
		"GET /v1/instance/migration-status": func(w http.ResponseWriter, r *http.Request) {
			i := min(int(polls.Add(1))-1, len(phases)-1)
			down := int64(900)
			p := api.MigrationProgress{MigrationId: m.id(), Phase: phases[i], BytesSent: int64(i) << 20, Rounds: int32(i)}
			if phases[i] == api.MigrationPhaseCompleted {
				p.DowntimeUs = &down
			}
			writeJSON(w, 200, api.MigrationStatus{MigrationIn: &p})
		},
	})
	return m
}

func (m *fakeMigration) id() uuid.UUID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.armedID
}

// TestCLIMigrateHandsTheSecretToTheTarget: `vm migrate` arms the source,
// gives the target the migration id, the source's address and the secret
// the arm answered, and never shows the secret.
func TestCLIMigrateHandsTheSecretToTheTarget(t *testing.T) {
	m := newFakeMigration(t)
	res := cli(t, "vm", "migrate", "-server", m.src.addr, "-to", "http://"+m.dst.addr)
	require.Equal(t, 0, res.code, res.stderr)
	m.mu.Lock()
	mig, _ := m.ensure["migrate"].(map[string]any)
	m.mu.Unlock()
	require.NotNil(t, mig, "the target's ensure has migrate: %v", m.ensure)
	require.Equal(t, m.id().String(), mig["migration_id"])
	require.Equal(t, m.secret, mig["secret"])
	require.Equal(t, m.src.addr, mig["src_addr"])
	require.NotContains(t, res.stdout+res.stderr, m.secret, "the secret is never shown")
	require.Contains(t, res.stdout, "migrated mig from "+m.src.addr+" to "+m.dst.addr)

	m = newFakeMigration(t)
	res = cli(t, "vm", "migrate", "-server", m.src.addr, "-to", m.dst.addr, "-src-addr", "http://10.1.2.3:7", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	m.mu.Lock()
	require.Equal(t, "10.1.2.3:7", m.ensure["migrate"].(map[string]any)["src_addr"], "src_addr is host:port")
	m.mu.Unlock()
	require.NotContains(t, res.stdout, m.secret)
	require.Empty(t, res.stderr, "no progress for programs")
}

// TestCLIMigrateProgressWithoutCarriageReturnsToAPipe: the built binary,
// its stderr a pipe, shows a line per phase and no carriage return; on a
// terminal the one line is redrawn.
func TestCLIMigrateProgressWithoutCarriageReturnsToAPipe(t *testing.T) {
	m := newFakeMigration(t)
	res := vmCLI(t, 20*time.Second, m.src.addr, "migrate", "-to", m.dst.addr)
	requireExit(t, res, 0)
	require.NotContains(t, res.stderr, "\r")
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	var phases []string
	for _, l := range lines {
		phases = append(phases, strings.Fields(l)[0])
	}
	require.Equal(t, []string{"negotiate", "ram_precopy", "device_state", "completed"}, phases, "one line per phase:\n%s", res.stderr)

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	require.False(t, isTerminal(w), "a pipe is no terminal")
	require.False(t, isTerminal(&bytes.Buffer{}))

	var buf bytes.Buffer
	p := &progress{w: &buf, tty: true}
	p.show(migrationProgress{Phase: "ram_precopy"})
	p.show(migrationProgress{Phase: "ram_precopy", BytesSent: 1 << 20})
	p.done()
	require.Equal(t, 2, strings.Count(buf.String(), "\r"), "a terminal's line is redrawn in place")
	require.True(t, strings.HasSuffix(buf.String(), "\n"))
}

// TestCLIMigrateTargetTaken: a target that has a VM already: the CLI says
// so in its words and names the command that frees it.
func TestCLIMigrateTargetTaken(t *testing.T) {
	m := newFakeMigration(t)
	taken := newFake(t, map[string]http.HandlerFunc{
		"PUT /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusConflict, "instance_exists", "a different instance already exists")
		},
	})
	res := cli(t, "vm", "migrate", "-server", m.src.addr, "-to", taken.addr)
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "the target server at "+taken.addr+" already has a VM")
	require.Contains(t, res.stderr, "`waggle vm stop -server "+taken.addr+"`")
	require.NotContains(t, res.stderr, m.secret)
}

// TestExplainNetErrLeavesOtherErrors: errors that are not about reaching
// a server pass through unchanged.
func TestExplainNetErrLeavesOtherErrors(t *testing.T) {
	e := fmt.Errorf("something else")
	require.Equal(t, e, explainNetErr(e))
	require.NoError(t, explainNetErr(nil))
}

// TestCLISendsTheServersToken: the CLI sends the token the server wrote
// for its address (found without a flag), or the one in -token-file; a
// refused token gets the CLI's words, which say where the token comes from.
func TestCLISendsTheServersToken(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("WAGGLE_TOKEN_FILE", "")
	const good = "tok-0123456789abcdefghijklmnopqrstuvwxyz"
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+good {
				writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
				return
			}
			writeJSON(w, 200, api.Instance{Properties: api.InstanceProperties{Id: uuid.New(), Name: "auth"}, State: api.InstanceStateRunning, Gen: 3})
		},
	})
	res := cli(t, "vm", "get", "-server", f.addr)
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "refused the CLI's token")
	require.Contains(t, res.stderr, "-token-file")
	require.Contains(t, res.stderr, "401 unauthorized")

	path, err := httpkit.DefaultTokenPath(f.addr)
	require.NoError(t, err)
	require.NoError(t, httpkit.WriteTokenFile(path, good))
	res = cli(t, "vm", "get", "-server", "http://"+f.addr)
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "auth")
	require.NotContains(t, res.stdout+res.stderr, good, "the token is never shown")

	other := filepath.Join(t.TempDir(), "token")
	require.NoError(t, httpkit.WriteTokenFile(other, "wrong-0123456789abcdefghijklmnopqrstuvwxyz"))
	res = cli(t, "vm", "get", "-server", f.addr, "-token-file", other)
	require.Equal(t, 1, res.code, "-token-file wins over the default file")
	res = cli(t, "vm", "get", "-server", f.addr, "-token-file", filepath.Join(t.TempDir(), "none"))
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "token", "a -token-file that cannot be read is an error")
}

// TestExamplesAreValidAndAgree: each example config and spec is valid, and
// a config and a spec of the same name describe the same VM.
func TestExamplesAreValidAndAgree(t *testing.T) {
	configs, err := filepath.Glob("../../examples/*.toml")
	require.NoError(t, err)
	require.NotEmpty(t, configs)
	for _, path := range configs {
		f, err := vmconfig.Load(path)
		require.NoError(t, err, path)
		s, err := f.Spec()
		require.NoError(t, err, path)
		_, err = specv1.FromSpec(s)
		require.NoError(t, err, path, "every example is a v1 spec, so that it runs on every released server")
		data, err := os.ReadFile(strings.TrimSuffix(path, ".toml") + ".json")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		// The .json is read as a -spec file is, in each version the CLI
		// speaks: a v1 spec is a v2 spec too.
		for _, v := range apiVersions {
			cl, err := v.dial(endpoint{scheme: "http", host: "h:1"}, http.DefaultClient, "")
			require.NoError(t, err)
			fromJSON, err := cl.decodeSpec(data)
			require.NoError(t, err, "%s in %s", path, v.name)
			require.Empty(t, specDiff(s, fromJSON), "%s and its .json differ in %s", path, v.name)
		}
	}
}

// consoleServer is a fake server whose console prints a line and is then
// closed by the server, the instance being in state after by then.
func consoleServer(t *testing.T, after api.InstanceState) *fakeServer {
	var st atomic.Value
	st.Store(api.InstanceStateView{Gen: 3, State: api.InstanceStateRunning})
	return newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instance/state-monitor": func(w http.ResponseWriter, r *http.Request) {
			v := st.Load().(api.InstanceStateView)
			var gen int64
			fmt.Sscan(r.URL.Query().Get("gen"), &gen)
			if r.URL.Query().Get("timeout_ms") != "0" && v.Gen <= gen {
				<-r.Context().Done()
				return
			}
			writeJSON(w, 200, v)
		},
		"GET /v1/instance/serial": func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, nil)
			if !assert.NoError(t, err) {
				return
			}
			_ = ws.Write(r.Context(), websocket.MessageBinary, []byte("tick 1\n"))
			st.Store(api.InstanceStateView{Gen: 5, State: after})
			ws.Close(websocket.StatusPolicyViolation, "reader fell behind")
		},
	})
}

// TestCLISerialSaysWhyTheConsoleEnded: when the server closes the console,
// the CLI says whether the VM ended (and how), or else gives the server's
// reason.
func TestCLISerialSaysWhyTheConsoleEnded(t *testing.T) {
	for _, tc := range []struct {
		after api.InstanceState
		want  string
	}{
		{api.InstanceStateStopped, "the VM has ended (stopped)"},
		{api.InstanceStateDestroyed, "the VM has ended (destroyed)"},
		{api.InstanceStateRunning, "the server closed the console: reader fell behind"},
	} {
		f := consoleServer(t, tc.after)
		res := cli(t, "vm", "serial", "-server", f.addr)
		require.Equal(t, 0, res.code, res.stderr)
		require.Equal(t, "tick 1\n", res.stdout)
		require.Contains(t, res.stderr, tc.want, tc.after)

		f = consoleServer(t, tc.after)
		res = cli(t, "vm", "serial", "-server", f.addr, "-until", "tick 2")
		require.Equal(t, 1, res.code)
		require.Contains(t, res.stderr, `did not see "tick 2": `+tc.want, tc.after)
	}
}
