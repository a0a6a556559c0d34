package sledagent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
)

// contractCheck sends requests to an agent and checks each answer against
// the contract: its status is one the operation lists, and an error's code
// is one that status's response names.
type contractCheck struct {
	t     *testing.T
	doc   *openapi3.T
	url   string
	token string
	seen  map[string]map[int]bool
}

func newContractCheck(t *testing.T, url, token string) *contractCheck {
	doc, err := api.GetSwagger()
	require.NoError(t, err)
	return &contractCheck{t: t, doc: doc, url: url, token: token, seen: map[string]map[int]bool{}}
}

// do sends one request of operation op; header names a Content-Type
// ("" for application/json when there is a body, "-" for none) and
// whether to authenticate. It answers the status and the error code.
func (c *contractCheck) do(op, method, path, contentType, body string, auth bool) (int, string) {
	t := c.t
	t.Helper()
	req, err := http.NewRequest(method, c.url+"/v1"+path, strings.NewReader(body))
	require.NoError(t, err)
	switch {
	case contentType == "" && body != "":
		req.Header.Set("Content-Type", "application/json")
	case contentType != "" && contentType != "-":
		req.Header.Set("Content-Type", contentType)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	var e struct {
		Code string `json:"error_code"`
	}
	_ = json.Unmarshal(data, &e)
	var operation *openapi3.Operation
	for _, item := range c.doc.Paths.Map() {
		for _, o := range item.Operations() {
			// The embedded contract spells the ids as Go names.
			if strings.EqualFold(o.OperationID, strings.ReplaceAll(op, "_", "")) {
				operation = o
			}
		}
	}
	require.NotNil(t, operation, "no operation %s", op)
	r := operation.Responses.Value(strconv.Itoa(resp.StatusCode))
	require.NotNil(t, r, "%s %s answered %d (%s), which operation %s does not list: %s", method, path, resp.StatusCode, e.Code, op, data)
	if resp.StatusCode >= 400 {
		require.NotEmpty(t, e.Code, "%s %s: %d without an Error body: %s", method, path, resp.StatusCode, data)
		require.Contains(t, *r.Value.Description, "`"+e.Code+"`", "%s %s answered %d %s, which that response of %s does not name", method, path, resp.StatusCode, e.Code, op)
	}
	if c.seen[op] == nil {
		c.seen[op] = map[int]bool{}
	}
	c.seen[op][resp.StatusCode] = true
	return resp.StatusCode, e.Code
}

// Every operation, driven into each answer this machine can provoke
// (without KVM): every status is in the operation's list, every code in
// its response's description. A 400 of a malformed vmm_id, a VMM server's
// refusal (vmm_refused) and a VMM whose process is gone (vmm_unavailable)
// included.
func TestEveryAnswerIsInTheContract(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, nil, sledagent.Resources{CPUs: 2, MemoryMiB: 1024})
	defer a.Close()
	url, token := serve(t, a)
	c := newContractCheck(t, url, token)
	id, other := uuid.New().String(), uuid.New().String()
	const bad = "/vmms/not-a-uuid"
	big := `{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"` + strings.Repeat("x", 2<<20) + `"}}`
	expect := func(op, method, path, ct, body string, auth bool, status int, code string) {
		t.Helper()
		gotStatus, gotCode := c.do(op, method, path, ct, body, auth)
		require.Equal(t, status, gotStatus, "%s %s", method, path)
		require.Equal(t, code, gotCode, "%s %s", method, path)
	}

	expect("inventory_get", "GET", "/inventory", "-", "", true, 200, "")
	expect("inventory_get", "GET", "/inventory", "-", "", false, 401, "unauthorized")
	// Whatever a stray query or body makes of these, it is in the list.
	c.do("inventory_get", "GET", "/inventory?bogus=1", "-", "", true)
	c.do("vmm_list", "GET", "/vmms?bogus=1", "-", "", true)
	c.do("vmm_get", "GET", "/vmms/"+other+"?bogus=1", "-", "", true)
	c.do("vmm_list", "GET", "/vmms", "", `{"x":1}`, true)
	expect("vmm_list", "GET", "/vmms", "-", "", true, 200, "")
	expect("vmm_list", "GET", "/vmms", "-", "", false, 401, "unauthorized")

	expect("vmm_register", "PUT", "/vmms/"+id, "", tickerEnsure, true, 201, "")
	t.Cleanup(func() {
		for _, v := range a.List() {
			_ = syscall.Kill(-pidOf(t, root, v.ID), syscall.SIGKILL)
		}
	})
	expect("vmm_register", "PUT", "/vmms/"+id, "", tickerEnsure, true, 200, "")
	expect("vmm_register", "PUT", "/vmms/"+id, "", strings.Replace(tickerEnsure, `"ticker"}`, `"other"}`, 1), true, 409, "vmm_exists")
	expect("vmm_register", "PUT", "/vmms/"+other, "", strings.Replace(tickerEnsure, `"cpus":1`, `"cpus":2`, 1), true, 409, "insufficient_capacity")
	expect("vmm_register", "PUT", bad, "", tickerEnsure, true, 400, "invalid_request")
	expect("vmm_register", "PUT", "/vmms/"+other, "", `{"instance":{}}`, true, 400, "invalid_request")
	expect("vmm_register", "PUT", "/vmms/"+other, "", strings.Replace(tickerEnsure, "vmm-server/v1", "vmm-server/v9", 1), true, 400, "unsupported_spec_version")
	expect("vmm_register", "PUT", "/vmms/"+other, "", strings.Replace(tickerEnsure, `"cpus":1,`, `"cpus":1,"bogus":1,`, 1), true, 400, "invalid_spec")
	expect("vmm_register", "PUT", "/vmms/"+other, "text/plain", tickerEnsure, true, 415, "unsupported_media_type")
	expect("vmm_register", "PUT", "/vmms/"+other, "", big, true, 413, "body_too_large")
	expect("vmm_register", "PUT", "/vmms/"+other, "", tickerEnsure, false, 401, "unauthorized")

	expect("vmm_get", "GET", "/vmms/"+id, "-", "", true, 200, "")
	expect("vmm_get", "GET", "/vmms/"+other, "-", "", true, 404, "no_such_vmm")
	expect("vmm_get", "GET", bad, "-", "", true, 400, "invalid_request")
	expect("vmm_get", "GET", "/vmms/"+id, "-", "", false, 401, "unauthorized")
	expect("vmm_state_get", "GET", "/vmms/"+id+"/state", "-", "", true, 200, "")
	expect("vmm_state_get", "GET", "/vmms/"+other+"/state", "-", "", true, 404, "no_such_vmm")
	expect("vmm_state_get", "GET", bad+"/state", "-", "", true, 400, "invalid_request")
	expect("vmm_state_get", "GET", "/vmms/"+id+"/state", "-", "", false, 401, "unauthorized")

	expect("vmm_state_put", "PUT", "/vmms/"+id+"/state", "", `{"requested":"run"}`, true, 200, "")
	expect("vmm_state_put", "PUT", "/vmms/"+id+"/state", "", `{"requested":"run","ttl_seconds":5}`, true, 400, "invalid_request")
	expect("vmm_state_put", "PUT", "/vmms/"+id+"/state", "", `{"requested":"fly"}`, true, 400, "invalid_request")
	expect("vmm_state_put", "PUT", bad+"/state", "", `{"requested":"run"}`, true, 400, "invalid_request")
	expect("vmm_state_put", "PUT", "/vmms/"+other+"/state", "", `{"requested":"run"}`, true, 404, "no_such_vmm")
	expect("vmm_state_put", "PUT", "/vmms/"+id+"/state", "text/plain", `{"requested":"run"}`, true, 415, "unsupported_media_type")
	expect("vmm_state_put", "PUT", "/vmms/"+id+"/state", "", `{"requested":"run"}`, false, 401, "unauthorized")

	// The fake instance is the test's, but the serial history and the
	// console reach the real VMM server, which has no instance: its
	// refusal is the agent's vmm_refused, not a 404 like an unknown VMM.
	expect("vmm_serial_history_get", "GET", "/vmms/"+id+"/serial/history", "-", "", true, 409, "vmm_refused")
	expect("vmm_serial_history_get", "GET", "/vmms/"+id+"/serial/history?from_start=0&most_recent=5", "-", "", true, 400, "invalid_request")
	expect("vmm_serial_history_get", "GET", "/vmms/"+id+"/serial/history?max_bytes=0", "-", "", true, 400, "invalid_request")
	expect("vmm_serial_history_get", "GET", bad+"/serial/history", "-", "", true, 400, "invalid_request")
	expect("vmm_serial_history_get", "GET", "/vmms/"+other+"/serial/history", "-", "", true, 404, "no_such_vmm")
	expect("vmm_serial_history_get", "GET", "/vmms/"+id+"/serial/history", "-", "", false, 401, "unauthorized")
	expect("vmm_serial", "GET", "/vmms/"+id+"/serial", "-", "", true, 400, "not_upgraded")
	expect("vmm_serial", "GET", bad+"/serial", "-", "", true, 400, "invalid_request")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cs := range []struct {
		id     string
		token  string
		status int
	}{{id, token, 409}, {other, token, 404}, {id, "", 401}} {
		_, resp, err := dialConsole(ctx, url, cs.token, uuid.MustParse(cs.id))
		require.Error(t, err)
		require.Equal(t, cs.status, resp.StatusCode)
		require.NotNil(t, c.doc.Paths.Find("/vmms/{vmm_id}/serial").Get.Responses.Value(strconv.Itoa(resp.StatusCode)))
	}

	expect("vmm_unregister", "DELETE", "/vmms/"+id, "-", "", true, 409, "vmm_not_terminal")
	expect("vmm_unregister", "DELETE", "/vmms/"+id+"?force=maybe", "-", "", true, 400, "invalid_request")
	expect("vmm_unregister", "DELETE", bad, "-", "", true, 400, "invalid_request")
	expect("vmm_unregister", "DELETE", "/vmms/"+other, "-", "", true, 404, "no_such_vmm")
	expect("vmm_unregister", "DELETE", "/vmms/"+id, "-", "", false, 401, "unauthorized")

	// Its process gone, the VMM's server is unavailable: 503.
	pid := pidOf(t, root, uuid.MustParse(id))
	require.NoError(t, syscall.Kill(-pid, syscall.SIGKILL))
	assert.Eventually(t, func() bool { return stateOf(a, uuid.MustParse(id)).State == sledagent.StateFailed }, 10*time.Second, 5*time.Millisecond)
	expect("vmm_state_put", "PUT", "/vmms/"+id+"/state", "", `{"requested":"stop"}`, true, 503, "vmm_unavailable")
	expect("vmm_serial_history_get", "GET", "/vmms/"+id+"/serial/history", "-", "", true, 503, "vmm_unavailable")
	expect("vmm_unregister", "DELETE", "/vmms/"+id, "-", "", true, 204, "")

	for _, op := range []string{"inventory_get", "vmm_list", "vmm_register", "vmm_get", "vmm_state_get", "vmm_state_put",
		"vmm_serial_history_get", "vmm_unregister"} {
		require.NotEmpty(t, c.seen[op], "operation %s was not exercised", op)
	}
}

// A spec the VMM server refuses answers 409 vmm_refused through the
// contract's lists too (the ensure's own path to the VMM server).
func TestRefusedEnsureIsInTheContract(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, vmmclient.New(nil), nil, sledagent.Resources{CPUs: 4, MemoryMiB: 1024})
	defer a.Close()
	url, token := serve(t, a)
	c := newContractCheck(t, url, token)
	body := `{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"disk"},
 "spec":{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},
 "components":{"d":{"type":"virtio_disk","backend":"b","slot":0},"b":{"type":"file_storage_backend","path":"none.img"}}}}}`
	status, code := c.do("vmm_register", "PUT", "/vmms/"+uuid.New().String(), "", body, true)
	require.Equal(t, 409, status)
	require.Equal(t, "vmm_refused", code, fmt.Sprint(status))
}
