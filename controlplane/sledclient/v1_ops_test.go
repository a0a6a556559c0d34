package sledclient

import (
	"context"
	"time"

	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

const testSecret = "secret-3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func errBody(code, msg string) string {
	b, _ := json.Marshal(map[string]string{"error_code": code, "message": msg, "request_id": "r"})
	return string(b)
}

// Register sends the envelope or the migration target as the API says,
// and maps each refusal to its domain error; the secret appears in no
// error, even when the agent echoes it.
func TestRegister(t *testing.T) {
	var got map[string]any
	a := newAgent(t, func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, http.MethodPut, r.Method)
		require.Equal(t, "Bearer "+testToken, r.Header.Get("Authorization"))
		_ = json.NewDecoder(r.Body).Decode(&got)
		jsonAnswer(http.StatusCreated, `{}`)(w, r)
	})
	c := dialSled(t, uuid.New(), a.addr())
	id, inst := uuid.New(), uuid.New()
	require.NoError(t, c.Register(ctxT(t), id, controlplane.VmmRegistration{InstanceID: inst, Name: "vm", Description: "d",
		SpecVersion: "vmm-server/v1", Spec: []byte(`{"board":{"cpus":1}}`)}))
	require.Equal(t, "/v1/vmms/"+id.String(), a.requests()[0].URL.Path)
	require.Equal(t, map[string]any{"instance": map[string]any{"id": inst.String(), "name": "vm", "description": "d"},
		"spec": map[string]any{"spec_version": "vmm-server/v1", "spec": map[string]any{"board": map[string]any{"cpus": float64(1)}}}}, got)

	src := uuid.New()
	require.NoError(t, c.Register(ctxT(t), id, controlplane.VmmRegistration{InstanceID: inst, Name: "vm",
		Migrate: &controlplane.MigrationTarget{SourceAddr: "10.0.0.7:12500", MigrationID: src, Secret: testSecret,
			Resources: model.Resources{CPUs: 2, MemoryMiB: 256}}}))
	require.Equal(t, map[string]any{"src_addr": "10.0.0.7:12500", "migration_id": src.String(), "secret": testSecret,
		"resources": map[string]any{"cpus": float64(2), "memory_mib": float64(256)}}, got["migrate"])

	require.Error(t, c.Register(ctxT(t), id, controlplane.VmmRegistration{InstanceID: inst, Name: "vm"}), "neither spec nor migration")

	for _, tc := range []struct {
		status int
		code   string
		want   error
	}{
		{400, "invalid_spec", controlplane.ErrInvalidSpec},
		{400, "unsupported_spec_version", controlplane.ErrInvalidSpec},
		{409, "vmm_refused", controlplane.ErrInvalidSpec},
		{409, "insufficient_capacity", controlplane.ErrNoCapacity},
		{409, "vmm_exists", nil},
	} {
		a := newAgent(t, jsonAnswer(tc.status, errBody(tc.code, "refused; you said "+testSecret)))
		c := dialSled(t, uuid.New(), a.addr())
		err := c.Register(ctxT(t), id, controlplane.VmmRegistration{InstanceID: inst, Name: "vm",
			Migrate: &controlplane.MigrationTarget{SourceAddr: "h:1", MigrationID: src, Secret: testSecret, Resources: model.Resources{CPUs: 1, MemoryMiB: 16}}})
		require.Error(t, err, tc.code)
		if tc.want != nil {
			require.ErrorIs(t, err, tc.want, tc.code)
		}
		require.Contains(t, err.Error(), tc.code)
		require.NotContains(t, err.Error(), testSecret, "the secret is in the error")
		noToken(t, err)
	}
}

// Request and ArmMigrationSource put the state change; an unknown VMM is
// ErrVmmGone; the secret is in no error.
func TestRequestAndArm(t *testing.T) {
	var bodies []map[string]any
	a := newAgent(t, func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		bodies = append(bodies, b)
		jsonAnswer(http.StatusOK, `{"state":{"state":"running","gen":1,"time_updated":"2026-11-27T10:00:00Z"}}`)(w, r)
	})
	c := dialSled(t, uuid.New(), a.addr())
	id, mig := uuid.New(), uuid.New()
	for _, r := range []controlplane.VmmRequest{controlplane.RequestRun, controlplane.RequestStop, controlplane.RequestReboot} {
		require.NoError(t, c.Request(ctxT(t), id, r))
	}
	require.Error(t, c.Request(ctxT(t), id, "pause"))
	require.NoError(t, c.ArmMigrationSource(ctxT(t), id, mig, testSecret))
	require.Equal(t, []map[string]any{{"requested": "run"}, {"requested": "stop"}, {"requested": "reboot"},
		{"requested": "migrate_source", "migration_id": mig.String(), "secret": testSecret}}, bodies)
	require.Equal(t, "/v1/vmms/"+id.String()+"/state", a.requests()[0].URL.Path)

	gone := newAgent(t, jsonAnswer(404, errBody("no_such_vmm", "no VMM")))
	c = dialSled(t, uuid.New(), gone.addr())
	require.ErrorIs(t, c.Request(ctxT(t), id, controlplane.RequestStop), controlplane.ErrVmmGone)
	require.ErrorIs(t, c.ArmMigrationSource(ctxT(t), id, mig, testSecret), controlplane.ErrVmmGone)

	echo := newAgent(t, jsonAnswer(409, errBody("vmm_refused", "bad secret "+testSecret)))
	c = dialSled(t, uuid.New(), echo.addr())
	err := c.ArmMigrationSource(ctxT(t), id, mig, testSecret)
	require.ErrorContains(t, err, "vmm_refused")
	require.NotContains(t, err.Error(), testSecret)
	noToken(t, err)
}

// Serial dials the agent's WebSocket with the token and passes bytes both
// ways; a refusal before the upgrade is the agent's error.
func TestSerial(t *testing.T) {
	id := uuid.New()
	a := newAgent(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken || r.URL.Path != "/v1/vmms/"+id.String()+"/serial" {
			jsonAnswer(401, errBody("unauthorized", "no"))(w, r)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		_ = ws.Write(r.Context(), websocket.MessageBinary, []byte("tick 1\n"))
		_, in, err := ws.Read(r.Context())
		if err == nil {
			_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte("echo "), in...))
		}
		_ = ws.Close(websocket.StatusNormalClosure, "done")
	})
	c := dialSled(t, uuid.New(), a.addr())
	conn, err := c.Serial(ctxT(t), id)
	require.NoError(t, err)
	defer conn.Close()
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "tick 1\n", string(buf[:n]))
	_, err = conn.Write([]byte("hi"))
	require.NoError(t, err)
	rest, err := io.ReadAll(conn)
	require.NoError(t, err)
	require.Equal(t, "echo hi", string(rest))

	refused := newAgent(t, jsonAnswer(409, errBody("vmm_refused", "no instance yet")))
	c = dialSled(t, uuid.New(), refused.addr())
	_, err = c.Serial(ctxT(t), id)
	require.ErrorContains(t, err, "vmm_refused")
	noToken(t, err)
	require.False(t, strings.Contains(err.Error(), testToken))
}

// A registration waits for the VMM's server to start, which may take longer
// than the client's timeout for reads: the caller's deadline bounds it. A
// read from the same slow agent still ends at the client's timeout.
func TestRegisterWaitsAsLongAsItsCaller(t *testing.T) {
	const timeout = 200 * time.Millisecond
	slow := newAgent(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * timeout) // the VMM server starting
		jsonAnswer(http.StatusCreated, `{}`)(w, r)
	})
	c := dialSled(t, uuid.New(), slow.addr(), WithTimeout(timeout))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Register(ctx, uuid.New(), controlplane.VmmRegistration{InstanceID: uuid.New(), Name: "vm",
		SpecVersion: "vmm-server/v1", Spec: []byte(`{"board":{"cpus":1}}`)}))
	require.ErrorIs(t, c.Ping(ctx), controlplane.ErrSledUnreachable)

	short, cancelShort := context.WithTimeout(context.Background(), timeout)
	defer cancelShort()
	err := c.Register(short, uuid.New(), controlplane.VmmRegistration{InstanceID: uuid.New(), Name: "vm",
		SpecVersion: "vmm-server/v1", Spec: []byte(`{"board":{"cpus":1}}`)})
	require.ErrorIs(t, err, controlplane.ErrSledUnreachable, "the caller's deadline passed")
}
