package sledagent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
)

const tickerEnsure = `{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"ticker"},
 "spec":{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},
 "components":{"com1":{"type":"serial_port","num":"com1"}}}}}`

// call sends one request to the agent's API and answers status and body.
func call(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	if out == nil {
		out = map[string]any{"raw": string(data)}
	}
	return resp.StatusCode, out
}

// Bad input through the API: each a 4xx with its stable code and a
// message naming the field, never a 5xx; and nothing left behind.
func TestHTTPBadInput(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, nil, sledagent.Resources{CPUs: 4, MemoryMiB: 1024})
	defer a.Close()
	url, token := serve(t, a)
	v1 := url + "/v1"
	unknown := uuid.New().String()
	secret := "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	cases := []struct {
		name, method, path, token, body string
		status                          int
		code, mention                   string
	}{
		{"no token", "GET", "/vmms", "", "", 401, "unauthorized", "bearer"},
		{"wrong token", "GET", "/inventory", strings.Repeat("x", 43), "", 401, "unauthorized", "not valid"},
		{"unknown VMM state", "GET", "/vmms/" + unknown + "/state", token, "", 404, "no_such_vmm", unknown},
		{"unknown VMM", "GET", "/vmms/" + unknown, token, "", 404, "no_such_vmm", unknown},
		{"unknown VMM change", "PUT", "/vmms/" + unknown + "/state", token, `{"requested":"run"}`, 404, "no_such_vmm", unknown},
		{"unknown VMM delete", "DELETE", "/vmms/" + unknown, token, "", 404, "no_such_vmm", unknown},
		{"unknown VMM serial", "GET", "/vmms/" + unknown + "/serial/history", token, "", 404, "no_such_vmm", unknown},
		{"not a uuid", "GET", "/vmms/nope/state", token, "", 400, "invalid_request", "vmm_id"},
		{"spec and migrate", "PUT", "/vmms/" + unknown, token, `{"instance":{"id":"` + unknown + `","name":"x"},"spec":{"spec_version":"vmm-server/v1","spec":{}},"migrate":{"src_addr":"a:1","migration_id":"` + unknown + `","secret":"` + secret + `","resources":{"cpus":1,"memory_mib":64}}}`, 400, "invalid_request", ""},
		{"unknown spec version", "PUT", "/vmms/" + unknown, token, strings.Replace(tickerEnsure, "vmm-server/v1", "vmm-server/v9", 1), 400, "unsupported_spec_version", "vmm-server/v9"},
		{"invalid spec", "PUT", "/vmms/" + unknown, token, strings.Replace(tickerEnsure, `"cpus":1`, `"cpus":0`, 1), 400, "invalid_spec", "cpus"},
		{"too big", "PUT", "/vmms/" + unknown, token, strings.Replace(tickerEnsure, `"cpus":1`, `"cpus":8`, 1), 409, "insufficient_capacity", "4 CPUs and 1024 MiB free"},
		{"bad replacement", "PUT", "/vmms/" + unknown, token, `{"instance":{"id":"` + unknown + `","name":"x"},"migrate":{"src_addr":"127.0.0.1:1","migration_id":"` + unknown + `","secret":"` + secret + `","resources":{"cpus":1,"memory_mib":64},"replace_components":{"be":{"type":"serial_port","num":"com1"}}}}`, 400, "invalid_request", "replace_components"},
		{"bad secret", "PUT", "/vmms/" + unknown, token, `{"instance":{"id":"` + unknown + `","name":"x"},"migrate":{"src_addr":"127.0.0.1:1","migration_id":"` + unknown + `","secret":"short-secret-value","resources":{"cpus":1,"memory_mib":64}}}`, 400, "invalid_request", "secret"},
		{"bad requested", "PUT", "/vmms/" + unknown + "/state", token, `{"requested":"explode"}`, 400, "invalid_request", "requested"},
		{"delete with bad force", "DELETE", "/vmms/" + unknown + "?force=maybe", token, "", 400, "invalid_request", "force"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := call(t, c.method, v1+c.path, c.token, c.body)
			require.Equal(t, c.status, status, "%v", body)
			require.Equal(t, c.code, body["error_code"], "%v", body)
			msg, _ := body["message"].(string)
			require.Contains(t, msg, c.mention)
			require.NotContains(t, msg, "short-secret-value", "secrets are never echoed")
			require.NotEmpty(t, body["request_id"])
		})
	}
	entries, _ := readDir(root + "/vmms")
	require.Empty(t, entries, "no VMM directory was made")
	require.Zero(t, a.Inventory().CPUs.Reserved)

	// A registered (fake-instance) VMM: a second registration with another
	// spec, unregistering it while it runs, arming with fields out of place.
	id := uuid.New().String()
	status, body := call(t, "PUT", v1+"/vmms/"+id, token, tickerEnsure)
	require.Equal(t, 201, status, "%v", body)
	pid := pidOf(t, root, uuid.MustParse(id))
	killVMMs(t, pid)
	status, _ = call(t, "PUT", v1+"/vmms/"+id, token, tickerEnsure)
	require.Equal(t, 200, status, "the same registration again")
	status, body = call(t, "PUT", v1+"/vmms/"+id, token, strings.Replace(tickerEnsure, `"memory_mb":64`, `"memory_mb":128`, 1))
	require.Equal(t, 409, status)
	require.Equal(t, "vmm_exists", body["error_code"])
	status, body = call(t, "PUT", v1+"/vmms/"+id+"/state", token, `{"requested":"run","secret":"`+secret+`"}`)
	require.Equal(t, 400, status)
	require.Equal(t, "invalid_request", body["error_code"])
	require.Contains(t, body["message"], "body.secret")
	require.NotContains(t, body["message"], secret)
	status, body = call(t, "PUT", v1+"/vmms/"+id+"/state", token, `{"requested":"migrate_source"}`)
	require.Equal(t, 400, status)
	require.Contains(t, body["message"], "migration_id")
	status, body = call(t, "PUT", v1+"/vmms/"+id+"/state", token, `{"requested":"run"}`)
	require.Equal(t, 200, status, "%v", body)
	assert.Eventually(t, func() bool { return stateOf(a, uuid.MustParse(id)).State == sledagent.StateRunning }, 10*time.Second, 5*time.Millisecond)
	status, body = call(t, "DELETE", v1+"/vmms/"+id, token, "")
	require.Equal(t, 409, status)
	require.Equal(t, "vmm_not_terminal", body["error_code"])
	require.True(t, alive(pid))
	status, body = call(t, "GET", v1+"/inventory", token, "")
	require.Equal(t, 200, status)
	require.EqualValues(t, 1, body["cpus"].(map[string]any)["reserved"])
	status, _ = call(t, "DELETE", v1+"/vmms/"+id+"?force=true", token, "")
	require.Equal(t, 204, status)
	assert.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 5*time.Millisecond, "force kills the process")
	status, body = call(t, "GET", v1+"/inventory", token, "")
	require.Equal(t, 200, status)
	require.EqualValues(t, 0, body["cpus"].(map[string]any)["reserved"])
	status, _ = call(t, "GET", v1+"/vmms/"+id+"/state", token, "")
	require.Equal(t, 404, status)

	// Metrics, with the token, outside the versioned API.
	status, body = call(t, "GET", url+"/metrics", "", "")
	require.Equal(t, 401, status)
	require.Equal(t, "unauthorized", body["error_code"])
	status, body = call(t, "GET", url+"/metrics", token, "")
	require.Equal(t, 200, status)
	text := body["raw"].(string)
	for _, m := range []string{"waggle_sled_vmms{state=\"running\"}", "waggle_sled_doorbell_rings_total", "waggle_sled_doorbell_retries_total",
		"waggle_sled_doorbell_latency_seconds", "waggle_sled_vmm_process_exits_total"} {
		require.Contains(t, text, m)
	}
}

// A spec the VMM server refuses, through the API: 409 vmm_refused naming
// the server's code (vm_error: without KVM every build fails; with KVM the
// disk file is missing), and no process, directory or reservation left.
func TestHTTPRefusedSpec(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, vmmclient.New(nil), nil, sledagent.Resources{CPUs: 4, MemoryMiB: 1024})
	defer a.Close()
	url, token := serve(t, a)
	body := `{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"disk"},
 "spec":{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},
 "components":{"d":{"type":"virtio_disk","backend":"b","slot":0},"b":{"type":"file_storage_backend","path":"none.img"}}}}}`
	before := procsUnder(t, root)
	status, resp := call(t, "PUT", url+"/v1/vmms/"+uuid.New().String(), token, body)
	require.Equal(t, 409, status, "%v", resp)
	require.Equal(t, "vmm_refused", resp["error_code"], "the agent's code, not the VMM server's")
	require.Contains(t, resp["message"], "vm_error", "the VMM server's code is named in the message")
	require.Equal(t, before, procsUnder(t, root))
	entries, _ := readDir(root + "/vmms")
	require.Empty(t, entries)
	status, resp = call(t, "GET", url+"/v1/vmms", token, "")
	require.Equal(t, 200, status)
	require.Empty(t, resp["vmms"])
}

// The doorbell over HTTP to a control plane stand-in that is down, then
// up: every VMM's change arrives, coalesced (far fewer rings than
// changes), and the state pulled back is the newest.
func TestDoorbellControlPlaneDownThenUp(t *testing.T) {
	cp := newControlPlane(t) // down: nothing listens
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, cp.bell(), bigSled)
	defer a.Close()
	url, token := serve(t, a)
	cp.agent = agentClient(t, url, token)
	ctx := context.Background()
	var ids []uuid.UUID
	for range 3 {
		id := uuid.New()
		v, _, err := a.Ensure(ctx, id, ensureReq(t, id.String()))
		require.NoError(t, err)
		killVMMs(t, pidOf(t, root, id))
		ids = append(ids, id)
		inst := f.At(v.Addr)
		for i := range 30 { // thirty changes while the control plane is down
			st := []sledagent.VmmState{sledagent.StateRunning, sledagent.StateRebooting}[i%2]
			inst.Set(st, "")
			want := inst.Gen()
			assert.Eventually(t, func() bool { return serverGenSeen(a, id, st) }, 10*time.Second, time.Millisecond, "gen %d", want)
		}
	}
	for _, id := range ids {
		require.Zero(t, cp.ringsOf(id))
		require.Greater(t, stateOf(a, id).Gen, uint64(30), "each observed change bumped the generation")
	}
	cp.up()
	for _, id := range ids {
		want := int64(stateOf(a, id).Gen)
		assert.Eventually(t, func() bool { return cp.pulledGen(id) == want }, 10*time.Second, 5*time.Millisecond, "nothing lost: %s", id)
		require.LessOrEqual(t, cp.ringsOf(id), 3, "coalesced: thirty changes, a few rings")
	}
}

// serverGenSeen says whether the agent shows state st for the VMM.
func serverGenSeen(a *sledagent.Agent, id uuid.UUID, st sledagent.VmmState) bool {
	return stateOf(a, id).State == st
}

// Arming a migration source through the API: the secret the VMM server
// made is answered once, the outbound migration is recorded pending (its
// own generation 1) and the VMM's generation grows; a secret given is not
// echoed.
func TestHTTPArmMigrationSource(t *testing.T) {
	f, bell := newFakes(), newBell()
	root := t.TempDir()
	var logs syncBuffer
	lo, hi := portRange(10)
	a, err := sledagent.New(sledagent.Options{Root: root, Capacity: bigSled, PortMin: lo, PortMax: hi,
		VMMBinary: waggleBin, VMMArgs: []string{"server"}, Dial: f.Dial, Bell: bell,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	defer a.Close()
	url, token := serve(t, a)
	id := uuid.New()
	status, body := call(t, "PUT", url+"/v1/vmms/"+id.String(), token, tickerEnsure)
	require.Equal(t, 201, status, "%v", body)
	killVMMs(t, pidOf(t, root, id))
	before := stateOf(a, id).Gen
	mid := uuid.New().String()
	status, body = call(t, "PUT", url+"/v1/vmms/"+id.String()+"/state", token, `{"requested":"migrate_source","migration_id":"`+mid+`","ttl_seconds":60}`)
	require.Equal(t, 200, status, "%v", body)
	armed := body["migration"].(map[string]any)
	require.Equal(t, mid, armed["migration_id"])
	require.Equal(t, "made-by-the-server-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", armed["secret"])
	out := body["state"].(map[string]any)["migration_out"].(map[string]any)
	require.Equal(t, "pending", out["state"])
	require.EqualValues(t, 1, out["gen"])
	require.Greater(t, stateOf(a, id).Gen, before)
	assert.Eventually(t, func() bool { return bell.count(id) >= 2 }, 10*time.Second, 5*time.Millisecond, "the arm rang")
	given := "given-secret-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
	status, body = call(t, "PUT", url+"/v1/vmms/"+id.String()+"/state", token, `{"requested":"migrate_source","migration_id":"`+mid+`","secret":"`+given+`"}`)
	require.Equal(t, 200, status, "%v", body)
	require.NotContains(t, fmt.Sprint(body), given, "a given secret is not answered back")
	require.EqualValues(t, 1, body["state"].(map[string]any)["migration_out"].(map[string]any)["gen"], "re-arming the same migration changes nothing the agent reports")
	require.Equal(t, "pending", body["state"].(map[string]any)["migration_out"].(map[string]any)["state"])
	reg, err := os.ReadFile(root + "/registry.json")
	require.NoError(t, err)
	require.NotContains(t, string(reg), given, "secrets are not written to the registry")
	require.NotContains(t, logs.String(), given, "secrets are not logged")
	require.NotContains(t, logs.String(), "made-by-the-server", "secrets are not logged")
}

// With every port of its range taken, the agent refuses a VMM with
// no_free_port, and leaves nothing behind.
func TestNoFreePort(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	lo, _ := portRange(1)
	a, err := sledagent.New(sledagent.Options{Root: root, Capacity: bigSled, PortMin: lo, PortMax: lo,
		VMMBinary: waggleBin, VMMArgs: []string{"server"}, Dial: f.Dial})
	require.NoError(t, err)
	defer a.Close()
	id := uuid.New()
	_, _, err = a.Ensure(context.Background(), id, ensureReq(t, "a"))
	require.NoError(t, err)
	killVMMs(t, pidOf(t, root, id))
	_, _, err = a.Ensure(context.Background(), uuid.New(), ensureReq(t, "b"))
	require.ErrorIs(t, err, sledagent.ErrNoFreePort)
	require.EqualValues(t, 1, a.Inventory().CPUs.Reserved)
	entries, _ := readDir(root + "/vmms")
	require.Len(t, entries, 1)
	require.NoError(t, a.Unregister(context.Background(), id, true))
	_, _, err = a.Ensure(context.Background(), uuid.New(), ensureReq(t, "c"))
	require.NoError(t, err, "the port is free again")
	for _, v := range a.List() {
		killVMMs(t, pidOf(t, root, v.ID))
	}
}
