package internalapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/internalapi"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// fakeRuntime knows a set of VMMs and records what it was asked.
type fakeRuntime struct {
	mu    sync.Mutex
	known map[uuid.UUID]bool
	fail  error // answered by every call when set
	rings []uuid.UUID
	sleds []model.Sled
}

func newFake(known ...uuid.UUID) *fakeRuntime {
	f := &fakeRuntime{known: map[uuid.UUID]bool{}}
	for _, id := range known {
		f.known[id] = true
	}
	return f
}

func (f *fakeRuntime) Ring(ctx context.Context, id uuid.UUID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rings = append(f.rings, id)
	if f.fail != nil {
		return f.fail
	}
	if !f.known[id] {
		return fmt.Errorf("read VMM %s: %w", id, controlplane.ErrNotFound)
	}
	return nil
}

func (f *fakeRuntime) RegisterSled(ctx context.Context, s model.Sled) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.sleds = append(f.sleds, s)
	return nil
}

func (f *fakeRuntime) calls() (rings []uuid.UUID, sleds []model.Sled) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uuid.UUID(nil), f.rings...), append([]model.Sled(nil), f.sleds...)
}

const token = "cp-token-3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// syncBuffer is a log sink the server's goroutines may write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serve starts the internal API over rt on a real listener and returns
// its base URL and its log.
func serve(t *testing.T, rt internalapi.Runtime) (string, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "rings_total 3\n") })
	h, err := internalapi.NewHandler(rt, httpkit.HandlerOptions{
		Auth: httpkit.BearerToken(token),
		Log:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, metrics)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, logs
}

type answer struct {
	status int
	header http.Header
	raw    string
	body   httpkit.ErrorBody
}

// call sends one request and reads the whole answer.
func call(t *testing.T, method, url, tok, contentType, body string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(data)}
	if resp.StatusCode >= 400 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&a.body), "every refusal is in the Error schema: %s", data)
		require.NotEmpty(t, a.body.RequestID)
		require.NotEmpty(t, a.body.Message)
	}
	return a
}

func ringURL(base string, id any) string { return fmt.Sprintf("%s/v1/vmms/%v/changed", base, id) }

// A ring for a known VMM answers 202 with no body and reaches the runtime
// once, with the VMM's id; an unknown one 404 no_such_vmm naming it.
func TestRing(t *testing.T) {
	known, unknown := uuid.New(), uuid.New()
	rt := newFake(known)
	url, _ := serve(t, rt)

	a := call(t, http.MethodPost, ringURL(url, known), token, "", "")
	require.Equal(t, http.StatusAccepted, a.status)
	require.Empty(t, a.raw, "202 has no body")

	a = call(t, http.MethodPost, ringURL(url, unknown), token, "", "")
	require.Equal(t, http.StatusNotFound, a.status)
	require.Equal(t, "no_such_vmm", a.body.ErrorCode)
	require.Contains(t, a.body.Message, unknown.String())

	rings, _ := rt.calls()
	require.Equal(t, []uuid.UUID{known, unknown}, rings)
}

// The doorbell takes no body: one sent anyway is neither read nor judged
// (whatever its type), as for every body-less operation on the skeleton.
func TestRingIgnoresABody(t *testing.T) {
	id := uuid.New()
	rt := newFake(id)
	url, _ := serve(t, rt)
	for _, c := range []struct{ ct, body string }{
		{"application/json", `{"state":"running"}`},
		{"application/json", `not json at all`},
		{"text/plain", "hello"},
		{"", strings.Repeat("x", 2<<20)}, // over the body limit
	} {
		a := call(t, http.MethodPost, ringURL(url, id), token, c.ct, c.body)
		require.Equal(t, http.StatusAccepted, a.status, "%q %.20q: %s", c.ct, c.body, a.raw)
	}
	rings, _ := rt.calls()
	require.Len(t, rings, 4)
}

// The runtime's failures: unavailable answers 503 (the agent tries
// again); anything else 500 internal, whose message tells nothing of the
// runtime's words (they go to the log, for operators).
func TestRingRuntimeFailures(t *testing.T) {
	id := uuid.New()
	rt := newFake(id)
	url, logs := serve(t, rt)

	rt.fail = fmt.Errorf("query vmm: dial postgres://waggle:s3cret@db.internal:5432: %w", controlplane.ErrUnavailable)
	a := call(t, http.MethodPost, ringURL(url, id), token, "", "")
	require.Equal(t, http.StatusServiceUnavailable, a.status)
	require.Equal(t, "unavailable", a.body.ErrorCode)
	require.NotContains(t, a.raw, "s3cret")
	require.NotContains(t, a.raw, "db.internal")

	rt.fail = errors.New("scan row: column vmm.state_secret_column is weird")
	a = call(t, http.MethodPost, ringURL(url, id), token, "", "")
	require.Equal(t, http.StatusInternalServerError, a.status)
	require.Equal(t, "internal", a.body.ErrorCode)
	require.NotContains(t, a.raw, "state_secret_column")
	internalID := a.body.RequestID

	// A not-found wrapped under something else is still a 404.
	rt.fail = fmt.Errorf("load: %w", controlplane.ErrNotFound)
	a = call(t, http.MethodPost, ringURL(url, id), token, "", "")
	require.Equal(t, http.StatusNotFound, a.status)
	require.Equal(t, "no_such_vmm", a.body.ErrorCode)

	log := logs.String()
	require.Contains(t, log, "state_secret_column", "the 500's cause is logged for operators")
	require.Contains(t, log, "request_id="+internalID, "with the request id the client was answered")
	require.NotContains(t, log, token)
}

// Without the token, or with another, every operation answers 401 before
// anything about the request is judged, and the runtime hears nothing.
func TestUnauthorized(t *testing.T) {
	id := uuid.New()
	rt := newFake(id)
	url, logs := serve(t, rt)
	reg := `{"address":"10.0.0.7:12300","api_versions":["v1"],"capacity":{"cpus":4,"memory_mib":1024}}`
	for _, tok := range []string{"", "not-the-token", token + "x"} {
		for _, c := range []struct{ method, url, ct, body string }{
			{http.MethodPost, ringURL(url, id), "", ""},
			{http.MethodPost, ringURL(url, "not-a-uuid"), "", ""},
			{http.MethodPut, url + "/v1/sleds/" + uuid.NewString(), "application/json", reg},
			{http.MethodPut, url + "/v1/sleds/nope", "application/json", `{}`},
		} {
			a := call(t, c.method, c.url, tok, c.ct, c.body)
			require.Equal(t, http.StatusUnauthorized, a.status, "%q %s %s", tok, c.method, c.url)
			require.Equal(t, "unauthorized", a.body.ErrorCode)
			require.Equal(t, "Bearer", a.header.Get("WWW-Authenticate"))
		}
	}
	rings, sleds := rt.calls()
	require.Empty(t, rings)
	require.Empty(t, sleds)
	require.NotContains(t, logs.String(), "not-the-token")
}

// A malformed id answers 400 naming the path parameter; the runtime
// hears nothing.
func TestMalformedIDs(t *testing.T) {
	rt := newFake()
	url, _ := serve(t, rt)
	for _, bad := range []string{"not-a-uuid", "123", "0c6a4a046a2f4d6e9f532b8b2f6a9a10", "0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a1"} {
		a := call(t, http.MethodPost, ringURL(url, bad), token, "", "")
		require.Equal(t, http.StatusBadRequest, a.status, bad)
		require.Equal(t, "invalid_request", a.body.ErrorCode)
		require.Contains(t, a.body.Message, "path parameter vmm_id", bad)

		a = call(t, http.MethodPut, url+"/v1/sleds/"+bad, token, "application/json",
			`{"address":"10.0.0.7:12300","api_versions":["v1"],"capacity":{"cpus":4,"memory_mib":1024}}`)
		require.Equal(t, http.StatusBadRequest, a.status, bad)
		require.Contains(t, a.body.Message, "path parameter sled_id", bad)
	}
	rings, sleds := rt.calls()
	require.Empty(t, rings)
	require.Empty(t, sleds)
}

// Paths and methods outside the contract answer in the Error schema.
func TestOutsideTheContract(t *testing.T) {
	url, _ := serve(t, newFake())
	a := call(t, http.MethodGet, ringURL(url, uuid.New()), token, "", "")
	require.Equal(t, http.StatusMethodNotAllowed, a.status)
	require.Equal(t, "POST", a.header.Get("Allow"))
	a = call(t, http.MethodPost, url+"/v2/vmms/"+uuid.NewString()+"/changed", token, "", "")
	require.Equal(t, http.StatusNotFound, a.status)
	require.Equal(t, "not_found", a.body.ErrorCode)
}

// A registration reaches the runtime as the domain's sled, field for
// field; repeating it is answered alike.
func TestRegisterRoundTrip(t *testing.T) {
	rt := newFake()
	url, _ := serve(t, rt)
	id := uuid.New()
	body := `{"address":"sled7.example:12300","api_versions":["v2","v1"],"capacity":{"cpus":16,"memory_mib":65536}}`
	for range 2 {
		a := call(t, http.MethodPut, url+"/v1/sleds/"+id.String(), token, "application/json", body)
		require.Equal(t, http.StatusNoContent, a.status, a.raw)
		require.Empty(t, a.raw)
	}
	want := model.Sled{ID: id, Address: "sled7.example:12300", APIVersions: []string{"v2", "v1"},
		Capacity: model.Resources{CPUs: 16, MemoryMiB: 65536}}
	_, sleds := rt.calls()
	require.Equal(t, []model.Sled{want, want}, sleds)

	// IPv6 and the largest values the contract allows.
	id2 := uuid.New()
	a := call(t, http.MethodPut, url+"/v1/sleds/"+id2.String(), token, "application/json",
		`{"address":"[fd00::7]:65535","api_versions":["v1"],"capacity":{"cpus":65536,"memory_mib":9007199254740991}}`)
	require.Equal(t, http.StatusNoContent, a.status, a.raw)
	_, sleds = rt.calls()
	require.Equal(t, model.Sled{ID: id2, Address: "[fd00::7]:65535", APIVersions: []string{"v1"},
		Capacity: model.Resources{CPUs: 65536, MemoryMiB: 1<<53 - 1}}, sleds[2])

	rt.fail = fmt.Errorf("insert sled: %w", controlplane.ErrUnavailable)
	a = call(t, http.MethodPut, url+"/v1/sleds/"+id.String(), token, "application/json", body)
	require.Equal(t, http.StatusServiceUnavailable, a.status)
	require.Equal(t, "unavailable", a.body.ErrorCode)
}

// Each bad field of a registration answers 400 invalid_request naming
// that field, and nothing reaches the runtime.
func TestRegisterBadFields(t *testing.T) {
	rt := newFake()
	url, _ := serve(t, rt)
	good := map[string]any{"address": "10.0.0.7:12300", "api_versions": []string{"v1"},
		"capacity": map[string]any{"cpus": 4, "memory_mib": 1024}}
	with := func(key string, v any) string {
		m := map[string]any{}
		for k, x := range good {
			m[k] = x
		}
		if v == nil {
			delete(m, key)
		} else {
			m[key] = v
		}
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return string(b)
	}
	cases := []struct{ body, field string }{
		{with("address", nil), "address"},
		{with("address", ""), "body.address"},
		{with("address", "10.0.0.7"), "body.address"},
		{with("address", "10.0.0.7:"), "body.address"},
		{with("address", ":12300"), "body.address"},
		{with("address", "10.0.0.7:0"), "body.address"},
		{with("address", "10.0.0.7:99999"), "body.address"},
		{with("address", "0.0.0.0:12300"), "body.address"},
		{with("address", "[::]:12300"), "body.address"},
		{with("address", "http://10.0.0.7:12300"), "body.address"},
		{with("address", "a b:1"), "body.address"},
		{with("address", 7), "body.address"},
		{with("api_versions", nil), "api_versions"},
		{with("api_versions", []string{}), "body.api_versions"},
		{with("api_versions", []string{"1"}), "body.api_versions.0"},
		{with("api_versions", []string{"v1", "v0"}), "body.api_versions.1"},
		{with("api_versions", []string{"v1", "V2"}), "body.api_versions.1"},
		{with("api_versions", []string{"v1", "v1"}), "body.api_versions.1"},
		{with("api_versions", "v1"), "body.api_versions"},
		{with("capacity", nil), "capacity"},
		{with("capacity", map[string]any{"cpus": 0, "memory_mib": 1}), "body.capacity.cpus"},
		{with("capacity", map[string]any{"cpus": 65537, "memory_mib": 1}), "body.capacity.cpus"},
		{with("capacity", map[string]any{"cpus": -1, "memory_mib": 1}), "body.capacity.cpus"},
		{with("capacity", map[string]any{"cpus": 1, "memory_mib": 0}), "body.capacity.memory_mib"},
		{with("capacity", map[string]any{"cpus": 1, "memory_mib": 9007199254740992}), "body.capacity.memory_mib"},
		{with("capacity", map[string]any{"cpus": 1}), "memory_mib"},
		{with("capacity", map[string]any{"cpus": 1, "memory_mib": 1, "gpus": 2}), "gpus"},
		{with("color", "blue"), "color"},
		{`[]`, "body"},
		{`{"address":"10.0.0.7:12300"} {}`, "body"},
	}
	for _, c := range cases {
		a := call(t, http.MethodPut, url+"/v1/sleds/"+uuid.NewString(), token, "application/json", c.body)
		require.Equal(t, http.StatusBadRequest, a.status, "%s: %s", c.body, a.raw)
		require.Equal(t, "invalid_request", a.body.ErrorCode, c.body)
		require.Contains(t, a.body.Message, c.field, c.body)
	}
	// No body, or one that is not JSON.
	a := call(t, http.MethodPut, url+"/v1/sleds/"+uuid.NewString(), token, "", "")
	require.Equal(t, http.StatusBadRequest, a.status, a.raw)
	require.Contains(t, a.body.Message, "body")
	a = call(t, http.MethodPut, url+"/v1/sleds/"+uuid.NewString(), token, "text/plain", "address=x")
	require.Equal(t, http.StatusUnsupportedMediaType, a.status, a.raw)
	_, sleds := rt.calls()
	require.Empty(t, sleds)
}

// The real runtime is a Runtime.
var _ internalapi.Runtime = (*controlplane.ControlPlane)(nil)

func TestVersions(t *testing.T) {
	require.Equal(t, []string{"v1"}, internalapi.Versions)
	_, err := internalapi.NewHandler(nil, httpkit.HandlerOptions{}, nil)
	require.Error(t, err)
	h, err := internalapi.NewHandler(newFake(), httpkit.HandlerOptions{Auth: httpkit.BearerToken(token)}, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	a := call(t, http.MethodGet, srv.URL+"/metrics", token, "", "")
	require.Equal(t, http.StatusNotFound, a.status, "no metrics handler, no /metrics")
}

// /metrics needs the token, and only reads.
func TestMetrics(t *testing.T) {
	url, _ := serve(t, newFake())
	a := call(t, http.MethodGet, url+"/metrics", token, "", "")
	require.Equal(t, http.StatusOK, a.status)
	require.Contains(t, a.raw, "rings_total")
	a = call(t, http.MethodGet, url+"/metrics", "", "", "")
	require.Equal(t, http.StatusUnauthorized, a.status)
	require.NotContains(t, a.raw, "rings_total")
	a = call(t, http.MethodPost, url+"/metrics", token, "", "")
	require.Equal(t, http.StatusMethodNotAllowed, a.status)
	require.Equal(t, "GET, HEAD", a.header.Get("Allow"))
}
