package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// start runs the real handler on a real loopback HTTP server and returns a
// generated v1 client for it.
func start(t testing.TB, core Core) (*httptest.Server, *api.ClientWithResponses) {
	t.Helper()
	h, err := NewHandler(core, httpkit.HandlerOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Auth: httpkit.BearerToken(testToken)})
	require.NoError(t, err)
	srv := httptest.NewServer(withTestToken(h)) // requests without credentials get the test's token
	t.Cleanup(srv.Close)
	c, err := api.NewClientWithResponses(srv.URL + "/v1")
	require.NoError(t, err)
	return srv, c
}

const validSpecJSON = `{"board":{"cpus":2,"memory_mb":256,"chipset":"i440fx"},
 "components":{"com1":{"type":"serial_port","num":"com1"},
  "disk0":{"type":"virtio_disk","backend":"disk0-be","slot":0},
  "disk0-be":{"type":"file_storage_backend","path":"tmp/d.img"}}}`

func ensureBody(spec string) string {
	return `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"vm1"},"spec":` + spec + `}`
}

func TestEnsureCreatesAndIsIdempotent(t *testing.T) {
	_, c := start(t, newFakeCore())
	ctx := context.Background()

	r, err := c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(ensureBody(validSpecJSON)))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	require.Equal(t, api.InstanceStateCreating, r.JSON201.State)
	require.Equal(t, "vm1", r.JSON201.Properties.Name)

	r, err = c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(ensureBody(validSpecJSON)))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.StatusCode(), "an identical ensure is harmless")

	other := strings.Replace(validSpecJSON, `"cpus":2`, `"cpus":4`, 1)
	r, err = c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(ensureBody(other)))
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, r.StatusCode())
	require.Equal(t, CodeInstanceExists, r.JSON409.ErrorCode)

	sr, err := c.InstanceSpecGetWithResponse(ctx)
	require.NoError(t, err)
	require.Equal(t, api.InstanceSpecStatusPresent, sr.JSON200.SpecStatus)
	// The server answers the canonical form: defaults written out.
	be, err := sr.JSON200.Spec.Components["disk0-be"].AsFileStorageBackendComponent()
	require.NoError(t, err)
	require.Equal(t, api.BlockSizeN512, *be.BlockSize)
	require.False(t, *be.Readonly)
	require.Equal(t, "ticker", sr.JSON200.Spec.Boot.Image)
}

func TestEndpointsBeforeEnsure(t *testing.T) {
	_, c := start(t, newFakeCore())
	ctx := context.Background()
	g, err := c.InstanceGetWithResponse(ctx)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, g.StatusCode())
	require.Equal(t, CodeNoInstance, g.JSON404.ErrorCode)
	require.NotEmpty(t, g.JSON404.RequestId)

	s, err := c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, s.StatusCode())
	require.Equal(t, CodeNoInstance, s.JSON404.ErrorCode)
}

// TestBadInput: each bad request answers its status with a stable code and a
// message that names the field.
func TestBadInput(t *testing.T) {
	board := `"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"}`
	withComponents := func(c string) string { return ensureBody(`{` + board + `,"components":{` + c + `}}`) }
	cases := []struct {
		name, body, contentType string
		status                  int
		code, field             string
	}{
		{"malformed json", `{"properties":`, "", 400, CodeInvalidRequest, "body"},
		{"trailing value", ensureBody(validSpecJSON) + ` {}`, "", 400, CodeInvalidRequest, "body is not one JSON value"},
		{"trailing bracket", ensureBody(validSpecJSON) + `]`, "", 400, CodeInvalidRequest, "body is not one JSON value"},
		{"trailing garbage", ensureBody(validSpecJSON) + ` garbage`, "", 400, CodeInvalidRequest, "body is not one JSON value"},
		{"CPUS above maximum", ensureBody(`{"board":{"CPUS":999,"cpus":1,"memory_mb":64,"chipset":"i440fx"},"components":{}}`), "", 400, CodeInvalidRequest, "CPUS"},
		{"cpus above maximum", ensureBody(`{"board":{"cpus":999,"memory_mb":64,"chipset":"i440fx"},"components":{}}`), "", 400, CodeInvalidRequest, "body.spec.board.cpus"},
		{"memory negative", ensureBody(`{"board":{"cpus":1,"memory_mb":-5,"chipset":"i440fx"},"components":{}}`), "", 400, CodeInvalidRequest, "body.spec.board.memory_mb"},
		{"missing board", ensureBody(`{"components":{}}`), "", 400, CodeInvalidRequest, "board"},
		{"missing properties", `{"spec":{` + board + `,"components":{}}}`, "", 400, CodeInvalidRequest, "properties"},
		{"unknown field", `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"vm1"},"color":"red","spec":{` + board + `,"components":{}}}`, "", 400, CodeInvalidRequest, "color"},
		{"bad uuid", `{"properties":{"id":"nope","name":"vm1"},"spec":{` + board + `,"components":{}}}`, "", 400, CodeInvalidRequest, "body.properties.id"},
		{"unknown component type", withComponents(`"f":{"type":"floppy"}`), "", 400, CodeInvalidRequest, "body.spec.components.f"},
		{"serial port missing num", withComponents(`"c":{"type":"serial_port"}`), "", 400, CodeInvalidRequest, "num"},
		{"bad com port", withComponents(`"c":{"type":"serial_port","num":"com7"}`), "", 400, CodeInvalidRequest, "body.spec.components.c"},
		{"slot out of range", withComponents(`"d":{"type":"virtio_disk","backend":"b","slot":9},"b":{"type":"file_storage_backend","path":"b"}`), "", 400, CodeInvalidRequest, "slot"},
		{"dangling backend", withComponents(`"d":{"type":"virtio_disk","backend":"nope","slot":0}`), "", 400, CodeInvalidSpec, "components.d.backend"},
		{"unused backend", withComponents(`"b":{"type":"file_storage_backend","path":"b"}`), "", 400, CodeInvalidSpec, "components.b"},
		{"two devices on one backend", withComponents(`"d1":{"type":"virtio_disk","backend":"b","slot":0},"d2":{"type":"virtio_disk","backend":"b","slot":1},"b":{"type":"file_storage_backend","path":"b"}`), "", 400, CodeInvalidSpec, "components.b"},
		{"two serial ports on com1", withComponents(`"a":{"type":"serial_port","num":"com1"},"b":{"type":"serial_port","num":"com1"}`), "", 400, CodeInvalidSpec, "components.b.num"},
		{"two devices in one slot", withComponents(`"d1":{"type":"virtio_disk","backend":"b1","slot":0},"d2":{"type":"virtio_disk","backend":"b2","slot":0},"b1":{"type":"file_storage_backend","path":"b1"},"b2":{"type":"file_storage_backend","path":"b2"}`), "", 400, CodeInvalidSpec, "components.d2.slot"},
		{"neither spec nor migrate", `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"vm1"}}`, "", 400, CodeInvalidRequest, `body.spec: property "spec" is missing`},
		{"both spec and migrate", `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"vm1"},"spec":{` + board + `,"components":{}},"migrate":{"migration_id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a02","src_addr":"127.0.0.1:1"}}`, "", 400, CodeInvalidRequest, `property "migrate" is unsupported`},
		{"bad src_addr", `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"vm1"},"migrate":{"migration_id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a02","src_addr":"no port"}}`, "", 400, CodeInvalidRequest, "src_addr"},
		{"wrong content type", ensureBody(validSpecJSON), "text/plain", 415, CodeUnsupportedMedia, "Content-Type"},
		{"body too large", ensureBody(`{`+board+`,"components":{}}`) + strings.Repeat(" ", MaxBodyBytes), "", 413, CodeBodyTooLarge, "1 MiB"},
	}
	srv, _ := start(t, newFakeCore())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := c.contentType
			if ct == "" {
				ct = "application/json"
			}
			req, err := http.NewRequest(http.MethodPut, srv.URL+"/v1/instance", strings.NewReader(c.body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", ct)
			e := doError(t, req, c.status)
			require.Equal(t, c.code, e.ErrorCode, e.Message)
			require.Contains(t, e.Message, c.field)
		})
	}
}

// doError sends req, expects status and an Error body, and returns it.
func doError(t *testing.T, req *http.Request, status int) api.Error {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, status, resp.StatusCode, string(body))
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var e api.Error
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&e), "every failure is the Error schema: %s", body)
	require.NotEmpty(t, e.RequestId)
	require.Equal(t, resp.Header.Get("X-Request-Id"), e.RequestId)
	return e
}

func TestUnknownPathMethodAndParams(t *testing.T) {
	srv, _ := start(t, newFakeCore())
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/v1/nothing", 404, CodeNotFound},
		{http.MethodGet, "/v9/instance", 404, CodeNotFound},
		{http.MethodDelete, "/v1/instance", 405, CodeMethodNotAllowed},
		{http.MethodGet, "/v1/instance/state-monitor", 400, CodeInvalidRequest},        // gen missing
		{http.MethodGet, "/v1/instance/state-monitor?gen=-1", 400, CodeInvalidRequest}, // below minimum
		{http.MethodGet, "/v1/instance/state-monitor?gen=x", 400, CodeInvalidRequest},  // not a number
		{http.MethodGet, "/v1/instance/serial/history?max_bytes=0", 400, CodeInvalidRequest},
		{http.MethodGet, "/v1/instance/migrate/not-a-uuid/start", 400, CodeInvalidRequest},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			req, err := http.NewRequest(c.method, srv.URL+c.path, nil)
			require.NoError(t, err)
			e := doError(t, req, c.status)
			require.Equal(t, c.code, e.ErrorCode, e.Message)
		})
	}
}

func TestRequestIDIsEchoed(t *testing.T) {
	srv, _ := start(t, newFakeCore())
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/instance", nil)
	req.Header.Set("X-Request-Id", "my-trace-1")
	e := doError(t, req, 404)
	require.Equal(t, "my-trace-1", e.RequestId)
}

func TestPanicIsAnInternalError(t *testing.T) {
	srv, _ := start(t, newFakeCore())
	body := strings.Replace(ensureBody(validSpecJSON), `"vm1"`, `"panic"`, 1)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/instance", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	e := doError(t, req, 500)
	require.Equal(t, CodeInternal, e.ErrorCode)
}

func TestStateChangesAndMonitor(t *testing.T) {
	_, c := start(t, newFakeCore())
	ctx := context.Background()
	_, err := c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(ensureBody(validSpecJSON)))
	require.NoError(t, err)
	g, err := c.InstanceGetWithResponse(ctx)
	require.NoError(t, err)
	gen := g.JSON200.Gen

	// The monitor waits until the generation passes gen.
	done := make(chan *api.InstanceStateMonitorResponse, 1)
	go func() {
		m, err := c.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: gen})
		if err == nil {
			done <- m
		}
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("the monitor answered before the generation changed")
	case <-time.After(100 * time.Millisecond):
	}
	s, err := c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode())
	m := <-done
	require.NotNil(t, m)
	require.Equal(t, gen+1, m.JSON200.Gen)
	require.Equal(t, api.InstanceStateRunning, m.JSON200.State)

	// Run again is already done: nothing changes.
	s, err = c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode())

	// A monitor with a timeout answers the current state when nothing changes.
	to := int32(50)
	m, err = c.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: gen + 1, TimeoutMs: &to})
	require.NoError(t, err)
	require.Equal(t, gen+1, m.JSON200.Gen)

	// A stopped instance cannot be rebooted: 409 naming the state.
	s, err = c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedStop})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode())
	s, err = c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedReboot})
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, s.StatusCode())
	require.Equal(t, CodeInvalidTransition, s.JSON409.ErrorCode)
	require.Contains(t, s.JSON409.Message, "stopped")
}

func TestSerialHistoryAndWebSocket(t *testing.T) {
	core := newFakeCore()
	srv, c := start(t, core)
	ctx := context.Background()
	_, err := c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(ensureBody(validSpecJSON)))
	require.NoError(t, err)
	core.mu.Lock()
	core.serial = []byte("tick 1\ntick 2\n")
	core.mu.Unlock()

	from, max := int64(5), int32(3)
	h, err := c.InstanceSerialHistoryGetWithResponse(ctx, &api.InstanceSerialHistoryGetParams{FromStart: &from, MaxBytes: &max})
	require.NoError(t, err)
	require.Equal(t, "1\nt", string(h.JSON200.Data))
	require.Equal(t, int64(5), h.JSON200.Start)
	require.Equal(t, int64(8), h.JSON200.End)

	// A plain GET on the WebSocket endpoint is refused, and so is a
	// handshake that lacks what RFC 6455 asks for, in the Error schema.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/instance/serial", nil)
	require.Equal(t, CodeNotUpgraded, doError(t, req, 400).ErrorCode)
	for _, c := range []struct{ version, key, field string }{
		{"", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version"},
		{"8", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version"},
		{"13", "", "Sec-WebSocket-Key"},
		{"13", "c2hvcnQ=", "Sec-WebSocket-Key"},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/instance/serial", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", c.version)
		req.Header.Set("Sec-WebSocket-Key", c.key)
		e := doError(t, req, 400)
		require.Equal(t, CodeNotUpgraded, e.ErrorCode)
		require.Contains(t, e.Message, c.field)
	}

	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/instance/serial", nil)
	require.NoError(t, err)
	defer ws.CloseNow()
	typ, data, err := ws.Read(ctx)
	require.NoError(t, err)
	require.Equal(t, websocket.MessageBinary, typ)
	require.Equal(t, "tick 1\ntick 2\n", string(data))
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, []byte("hello")))
	require.Eventually(t, func() bool {
		core.mu.Lock()
		defer core.mu.Unlock()
		return string(core.input) == "hello"
	}, 2*time.Second, 10*time.Millisecond)
}

func TestMigrateStartUpgrade(t *testing.T) {
	core := newFakeCore()
	core.expect = uuid.New()
	srv, _ := start(t, core)

	// A stranger guessing an id gets nothing.
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/instance/migrate/%s/start", srv.URL, uuid.New()), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", MigrateUpgradeProtocol)
	require.Equal(t, CodeNoSuchMigration, doError(t, req, 404).ErrorCode)

	// The expected id without an upgrade is refused.
	url := fmt.Sprintf("%s/v1/instance/migrate/%s/start", srv.URL, core.expect)
	req, _ = http.NewRequest(http.MethodGet, url, nil)
	require.Equal(t, CodeNotUpgraded, doError(t, req, 400).ErrorCode)

	// With the upgrade, the connection becomes the migration stream.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/instance/migrate/%s/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", core.expect, MigrateUpgradeProtocol)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	_, err = conn.Write([]byte("ping"))
	require.NoError(t, err)
	echo := make([]byte, 4)
	_, err = io.ReadFull(br, echo)
	require.NoError(t, err)
	require.Equal(t, "ping", string(echo))
}

// TestV1MigrationPhasesComplete: every migration phase has its v1 name,
// one of the values v1's closed enum allows.
func TestV1MigrationPhasesComplete(t *testing.T) {
	require.Len(t, phaseToV1, len(migrationPhases))
	for _, ph := range migrationPhases {
		v, ok := phaseToV1[ph]
		require.True(t, ok, "phase %s has no v1 name", ph)
		require.True(t, v.Valid(), "phase %s: %q is not in v1's enum", ph, v)
		require.Equal(t, string(ph), string(v), "v1 names each phase as the core does")
	}
}

func TestV1StatesComplete(t *testing.T) {
	for s := range stateNames {
		v, ok := stateToV1[s]
		require.True(t, ok, "state %s has no v1 name", s)
		require.Equal(t, s.String(), string(v))
	}
}
