package main

import (
	"encoding/json"
	"net/http"
	"os"
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

	cpapi "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

var (
	cpInstID = uuid.MustParse("0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10")
	cpSagaID = uuid.MustParse("9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b")
	cpSledID = uuid.MustParse("5b0e9c3a-1d7f-4e2a-8c6b-0f1e2d3c4b5a")
	cpT0     = time.Date(2026, 11, 27, 10, 15, 0, 0, time.UTC)
)

func fastSagaPolls(t *testing.T) {
	old := sagaPollInterval
	sagaPollInterval = time.Millisecond
	t.Cleanup(func() { sagaPollInterval = old })
}

func cpInstance(state cpapi.InstanceState) cpapi.Instance {
	in := cpapi.Instance{Id: cpInstID, Name: "ticker", Description: "ticks", State: state, Generation: 3,
		Spec:      cpapi.SpecEnvelope{SpecVersion: "vmm-server/v1", Spec: map[string]any{"board": map[string]any{"cpus": 1}}},
		Resources: cpapi.Resources{Cpus: 1, MemoryMib: 64}, TimeCreated: cpT0, TimeUpdated: cpT0}
	if state == cpapi.InstanceStateRunning {
		addr := "127.0.0.1:12500"
		in.ActiveVmm = &cpapi.ActiveVmm{Id: uuid.New(), SledId: cpSledID, Address: &addr, State: cpapi.VmmStateRunning}
	}
	return in
}

// sagaSteps is a saga of kind with the steps' states given, in order.
func sagaOf(kind cpapi.SagaKind, state cpapi.SagaState, steps ...cpapi.SagaStepState) cpapi.Saga {
	names := []string{"pick_sled", "reserve", "register_vmm", "run"}
	s := cpapi.Saga{Id: cpSagaID, Kind: kind, InstanceId: cpInstID, State: state, TimeCreated: cpT0, TimeUpdated: cpT0}
	for i, st := range steps {
		s.Steps = append(s.Steps, cpapi.SagaStep{Name: names[i], State: st})
	}
	return s
}

// sagaServer answers GET /v1/sagas/{id} with each of views in turn, then
// the last one again.
func sagaRoute(views ...cpapi.Saga) http.HandlerFunc {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		i := min(int(n.Add(1))-1, len(views)-1)
		writeJSON(w, 200, views[i])
	}
}

// `instance create -start` sends the spec in its envelope and the name,
// then follows the start saga, printing each step once as it completes,
// and ends with done.
func TestInstanceCreateFollowsTheSaga(t *testing.T) {
	fastSagaPolls(t)
	var mu sync.Mutex
	var sent map[string]any
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/instances": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			assert.NoError(t, json.NewDecoder(r.Body).Decode(&sent))
			s := sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateRunning, "pending", "pending", "pending", "pending")
			writeJSON(w, 201, cpapi.InstanceCreated{Instance: cpInstance(cpapi.InstanceStateCreating), Saga: &s})
		},
		"GET /v1/sagas/" + cpSagaID.String(): sagaRoute(
			sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateRunning, "done", "pending", "pending", "pending"),
			sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateRunning, "done", "done", "pending", "pending"),
			sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateRunning, "done", "done", "done", "pending"),
			sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateDone, "done", "done", "done", "done")),
	})
	res := cli(t, "instance", "create", "-server", f.addr, "-spec", "../../examples/ticker.json", "-name", "ticker", "-start")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "created instance ticker")
	for _, step := range []string{"pick_sled", "reserve", "register_vmm", "run"} {
		require.Equal(t, 1, strings.Count(res.stdout, "done    "+step), "step %s printed once as it completed:\n%s", step, res.stdout)
	}
	require.Less(t, strings.Index(res.stdout, "pick_sled"), strings.Index(res.stdout, "register_vmm"), "in order")
	require.Contains(t, res.stdout, "start ticker: done")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, "ticker", sent["name"])
	require.Equal(t, true, sent["start"])
	env, _ := sent["spec"].(map[string]any)
	require.Equal(t, "vmm-server/v1", env["spec_version"])
	want, err := os.ReadFile("../../examples/ticker.json")
	require.NoError(t, err)
	got, err := json.Marshal(env["spec"])
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got), "the spec file goes as it is")
}

// With -config the name and the spec come from the config; -o json prints
// the API's JSON, the saga as it ended.
func TestInstanceCreateFromConfigJSON(t *testing.T) {
	fastSagaPolls(t)
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/instances": func(w http.ResponseWriter, r *http.Request) {
			var b cpapi.InstanceCreate
			assert.NoError(t, json.NewDecoder(r.Body).Decode(&b))
			assert.NotEmpty(t, b.Name)
			assert.Equal(t, "vmm-server/v1", b.Spec.SpecVersion)
			assert.Contains(t, b.Spec.Spec, "board")
			in := cpInstance(cpapi.InstanceStateStopped)
			in.Name = b.Name
			writeJSON(w, 201, cpapi.InstanceCreated{Instance: in})
		},
	})
	res := cli(t, "instance", "create", "-server", f.addr, "-config", "../../examples/ticker.toml", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var out cpapi.InstanceCreated
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &out), res.stdout)
	require.Nil(t, out.Saga)
	require.Equal(t, int32(1), f.requests.Load(), "no saga to follow")
}

// A saga that unwinds ends the command with status 1 and its reason; a
// stuck one says an operator must look.
func TestInstanceActionUnwound(t *testing.T) {
	fastSagaPolls(t)
	reason := "register the VMM: the sled refused it"
	unwound := sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateUnwound, "undone", "failed")
	unwound.Error = &reason
	code := cpapi.SagaErrorCodeInvalidSpec
	unwound.ErrorCode = &code
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/instances/ticker/start": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 202, sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateRunning, "done", "pending"))
		},
		"GET /v1/sagas/" + cpSagaID.String(): sagaRoute(
			sagaOf(cpapi.SagaKindInstanceStart, cpapi.SagaStateUnwinding, "done", "failed"), unwound),
	})
	res := cli(t, "instance", "start", "-server", f.addr, "ticker")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "failed and was undone")
	require.Contains(t, res.stderr, reason+" (error_code invalid_spec)")
	require.Contains(t, res.stdout, "failed  reserve")
	require.Contains(t, res.stdout, "undone  pick_sled")
	require.Contains(t, res.stdout, "start ticker: unwound")

	stuck := sagaOf(cpapi.SagaKindInstanceStop, cpapi.SagaStateStuck, "failed")
	g := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/instances/ticker/stop": func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, stuck) },
	})
	res = cli(t, "instance", "stop", "-server", g.addr, "ticker")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "stuck")
	require.Contains(t, res.stderr, "operator")
}

// -no-wait returns once the saga began, flags may follow the name, and
// migrate sends -to as target_sled (none without it).
func TestInstanceActionsNoWaitAndMigrate(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	s := sagaOf(cpapi.SagaKindInstanceMigrate, cpapi.SagaStateRunning, "pending")
	routes := map[string]http.HandlerFunc{
		"POST /v1/instances/ticker/migrate": func(w http.ResponseWriter, r *http.Request) {
			var b map[string]any
			assert.NoError(t, json.NewDecoder(r.Body).Decode(&b))
			mu.Lock()
			bodies = append(bodies, b)
			mu.Unlock()
			writeJSON(w, 202, s)
		},
	}
	for _, verb := range []string{"start", "stop", "reboot"} {
		routes["POST /v1/instances/ticker/"+verb] = func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, s) }
	}
	routes["DELETE /v1/instances/ticker"] = func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 202, s) }
	f := newFake(t, routes)
	for _, verb := range []string{"start", "stop", "reboot", "delete", "migrate"} {
		res := cli(t, "instance", verb, "-server", f.addr, "ticker", "-no-wait")
		require.Equal(t, 0, res.code, "%s: %s", verb, res.stderr)
		require.Contains(t, res.stdout, cpSagaID.String())
	}
	require.Equal(t, int32(5), f.requests.Load(), "no saga was followed")

	res := cli(t, "instance", "migrate", "-server", f.addr, "-no-wait", "-o", "json", "-to", cpSledID.String(), "ticker")
	require.Equal(t, 0, res.code, res.stderr)
	var out cpapi.Saga
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &out))
	require.Equal(t, cpSagaID, out.Id)
	mu.Lock()
	require.Equal(t, map[string]any{}, bodies[0], "no -to: any sled")
	require.Equal(t, cpSledID.String(), bodies[1]["target_sled"])
	mu.Unlock()

	res = cli(t, "instance", "migrate", "-server", f.addr, "-to", "sled-9", "ticker")
	require.Equal(t, 2, res.code)
	require.Contains(t, res.stderr, "-to")
	res = cli(t, "instance", "start", "-server", f.addr)
	require.Equal(t, 2, res.code, "no NAME")
	require.Contains(t, res.stderr, "NAME")
	res = cli(t, "instance", "start", "-server", f.addr, "a", "b")
	require.Equal(t, 2, res.code, "two NAMEs")
	res = cli(t, "instance", "create", "-server", f.addr, "-spec", "../../examples/ticker.json")
	require.Equal(t, 2, res.code, "a spec names no instance")
	require.Contains(t, res.stderr, "-name")
	require.Equal(t, int32(6), f.requests.Load(), "no refused command line reached the server")
}

// Each error code the CLI knows says what to do, and exits 1.
func TestInstanceErrorsSayWhatToDo(t *testing.T) {
	cases := []struct {
		code   string
		status int
		says   []string
	}{
		{"instance_busy", 409, []string{"another operation on ticker is under way", "wait for it (waggle instance get ticker) and try again"}},
		{"no_such_instance", 404, []string{"no instance is named ticker", "waggle instance list"}},
		{"invalid_state", 409, []string{"the server's words", "waggle instance get ticker"}},
		{"insufficient_capacity", 409, []string{"waggle sled list"}},
		{"unavailable", 503, []string{"try again"}},
		{"sled_unavailable", 503, []string{"does not answer"}},
		{"unauthorized", 401, []string{"refused the CLI's token", "-token-file", "-api-token-file"}},
	}
	for _, c := range cases {
		f := newFake(t, map[string]http.HandlerFunc{
			"POST /v1/instances/ticker/start": func(w http.ResponseWriter, r *http.Request) {
				writeError(w, c.status, c.code, "the server's words")
			},
		})
		res := cli(t, "instance", "start", "-server", f.addr, "ticker")
		require.Equal(t, 1, res.code, c.code)
		for _, s := range c.says {
			require.Contains(t, res.stderr, s, c.code)
		}
		require.Contains(t, res.stderr, c.code, "the code is shown for whoever reads the log")
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/instances": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, 409, "name_in_use", "another instance is named ticker")
		},
	})
	res := cli(t, "instance", "create", "-server", f.addr, "-spec", "../../examples/ticker.json", "-name", "ticker")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "an instance named ticker exists already")
	require.Contains(t, res.stderr, "waggle instance delete ticker")

	res = cli(t, "instance", "list", "-server", refusedAddr(t))
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "no control plane at")
	require.Contains(t, res.stderr, "waggle control-plane")
}

// list and get print tables, or the API's JSON; the token goes along.
func TestInstanceListAndGet(t *testing.T) {
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, httpkit.WriteTokenFile(tokenFile, token))
	authed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+token {
				writeError(w, 401, "unauthorized", "no")
				return
			}
			h(w, r)
		}
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instances": authed(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, cpapi.InstanceList{Instances: []cpapi.Instance{cpInstance(cpapi.InstanceStateRunning)}})
		}),
		"GET /v1/instances/ticker": authed(func(w http.ResponseWriter, r *http.Request) {
			in := cpInstance(cpapi.InstanceStateRunning)
			in.Migration = &cpapi.InstanceMigration{Id: uuid.New(), SourceVmmId: uuid.New(), TargetVmmId: uuid.New(),
				SourceState: cpapi.MigrationStateInProgress, TargetState: cpapi.MigrationStateInProgress, TimeCreated: cpT0}
			writeJSON(w, 200, in)
		}),
	})
	res := cli(t, "instance", "list", "-server", f.addr, "-token-file", tokenFile)
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "NAME")
	require.Contains(t, res.stdout, "ticker")
	require.Contains(t, res.stdout, cpSledID.String())
	res = cli(t, "instance", "list", "-server", f.addr, "-token-file", tokenFile, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var list cpapi.InstanceList
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &list))
	require.Len(t, list.Instances, 1)

	res = cli(t, "instance", "get", "-server", f.addr, "-token-file", tokenFile, "ticker")
	require.Equal(t, 0, res.code, res.stderr)
	for _, s := range []string{"running", cpInstID.String(), "on sled " + cpSledID.String(), "migration", "in_progress"} {
		require.Contains(t, res.stdout, s)
	}
	res = cli(t, "instance", "get", "-server", f.addr, "ticker")
	require.Equal(t, 1, res.code, "without the token")
	require.Contains(t, res.stderr, "refused the CLI's token")
}

// sled list prints each sled's reservations against its capacity, or the
// API's JSON.
func TestSledList(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/sleds": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, cpapi.SledList{Sleds: []cpapi.Sled{{Id: cpSledID, Address: "10.0.0.7:12300", ApiVersions: []string{"v1"},
				State: cpapi.SledStateLost, Capacity: cpapi.Resources{Cpus: 16, MemoryMib: 65536},
				Reserved: cpapi.Resources{Cpus: 2, MemoryMib: 512}, Vmms: 2, TimeCreated: cpT0, LastContact: cpT0}}})
		},
	})
	res := cli(t, "sled", "list", "-server", f.addr)
	require.Equal(t, 0, res.code, res.stderr)
	for _, s := range []string{cpSledID.String(), "10.0.0.7:12300", "lost", "2/16", "512/65536"} {
		require.Contains(t, res.stdout, s)
	}
	res = cli(t, "sled", "list", "-server", f.addr, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var out cpapi.SledList
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &out))
	require.Equal(t, cpapi.SledStateLost, out.Sleds[0].State)
	res = cli(t, "sled", "nothing")
	require.Equal(t, 2, res.code)
}

// `instance serial` prints what the console sends until -until is seen.
func TestInstanceSerial(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instances/ticker/serial": func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, nil)
			if !assert.NoError(t, err) {
				return
			}
			defer ws.CloseNow()
			_ = ws.Write(r.Context(), websocket.MessageBinary, []byte("tick 1\ntick 2\n"))
			_, _, _ = ws.Read(r.Context()) // until the client leaves
		},
		"GET /v1/instances/gone/serial": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, 409, "invalid_state", "instance gone is stopped")
		},
	})
	res := cli(t, "instance", "serial", "-server", f.addr, "-until", "tick 2", "ticker")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "tick 1\ntick 2")
	res = cli(t, "instance", "serial", "-server", f.addr, "gone")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "instance gone is stopped")
	require.Contains(t, res.stderr, "waggle instance get gone")
}

// Help goes to stdout with status 0 for every command.
func TestInstanceHelp(t *testing.T) {
	lines := [][]string{{"instance", "-h"}, {"instance", "help"}, {"sled", "-h"}, {"sled", "list", "-h"}}
	for _, c := range instanceCommands {
		lines = append(lines, []string{"instance", c.name, "-h"})
	}
	for _, args := range lines {
		res := cli(t, args...)
		require.Equal(t, 0, res.code, "%v: %s", args, res.stderr)
		require.Empty(t, res.stderr, "%v", args)
		require.Contains(t, res.stdout, "usage", "%v", args)
	}
	res := cli(t, "instance")
	require.Equal(t, 2, res.code)
	res = cli(t, "instance", "frobnicate")
	require.Equal(t, 2, res.code)
	res = cli(t, "-h")
	require.Contains(t, res.stdout, "instance")
}

// A control plane's address without a port means port 12220.
func TestParseControlPlane(t *testing.T) {
	for in, want := range map[string]string{
		"cp.example":            "cp.example:12220",
		"http://t":              "t:12220",
		"10.0.0.1:9":            "10.0.0.1:9",
		"[::1]":                 "[::1]:12220",
		"https://cp.example/v1": "cp.example:12220",
	} {
		ep, err := parseControlPlane(in)
		require.NoError(t, err, in)
		require.Equal(t, want, ep.String(), in)
	}
	_, err := parseControlPlane("")
	require.Error(t, err)
}
