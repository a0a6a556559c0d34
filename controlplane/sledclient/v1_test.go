package sledclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)

// vmmJSON is a VMM as a v1 agent answers it, with state st (a JSON
// object).
func vmmJSON(id uuid.UUID, st string) string {
	return fmt.Sprintf(`{"vmm_id":%q,"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"ticker","description":""},
	"addr":"10.0.0.7:41000","resources":{"cpus":1,"memory_mib":64},"state":%s}`, id, st)
}

const running = `{"state":"running","gen":7,"time_updated":"2026-11-27T12:00:00.123456789Z"}`

// A good answer converts field for field, and the request is the one the
// contract names, with the token.
func TestVmmStateGood(t *testing.T) {
	id, mig := uuid.New(), uuid.New()
	st := fmt.Sprintf(`{"state":"migrating","gen":7,"time_updated":"2026-11-27T12:00:00.123456789Z",
	  "migration_out":{"migration_id":%q,"state":"in_progress","gen":3,"time_updated":"2026-11-27T12:00:00.123456789Z"}}`, mig)
	agent := newAgent(t, jsonAnswer(200, vmmJSON(id, st)))
	var asked []string
	c, err := New(func(addr string) (string, error) { asked = append(asked, addr); return testToken, nil })(
		model.Sled{ID: uuid.New(), Address: agent.addr(), APIVersions: []string{"v1"}})
	require.NoError(t, err)

	addr, got, err := c.VmmState(ctxT(t), id)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.7:41000", addr)
	require.Equal(t, model.SledVmmState{
		Vmm: model.VmmRuntime{State: model.VmmMigrating, Gen: 7, TimeUpdated: t0},
		MigrationOut: &model.MigrationObservation{ID: mig,
			MigrationRuntime: model.MigrationRuntime{State: model.MigrationInProgress, Gen: 3, TimeUpdated: t0}},
	}, got)
	reqs := agent.requests()
	require.Len(t, reqs, 1)
	require.Equal(t, http.MethodGet, reqs[0].Method)
	require.Equal(t, "/v1/vmms/"+id.String(), reqs[0].URL.Path)
	require.Equal(t, "Bearer "+testToken, reqs[0].Header.Get("Authorization"))
	require.Equal(t, []string{agent.addr()}, asked, "the token is asked for the sled's address, at each call")
}

// A failed VMM carries its reason; a kind this control plane does not
// know becomes unknown, with the agent's kind kept in the message.
func TestVmmStateFailed(t *testing.T) {
	id := uuid.New()
	for _, c := range []struct {
		reason string
		want   model.FailureReason
	}{
		{`{"kind":"vmm_process_exited","message":"signal: killed"}`, model.FailureReason{Kind: model.FailureProcessExited, Message: "signal: killed"}},
		{`{"kind":"exceeds_reservation","message":""}`, model.FailureReason{Kind: model.FailureExceedsReservation}},
		{`{"kind":"vmm_failed","message":"triple fault"}`, model.FailureReason{Kind: model.FailureVMMFailed, Message: "triple fault"}},
		{`{"kind":"cosmic_ray","message":"bit 7 flipped"}`, model.FailureReason{Kind: model.FailureUnknown, Message: `kind "cosmic_ray": bit 7 flipped`}},
		// Kinds only the control plane gives are not an agent's to give.
		{`{"kind":"sled_lost","message":"x"}`, model.FailureReason{Kind: model.FailureUnknown, Message: `kind "sled_lost": x`}},
		// v1's own unknown (a later agent's kind, named first in the message).
		{`{"kind":"unknown","message":"guest_panic: x"}`, model.FailureReason{Kind: model.FailureUnknown, Message: "guest_panic: x"}},
		// PostgreSQL's TEXT holds no NUL.
		{`{"kind":"vmm_failed","message":"a\u0000b"}`, model.FailureReason{Kind: model.FailureVMMFailed, Message: "a\uFFFDb"}},
	} {
		st := `{"state":"failed","gen":9,"time_updated":"2026-11-27T12:00:00.123456789Z","failure_reason":` + c.reason + `}`
		agent := newAgent(t, jsonAnswer(200, vmmJSON(id, st)))
		_, got, err := dialSled(t, uuid.New(), agent.addr()).VmmState(ctxT(t), id)
		require.NoError(t, err, c.reason)
		reason, failed := got.Vmm.State.FailureReason()
		require.True(t, failed)
		require.Equal(t, c.want, reason)
		require.True(t, got.Vmm.State.IsTerminal())
	}
}

// An agent that answers garbage gives a clear error, never ErrVmmGone
// (which fails the VMM) nor ErrSledUnreachable (which counts towards
// losing the sled), and never a panic.
func TestVmmStateGarbage(t *testing.T) {
	id := uuid.New()
	with := func(st string) http.HandlerFunc { return jsonAnswer(200, vmmJSON(id, st)) }
	cases := []struct {
		name   string
		answer http.HandlerFunc
		says   string
	}{
		{"not JSON", jsonAnswer(200, `{"vmm_id":`), "not one JSON value"},
		{"two values", jsonAnswer(200, vmmJSON(id, running)+` {}`), "not one JSON value"},
		{"no body", jsonAnswer(200, ``), "without a body"},
		{"null", jsonAnswer(200, `null`), "vmm_id"},
		{"array", jsonAnswer(200, `[]`), "does not decode"},
		{"not declared JSON", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(vmmJSON(id, running)))
		}, "not JSON"},
		{"too large", jsonAnswer(200, `{"x":"`+strings.Repeat("a", 2<<20)+`"}`), "larger than"},
		{"another VMM", jsonAnswer(200, vmmJSON(uuid.New(), running)), "vmm_id"},
		{"no addr", jsonAnswer(200, strings.Replace(vmmJSON(id, running), `"10.0.0.7:41000"`, `""`, 1)), "addr"},
		{"addr without port", jsonAnswer(200, strings.Replace(vmmJSON(id, running), `"10.0.0.7:41000"`, `"10.0.0.7"`, 1)), "addr"},
		{"no state", jsonAnswer(200, strings.Replace(vmmJSON(id, running), `,"state":`+running, ``, 1)), "state.state"},
		{"unknown state", with(`{"state":"hibernating","gen":7,"time_updated":"2026-11-27T12:00:00Z"}`), "hibernating"},
		{"control plane's own state", with(`{"state":"saga_unwound","gen":7,"time_updated":"2026-11-27T12:00:00Z"}`), "saga_unwound"},
		{"failed without reason", with(`{"state":"failed","gen":7,"time_updated":"2026-11-27T12:00:00Z"}`), "failure reason"},
		{"reason without failed", with(`{"state":"running","gen":7,"time_updated":"2026-11-27T12:00:00Z","failure_reason":{"kind":"vmm_failed","message":""}}`), "only a failed"},
		{"reason without kind", with(`{"state":"failed","gen":7,"time_updated":"2026-11-27T12:00:00Z","failure_reason":{"kind":"","message":"x"}}`), "failure_reason.kind"},
		{"gen 0", with(`{"state":"running","gen":0,"time_updated":"2026-11-27T12:00:00Z"}`), "state.gen"},
		{"gen negative", with(`{"state":"running","gen":-4,"time_updated":"2026-11-27T12:00:00Z"}`), "state.gen"},
		{"gen fraction", with(`{"state":"running","gen":1.5,"time_updated":"2026-11-27T12:00:00Z"}`), "does not decode"},
		{"gen string", with(`{"state":"running","gen":"7","time_updated":"2026-11-27T12:00:00Z"}`), "does not decode"},
		{"no time", with(`{"state":"running","gen":7}`), "state.time_updated"},
		{"bad time", with(`{"state":"running","gen":7,"time_updated":"yesterday"}`), "does not decode"},
		{"migration state", with(`{"state":"running","gen":7,"time_updated":"2026-11-27T12:00:00Z","migration_in":{"migration_id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","state":"paused","gen":1,"time_updated":"2026-11-27T12:00:00Z"}}`), "migration_in.state"},
		{"migration gen", with(`{"state":"running","gen":7,"time_updated":"2026-11-27T12:00:00Z","migration_out":{"migration_id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","state":"pending","gen":0,"time_updated":"2026-11-27T12:00:00Z"}}`), "migration_out.gen"},
		{"migration id", with(`{"state":"running","gen":7,"time_updated":"2026-11-27T12:00:00Z","migration_out":{"state":"pending","gen":1,"time_updated":"2026-11-27T12:00:00Z"}}`), "migration_out.migration_id"},
		{"migration time", with(`{"state":"running","gen":7,"time_updated":"2026-11-27T12:00:00Z","migration_out":{"migration_id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","state":"pending","gen":1}}`), "migration_out.time_updated"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://example.invalid/", http.StatusFound)
		}, "302"},
		{"204 to a GET", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }, "204"},
		{"404 with no body", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) }, "404"},
		{"500 with HTML", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "<html>oops</html>", 500) }, "500"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			agent := newAgent(t, c.answer)
			_, st, err := dialSled(t, uuid.New(), agent.addr()).VmmState(ctxT(t), id)
			require.Error(t, err)
			require.ErrorIs(t, err, ErrBadAnswer)
			require.False(t, errors.Is(err, controlplane.ErrVmmGone), "%v", err)
			require.False(t, errors.Is(err, controlplane.ErrSledUnreachable), "%v", err)
			require.ErrorContains(t, err, c.says)
			require.ErrorContains(t, err, agent.addr(), "the error names the agent")
			require.Equal(t, model.SledVmmState{}, st, "no half-converted state")
			noToken(t, err)
		})
	}
}

// 404 no_such_vmm, and only that, is ErrVmmGone; other refusals are
// errors that name the agent's status and code.
func TestVmmStateRefusals(t *testing.T) {
	id := uuid.New()
	agent := newAgent(t, jsonAnswer(404, `{"error_code":"no_such_vmm","message":"no such VMM is registered on this sled","request_id":"r"}`))
	_, _, err := dialSled(t, uuid.New(), agent.addr()).VmmState(ctxT(t), id)
	require.ErrorIs(t, err, controlplane.ErrVmmGone)
	require.ErrorContains(t, err, id.String())

	for _, c := range []struct {
		status int
		body   string
		says   string
	}{
		{404, `{"error_code":"not_found","message":"no such path: /v1/vmms/x","request_id":"r"}`, "not_found"},
		{500, `{"error_code":"internal","message":"disk on fire","request_id":"r"}`, "disk on fire"},
		{503, `{"error_code":"too_many_connections","message":"later","request_id":"r"}`, "503 too_many_connections"},
		{401, `{"error_code":"unauthorized","message":"the bearer token is not valid","request_id":"r"}`, "refused the control plane's token"},
	} {
		agent := newAgent(t, jsonAnswer(c.status, c.body))
		_, _, err := dialSled(t, uuid.New(), agent.addr()).VmmState(ctxT(t), id)
		require.ErrorContains(t, err, c.says)
		require.False(t, errors.Is(err, controlplane.ErrVmmGone), "%v", err)
		require.False(t, errors.Is(err, controlplane.ErrSledUnreachable), "%v", err)
	}
}

// An agent that echoes the Authorization header in its refusal does not
// get the token into the error.
func TestTokenNeverInErrors(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		b, _ := json.Marshal(map[string]string{"error_code": "bad " + r.Header.Get("Authorization"),
			"message": "you sent " + r.Header.Get("Authorization"), "request_id": "r"})
		jsonAnswer(400, string(b))(w, r)
	}
	garbage := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("token was " + r.Header.Get("Authorization")))
	}
	for _, h := range []http.HandlerFunc{echo, garbage} {
		agent := newAgent(t, h)
		c := dialSled(t, uuid.New(), agent.addr())
		_, _, err := c.VmmState(ctxT(t), uuid.New())
		require.Error(t, err)
		noToken(t, err)
		err = c.Ping(ctxT(t))
		require.Error(t, err)
		noToken(t, err)
		err = c.Unregister(ctxT(t), uuid.New())
		require.Error(t, err)
		noToken(t, err)
	}
}

// A token source that fails sends nothing; nor does an empty token.
func TestTokenSourceFails(t *testing.T) {
	agent := newAgent(t, jsonAnswer(200, `{}`))
	for _, tok := range []TokenFunc{
		func(string) (string, error) { return "", errors.New("no token file for this sled") },
		func(string) (string, error) { return "", nil },
	} {
		c, err := New(tok)(model.Sled{ID: uuid.New(), Address: agent.addr(), APIVersions: []string{"v1"}})
		require.NoError(t, err)
		_, _, err = c.VmmState(ctxT(t), uuid.New())
		require.ErrorContains(t, err, "token")
		require.False(t, errors.Is(err, controlplane.ErrSledUnreachable))
	}
	require.Empty(t, agent.requests())
}

// Ping reads the inventory and checks the agent is the sled's.
func TestPing(t *testing.T) {
	sled := uuid.New()
	inv := func(id uuid.UUID) string {
		return fmt.Sprintf(`{"sled_id":%q,"cpus":{"total":4,"reserved":1,"free":3},"memory_mib":{"total":1024,"reserved":64,"free":960},"vmms":1}`, id)
	}
	agent := newAgent(t, jsonAnswer(200, inv(sled)))
	require.NoError(t, dialSled(t, sled, agent.addr()).Ping(ctxT(t)))
	reqs := agent.requests()
	require.Equal(t, "/v1/inventory", reqs[0].URL.Path)
	require.Equal(t, "Bearer "+testToken, reqs[0].Header.Get("Authorization"))

	other := newAgent(t, jsonAnswer(200, inv(uuid.New())))
	err := dialSled(t, sled, other.addr()).Ping(ctxT(t))
	require.ErrorIs(t, err, ErrBadAnswer)
	require.ErrorContains(t, err, sled.String())

	for _, h := range []http.HandlerFunc{jsonAnswer(200, `{"sled_id":`), jsonAnswer(500, `{"error_code":"internal","message":"x","request_id":"r"}`)} {
		err := dialSled(t, sled, newAgent(t, h).addr()).Ping(ctxT(t))
		require.Error(t, err)
		require.False(t, errors.Is(err, controlplane.ErrSledUnreachable))
	}
}

// Unregister asks with force (the control plane holds the VMM terminal); a VMM the agent does not know is no
// error, one it will not forget is.
func TestUnregister(t *testing.T) {
	id := uuid.New()
	agent := newAgent(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	require.NoError(t, dialSled(t, uuid.New(), agent.addr()).Unregister(ctxT(t), id))
	reqs := agent.requests()
	require.Equal(t, http.MethodDelete, reqs[0].Method)
	require.Equal(t, "/v1/vmms/"+id.String(), reqs[0].URL.Path)
	require.Equal(t, "force=true", reqs[0].URL.RawQuery, "a VMM the control plane holds terminal must not run on")
	require.Equal(t, "Bearer "+testToken, reqs[0].Header.Get("Authorization"))

	gone := newAgent(t, jsonAnswer(404, `{"error_code":"no_such_vmm","message":"x","request_id":"r"}`))
	require.NoError(t, dialSled(t, uuid.New(), gone.addr()).Unregister(ctxT(t), id))

	for _, c := range []struct {
		answer http.HandlerFunc
		says   string
	}{
		{jsonAnswer(409, `{"error_code":"vmm_not_terminal","message":"stop it first","request_id":"r"}`), "vmm_not_terminal"},
		{jsonAnswer(404, `{"error_code":"not_found","message":"no such path","request_id":"r"}`), "not_found"},
		{jsonAnswer(200, `{}`), "200"},
	} {
		err := dialSled(t, uuid.New(), newAgent(t, c.answer).addr()).Unregister(ctxT(t), id)
		require.ErrorContains(t, err, c.says)
	}
}
