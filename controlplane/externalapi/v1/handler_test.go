package v1

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

const testToken = "test-token-0123456789abcdefghijklmnopqrstuvwxyz"

// serve serves version 1 over ops, behind the skeleton and the token, as
// the control plane does.
func serve(t *testing.T, ops controlplane.Operations) *httptest.Server {
	t.Helper()
	h, err := NewHandler(ops, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	root, err := httpkit.NewHandler(httpkit.HandlerOptions{Log: slog.New(slog.DiscardHandler), Auth: httpkit.BearerToken(testToken)},
		httpkit.Version{Prefix: "/v1", Handler: h})
	require.NoError(t, err)
	srv := httptest.NewServer(root)
	t.Cleanup(srv.Close)
	return srv
}

type answer struct {
	status int
	body   []byte
}

func (a answer) errBody(t *testing.T) httpkit.ErrorBody {
	t.Helper()
	var e httpkit.ErrorBody
	require.NoError(t, json.Unmarshal(a.body, &e), "%s", a.body)
	return e
}

func call(t *testing.T, srv *httptest.Server, method, path, body string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+"/v1"+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, data}
}

const createBody = `{"name":"web-1","description":"a web server","spec":{"spec_version":"vmm-server/v1",
	"spec":{"board":{"cpus":2,"memory_mb":512,"chipset":"i440fx"},"boot":{"image":"ticker"}}},"start":true}`

// Every operation's happy path answers its status and the wire form of
// what the Operations answered, and hands the Operations what was asked.
func TestHappyPaths(t *testing.T) {
	ops := newFakeOps()
	srv := serve(t, ops)

	a := call(t, srv, "POST", "/instances", createBody)
	require.Equal(t, 201, a.status, "%s", a.body)
	var created api.InstanceCreated
	require.NoError(t, json.Unmarshal(a.body, &created))
	require.Equal(t, "web-1", created.Instance.Name)
	require.Equal(t, api.InstanceStateCreating, created.Instance.State)
	require.NotNil(t, created.Saga, "a create that starts answers its saga")
	require.Equal(t, sagaID, created.Saga.Id)
	require.Len(t, ops.created, 1)
	c := ops.created[0]
	require.Equal(t, "vmm-server/v1", c.SpecVersion)
	require.True(t, c.Start)
	require.Equal(t, "a web server", c.Description)
	require.JSONEq(t, `{"board":{"cpus":2,"memory_mb":512,"chipset":"i440fx"},"boot":{"image":"ticker"}}`, string(c.Spec))

	a = call(t, srv, "POST", "/instances", `{"name":"quiet","spec":{"spec_version":"vmm-server/v1","spec":{}}}`)
	require.Equal(t, 201, a.status, "%s", a.body)
	require.NotContains(t, string(a.body), `"saga"`, "no saga when the create began none")
	require.False(t, ops.created[1].Start)

	a = call(t, srv, "GET", "/instances", "")
	require.Equal(t, 200, a.status)
	var list api.InstanceList
	require.NoError(t, json.Unmarshal(a.body, &list))
	require.Len(t, list.Instances, 2)
	require.Equal(t, "alpha", list.Instances[0].Name, "ordered by name")

	for _, ref := range []string{"ticker", instID.String(), strings.ToUpper(instID.String())} {
		a = call(t, srv, "GET", "/instances/"+ref, "")
		require.Equal(t, 200, a.status, "%s: %s", ref, a.body)
		var inst api.Instance
		require.NoError(t, json.Unmarshal(a.body, &inst))
		require.Equal(t, instID, inst.Id)
		require.Equal(t, api.InstanceStateRunning, inst.State)
		require.EqualValues(t, 3, inst.Generation)
		require.NotNil(t, inst.ActiveVmm)
		require.Equal(t, sledA, inst.ActiveVmm.SledId)
		require.Equal(t, api.VmmStateRunning, inst.ActiveVmm.State)
		require.Equal(t, "vmm-server/v1", inst.Spec.SpecVersion)
		require.EqualValues(t, 256, inst.Resources.MemoryMib)
	}
	require.Equal(t, "get "+instID.String(), ops.lastCall(), "an id is handed on in canonical form")

	for _, op := range []string{"start", "stop", "reboot"} {
		a = call(t, srv, "POST", "/instances/ticker/"+op, "")
		require.Equal(t, 202, a.status, "%s: %s", op, a.body)
		var s api.Saga
		require.NoError(t, json.Unmarshal(a.body, &s))
		require.Equal(t, api.SagaKind("instance_"+op), s.Kind)
		require.Equal(t, op+" ticker", ops.lastCall())
	}
	a = call(t, srv, "DELETE", "/instances/ticker", "")
	require.Equal(t, 202, a.status, "%s", a.body)
	require.Equal(t, "delete ticker", ops.lastCall())

	a = call(t, srv, "POST", "/instances/ticker/migrate", `{"target_sled":"`+sledB.String()+`"}`)
	require.Equal(t, 202, a.status, "%s", a.body)
	require.Equal(t, "migrate ticker "+sledB.String(), ops.lastCall())
	a = call(t, srv, "POST", "/instances/ticker/migrate", `{}`)
	require.Equal(t, 202, a.status, "%s", a.body)
	require.Equal(t, "migrate ticker anywhere", ops.lastCall())

	a = call(t, srv, "GET", "/sagas/"+sagaID.String(), "")
	require.Equal(t, 200, a.status)
	var s api.Saga
	require.NoError(t, json.Unmarshal(a.body, &s))
	require.Equal(t, []api.SagaStep{{Name: "pick_sled", State: api.SagaStepStateDone}, {Name: "reserve", State: api.SagaStepStatePending}}, s.Steps)
	require.Nil(t, s.Error)

	a = call(t, srv, "GET", "/sleds", "")
	require.Equal(t, 200, a.status)
	var sl api.SledList
	require.NoError(t, json.Unmarshal(a.body, &sl))
	require.Len(t, sl.Sleds, 2)
	require.Equal(t, sledB, sl.Sleds[0].Id, "ordered by id")
	require.Equal(t, api.SledStateLost, sl.Sleds[0].State)
	require.EqualValues(t, 1, sl.Sleds[1].Vmms)
	require.EqualValues(t, 256, sl.Sleds[1].Reserved.MemoryMib)
	require.EqualValues(t, 16, sl.Sleds[1].Capacity.Cpus)
}

// Each domain error of the Operations answers its status and code, through
// real HTTP, and a 5xx says nothing of the control plane's words.
func TestDomainErrors(t *testing.T) {
	secret := "db.secret.host:5432"
	cases := []struct {
		err    error
		status int
		code   string
		says   string
	}{
		{fmt.Errorf("lookup %s: %w", secret, controlplane.ErrNotFound), 404, CodeNoSuchInstance, "ticker"},
		{fmt.Errorf("insert: %w", controlplane.ErrNameInUse), 409, CodeNameInUse, "ticker"},
		{fmt.Errorf("lock: %w", controlplane.ErrInstanceBusy), 409, CodeInstanceBusy, "wait for it"},
		{fmt.Errorf("update: %w", controlplane.ErrConflict), 409, CodeInstanceBusy, "try again"},
		{fmt.Errorf("instance ticker is running: %w", controlplane.ErrInvalidState), 409, CodeInvalidState, "is running"},
		{fmt.Errorf("the instance needs 4 CPUs; the most any sled has free is 2: %w", controlplane.ErrNoCapacity), 409, CodeInsufficientCapacity, "4 CPUs"},
		{fmt.Errorf("sled x: %w", controlplane.ErrSameSled), 409, CodeSameSled, "already"},
		{fmt.Errorf("body.spec.spec.board.cpus: must be at least 1: %w", controlplane.ErrInvalidSpec), 400, CodeInvalidSpec, "board.cpus"},
		{fmt.Errorf("dial %s: %w", secret, controlplane.ErrUnavailable), 503, CodeUnavailable, "try again later"},
		// Unavailable wins over what else the error wraps.
		{fmt.Errorf("dial %s: %w: %w", secret, controlplane.ErrUnavailable, controlplane.ErrNotFound), 503, CodeUnavailable, "try again later"},
		{fmt.Errorf("agent %s: %w", secret, controlplane.ErrSledUnreachable), 503, CodeSledUnavailable, "sled agent"},
		{fmt.Errorf("agent: %w", controlplane.ErrVmmGone), 409, CodeInvalidState, "no VMM"},
		{fmt.Errorf("query %s exploded", secret), 500, httpkit.CodeInternal, "internal error"},
		{context.Canceled, 500, httpkit.CodeInternal, "internal error"},
	}
	for _, c := range cases {
		ops := newFakeOps()
		ops.err = c.err
		srv := serve(t, ops)
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/instances", `{"name":"ticker","spec":{"spec_version":"vmm-server/v1","spec":{}}}`},
			{"POST", "/instances/ticker/start", ""},
			{"POST", "/instances/ticker/migrate", `{}`},
			{"DELETE", "/instances/ticker", ""},
		} {
			a := call(t, srv, r.method, r.path, r.body)
			e := a.errBody(t)
			require.Equal(t, c.status, a.status, "%v on %s %s: %s", c.err, r.method, r.path, a.body)
			require.Equal(t, c.code, e.ErrorCode, "%v", c.err)
			require.Contains(t, e.Message, c.says, "%v", c.err)
			require.Contains(t, Codes, e.ErrorCode)
			require.NotEmpty(t, e.RequestID)
			if a.status >= 500 {
				require.NotContains(t, e.Message, "db.secret", "a 5xx never leaks the control plane's words")
			}
		}
	}
}

// A not-found means what the operation was about: a saga's id, a
// migration's target sled (when the instance exists), else the instance.
func TestNotFoundNamesWhat(t *testing.T) {
	ops := newFakeOps()
	srv := serve(t, ops)
	other := uuid.New()
	a := call(t, srv, "GET", "/sagas/"+other.String(), "")
	require.Equal(t, 404, a.status)
	require.Equal(t, CodeNoSuchSaga, a.errBody(t).ErrorCode)
	require.Contains(t, a.errBody(t).Message, other.String())

	for _, r := range []struct{ method, path, body string }{
		{"GET", "/instances/nosuch", ""}, {"POST", "/instances/nosuch/start", ""}, {"POST", "/instances/nosuch/stop", ""},
		{"POST", "/instances/nosuch/reboot", ""}, {"DELETE", "/instances/nosuch", ""}, {"POST", "/instances/nosuch/migrate", "{}"},
		{"POST", "/instances/nosuch/migrate", `{"target_sled":"` + other.String() + `"}`},
	} {
		a = call(t, srv, r.method, r.path, r.body)
		require.Equal(t, 404, a.status, "%s %s", r.method, r.path)
		require.Equal(t, CodeNoSuchInstance, a.errBody(t).ErrorCode, "%s %s", r.method, r.path)
		require.Contains(t, a.errBody(t).Message, "nosuch")
	}

	ops.notFoundTarget = true
	a = call(t, srv, "POST", "/instances/ticker/migrate", `{"target_sled":"`+other.String()+`"}`)
	require.Equal(t, 404, a.status)
	require.Equal(t, CodeNoSuchSled, a.errBody(t).ErrorCode)
	require.Contains(t, a.errBody(t).Message, other.String())
}

// No token, or another, answers 401 unauthorized on every operation and
// reaches no operation.
func TestUnauthorized(t *testing.T) {
	ops := newFakeOps()
	srv := serve(t, ops)
	for _, tok := range []string{"", "Bearer wrong-token-0123456789abcdefghijklmnopqrstuvwxyz", "Basic Zm9vOmJhcg=="} {
		for _, r := range []struct{ method, path string }{
			{"GET", "/instances"}, {"POST", "/instances"}, {"GET", "/instances/ticker"}, {"POST", "/instances/ticker/start"},
			{"DELETE", "/instances/ticker"}, {"GET", "/sagas/" + sagaID.String()}, {"GET", "/sleds"}, {"GET", "/instances/ticker/serial"},
		} {
			req, err := http.NewRequest(r.method, srv.URL+"/v1"+r.path, nil)
			require.NoError(t, err)
			if tok != "" {
				req.Header.Set("Authorization", tok)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, 401, resp.StatusCode, "%s %s with %q", r.method, r.path, tok)
			require.Contains(t, string(body), `"unauthorized"`)
			require.Equal(t, "Bearer", resp.Header.Get("WWW-Authenticate"))
		}
	}
	require.Empty(t, ops.calls, "no operation ran")
}

// Bad names, ids and bodies answer 400 invalid_request naming the field,
// and reach no operation.
func TestBadInput(t *testing.T) {
	ops := newFakeOps()
	srv := serve(t, ops)
	spec := `"spec":{"spec_version":"vmm-server/v1","spec":{}}`
	cases := []struct{ method, path, body, field string }{
		{"POST", "/instances", `{"name":"Web",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"1web",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"-web",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"web-",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"web_1",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"` + strings.Repeat("a", 64) + `",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"deadbeef-0000-4000-8000-000000000000",` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"deadbeef00004000800000000000abcd",` + spec + `}`, "name"},
		{"POST", "/instances", `{` + spec + `}`, "name"},
		{"POST", "/instances", `{"name":"web"}`, "spec"},
		{"POST", "/instances", `{"name":"web","spec":{"spec_version":"vmm-server/v1"}}`, "spec"},
		{"POST", "/instances", `{"name":"web","spec":{"spec_version":"v1","spec":{}}}`, "spec_version"},
		{"POST", "/instances", `{"name":"web",` + spec + `,"colour":"red"}`, "colour"},
		{"POST", "/instances", `{"name":"web",` + spec + `,"start":"yes"}`, "start"},
		{"POST", "/instances", `{"name":"web","description":"` + strings.Repeat("x", 513) + `",` + spec + `}`, "description"},
		{"POST", "/instances", `{"name":`, "body"},
		{"GET", "/instances/Bad_Name", "", "instance"},
		{"GET", "/instances/-x", "", "instance"},
		{"POST", "/instances/x-/start", "", "instance"},
		{"GET", "/sagas/not-a-uuid", "", "saga_id"},
		{"POST", "/instances/ticker/migrate", `{"target_sled":"sled-9"}`, "target_sled"},
		{"POST", "/instances/ticker/migrate", `{"target_sled":"00000000-0000-0000-0000-000000000000"}`, "target_sled"},
		{"POST", "/instances/ticker/migrate", `{"to":"x"}`, "to"},
	}
	for _, c := range cases {
		a := call(t, srv, c.method, c.path, c.body)
		require.Equal(t, 400, a.status, "%s %s %s: %s", c.method, c.path, c.body, a.body)
		e := a.errBody(t)
		require.Equal(t, httpkit.CodeInvalidRequest, e.ErrorCode, "%s %s %s", c.method, c.path, c.body)
		require.Contains(t, e.Message, c.field, "%s %s %s: the message names the field", c.method, c.path, c.body)
	}
	require.Empty(t, ops.calls, "no operation ran")

	// Not JSON, too large: the skeleton's codes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/instances", strings.NewReader("name=web"))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 415, resp.StatusCode)
	big := `{"name":"web","description":"` + strings.Repeat("x", 2<<20) + `",` + spec + `}`
	req, _ = http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/instances", bytes.NewReader([]byte(big)))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 413, resp.StatusCode)
	require.Contains(t, string(body), "body_too_large")
	a := call(t, srv, "PUT", "/instances", "")
	require.Equal(t, 405, a.status)
	require.Equal(t, httpkit.CodeMethodNotAllowed, a.errBody(t).ErrorCode)
	a = call(t, srv, "GET", "/nothing", "")
	require.Equal(t, 404, a.status)
	require.Equal(t, httpkit.CodeNotFound, a.errBody(t).ErrorCode)
}

// blockingOps answers only when its context ends.
type blockingOps struct{ *fakeOps }

func (blockingOps) StartInstance(ctx context.Context, _ string) (controlplane.SagaView, error) {
	<-ctx.Done()
	return controlplane.SagaView{}, fmt.Errorf("query: %w", ctx.Err())
}

// Operations that hang (a database that does not answer) are cut off
// after the timeout and answered 503, not left holding the request; a
// client that went away is not the control plane's unavailability.
func TestOpsTimeout(t *testing.T) {
	s := &Server{ops: blockingOps{newFakeOps()}, timeout: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.InstanceStart(ctx, api.InstanceStartRequestObject{Instance: "ticker"})
	require.Equal(t, http.StatusServiceUnavailable, classify(err).Status, "%v", err)
	require.Equal(t, CodeUnavailable, classify(err).Code)

	gone, stop := context.WithCancel(context.Background())
	stop()
	_, err = s.InstanceStart(gone, api.InstanceStartRequestObject{Instance: "ticker"})
	require.Equal(t, http.StatusInternalServerError, classify(err).Status, "%v", err)
}

// The conversions stand without the validator: each rule of the contract
// is checked again, with the field named.
func TestCreateFromV1(t *testing.T) {
	good := api.InstanceCreate{Name: "web", Spec: api.SpecEnvelope{SpecVersion: "vmm-server/v1", Spec: map[string]any{"board": map[string]any{"cpus": 1}}}}
	c, err := CreateFromV1(good)
	require.NoError(t, err)
	require.Equal(t, "web", c.Name)
	require.JSONEq(t, `{"board":{"cpus":1}}`, string(c.Spec))
	long := strings.Repeat("d", 513)
	for _, edit := range []struct {
		f     func(*api.InstanceCreate)
		field string
	}{
		{func(b *api.InstanceCreate) { b.Name = "Web" }, "body.name"},
		{func(b *api.InstanceCreate) { b.Name = strings.Repeat("a", 64) }, "body.name"},
		{func(b *api.InstanceCreate) { b.Name = uuid.NewString() }, "body.name"},
		{func(b *api.InstanceCreate) { b.Description = &long }, "body.description"},
		{func(b *api.InstanceCreate) { b.Spec.SpecVersion = "" }, "body.spec.spec_version"},
		{func(b *api.InstanceCreate) { b.Spec.Spec = nil }, "body.spec.spec"},
	} {
		b := good
		edit.f(&b)
		_, err := CreateFromV1(b)
		var fe *fieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, edit.field, fe.Field)
	}
}

// A failure reason of a kind the contract does not list is answered as
// unknown, its name kept; a failed instance answers its reason.
func TestInstanceToV1Failure(t *testing.T) {
	v := tickerView()
	v.ActiveVmm = nil
	v.Instance.Runtime.State = "failed"
	v.Instance.Runtime.ActiveVmm = uuid.NullUUID{}
	v.Instance.Runtime.Failure = &model.FailureReason{Kind: "cosmic_ray", Message: "bit flip"}
	out, err := InstanceToV1(v)
	require.NoError(t, err)
	require.NotNil(t, out.FailureReason)
	require.Equal(t, api.FailureReasonKindUnknown, out.FailureReason.Kind)
	require.Contains(t, out.FailureReason.Message, "cosmic_ray")
	require.Nil(t, out.ActiveVmm)

	v.Instance.Spec = []byte("[1]")
	_, err = InstanceToV1(v)
	require.Error(t, err)
	require.Equal(t, 500, classify(err).Status, "a spec the control plane stored badly is its fault")
}
