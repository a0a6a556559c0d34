package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// instanceAnswer is GET /instance as version (v1 or v2) answers it, for a
// VM named name.
func instanceAnswer(version, name string) map[string]any {
	props := map[string]any{"id": uuid.New(), "name": name}
	if version == "v2" {
		props["description"] = ""
	}
	return map[string]any{"gen": 3, "state": "running", "properties": props}
}

// TestCLIAsksTheServerForItsNewestVersion: the CLI speaks v2 to a server
// that serves v2, v1 to one that serves only v1 (as v0.1.0 does), and the
// version -api names whatever the server serves; -api that names no
// version is a usage error.
func TestCLIAsksTheServerForItsNewestVersion(t *testing.T) {
	var v1Asked, v2Asked atomic.Int32
	both := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			v1Asked.Add(1)
			writeJSON(w, 200, instanceAnswer("v1", "via-v1"))
		},
		"GET /v2/instance": func(w http.ResponseWriter, r *http.Request) {
			v2Asked.Add(1)
			writeJSON(w, 200, instanceAnswer("v2", "via-v2"))
		},
	})
	res := cli(t, "vm", "get", "-server", both.addr)
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "via-v2")
	require.Zero(t, v1Asked.Load(), "a server that serves v2 is spoken to in v2")

	res = cli(t, "vm", "get", "-server", both.addr, "-api", "v1")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "via-v1")
	require.Equal(t, int32(2), v2Asked.Load(), "-api v1 asks nothing in v2 (the probe and the get of the first run only)")

	res = cli(t, "vm", "get", "-server", "http://"+both.addr+"/v1")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "via-v1", "a -server URL whose path names v1 is spoken to in v1")
	res = cli(t, "vm", "get", "-server", "http://"+both.addr+"/v1", "-api", "v2")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "via-v2", "-api wins over the URL's path")
	require.Equal(t, int32(3), v2Asked.Load(), "the URL's v1 asked nothing in v2; -api v2 asked no probe")

	res = cli(t, "vm", "get", "-server", both.addr, "-api", "v3")
	require.Equal(t, 2, res.code)
	require.Contains(t, res.stderr, "-api: want one of v2, v1")

	old := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instance": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, instanceAnswer("v1", "released"))
		},
	})
	res = cli(t, "vm", "get", "-server", old.addr)
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "released")
}

// TestCLIProbeWithAWrongTokenSaysSo: a server that refuses the token as
// the CLI asks which version it serves gets the CLI's words for a refused
// token, not a version it does not serve.
func TestCLIProbeWithAWrongTokenSaysSo(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v2/instance": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusUnauthorized, "unauthorized", "bad token")
		},
	})
	res := cli(t, "vm", "get", "-server", f.addr)
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "refused the CLI's token")
	require.Equal(t, int32(1), f.requests.Load(), "nothing asked after the refusal")
}

// TestCLIShowsTheFailureKindOfV2: a failed VM's failure is shown as
// "kind: message" where the server tells the kind (v2), and -o json prints
// the server's answer as it came.
func TestCLIShowsTheFailureKindOfV2(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v2/instance": func(w http.ResponseWriter, r *http.Request) {
			a := instanceAnswer("v2", "p")
			a["state"] = "failed"
			a["failure"] = map[string]string{"kind": "guest_panicked", "message": "the guest reported a panic"}
			writeJSON(w, 200, a)
		},
	})
	res := cli(t, "vm", "get", "-server", f.addr)
	require.Equal(t, 0, res.code, res.stderr)
	require.Regexp(t, `failure\s+guest_panicked: the guest reported a panic`, res.stdout)

	res = cli(t, "vm", "get", "-server", f.addr, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var got struct {
		Failure struct{ Kind, Message string } `json:"failure"`
	}
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &got), res.stdout)
	require.Equal(t, "guest_panicked", got.Failure.Kind)
}

// TestCLIMigratesFromAReleasedSourceToTodaysTarget: a source that serves
// only v1 is armed through v1; a target that serves v2 gets v2's ensure,
// init.method migration_target, with the secret, and the -replace
// component written from the source's v1 spec.
func TestCLIMigratesFromAReleasedSourceToTodaysTarget(t *testing.T) {
	m := newFakeMigration(t)
	m.src.mux.HandleFunc("GET /v1/instance/spec", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"gen": 3, "spec_status": "known",
			"properties": map[string]any{"id": uuid.New(), "name": "mig", "description": ""},
			"spec": json.RawMessage(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"disk"},
				"components":{"disk0":{"type":"virtio_disk","backend":"disk0-be","slot":0},
				"disk0-be":{"type":"file_storage_backend","path":"a.img","readonly":false,"block_size":512}}}`)})
	})
	var mu sync.Mutex
	var ensure map[string]any
	var polls atomic.Int32
	dst := newFake(t, map[string]http.HandlerFunc{
		"GET /v2/instance": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "no_instance", "no instance")
		},
		"PUT /v2/instance": func(w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			assert.NoError(t, json.NewDecoder(r.Body).Decode(&body))
			mu.Lock()
			ensure = body
			mu.Unlock()
			a := instanceAnswer("v2", "mig")
			a["state"] = "migrating"
			writeJSON(w, 201, a)
		},
		"GET /v2/instance/migration-status": func(w http.ResponseWriter, r *http.Request) {
			phase := "ram_precopy"
			if polls.Add(1) > 2 {
				phase = "completed"
			}
			writeJSON(w, 200, map[string]any{"migration_in": map[string]any{"migration_id": m.id(), "phase": phase,
				"bytes_sent": 1 << 20, "pages_left": 0, "rounds": 1}})
		},
	})
	res := cli(t, "vm", "migrate", "-server", m.src.addr, "-to", dst.addr, "-replace", "disk0-be=b.img")
	require.Equal(t, 0, res.code, res.stderr)
	mu.Lock()
	defer mu.Unlock()
	init, _ := ensure["init"].(map[string]any)
	require.NotNil(t, init, "a v2 ensure has init: %v", ensure)
	require.Equal(t, "migration_target", init["method"])
	require.Equal(t, m.id().String(), init["migration_id"])
	require.Equal(t, m.secret, init["secret"])
	be := init["replace_components"].(map[string]any)["disk0-be"].(map[string]any)
	require.Equal(t, "b.img", be["path"])
	require.Equal(t, "file_storage_backend", be["type"])
	require.EqualValues(t, 512, be["block_size"], "the rest of the backend stays as the source has it")
	require.NotContains(t, res.stdout+res.stderr, m.secret)
}

// TestCLICreateSpeaksTheServersVersion: a -spec file is read in the
// version spoken: a v2-only spec (a pvpanic device) creates the VM on a v2
// server, and is refused, naming the component, before any create reaches
// a server that serves only v1.
func TestCLICreateSpeaksTheServersVersion(t *testing.T) {
	dir := t.TempDir()
	specFile := filepath.Join(dir, "panic.json")
	require.NoError(t, os.WriteFile(specFile, []byte(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},
		"boot":{"image":"panic"},"components":{"com1":{"type":"serial_port","num":"com1"},"panic0":{"type":"pvpanic"}}}`), 0o600))

	var body map[string]any
	v2 := newFake(t, map[string]http.HandlerFunc{
		"GET /v2/instance": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "no_instance", "no instance")
		},
		"PUT /v2/instance": func(w http.ResponseWriter, r *http.Request) {
			assert.NoError(t, json.NewDecoder(r.Body).Decode(&body))
			writeJSON(w, 201, instanceAnswer("v2", "p"))
		},
	})
	res := cli(t, "vm", "create", "-server", v2.addr, "-spec", specFile, "-name", "p")
	require.Equal(t, 0, res.code, res.stderr)
	init := body["init"].(map[string]any)
	require.Equal(t, "spec", init["method"])
	comps := init["spec"].(map[string]any)["components"].(map[string]any)
	require.Equal(t, "pvpanic", comps["panic0"].(map[string]any)["type"])

	v1 := newFake(t, map[string]http.HandlerFunc{})
	res = cli(t, "vm", "create", "-server", v1.addr, "-spec", specFile)
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "panic0")
	require.Contains(t, res.stderr, "API v1")
	require.Equal(t, int32(1), v1.requests.Load(), "only the question which version it serves reached it")
}
