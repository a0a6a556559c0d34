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
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	apiv2 "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// testToken is the bearer token of the servers the tests start.
const testToken = "test-token-0123456789abcdefghijklmnop"

// withTestToken lets through with the test's token every request that
// carries no credentials, so the tests of behaviour behind
// authentication need not each send it; the tests of authentication
// itself use authServer.
func withTestToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			r.Header.Set("Authorization", "Bearer "+testToken)
		}
		h.ServeHTTP(w, r)
	})
}

// authServer runs the real handler over core with testToken and nothing
// added to the requests.
func authServer(t *testing.T, core Core) *httptest.Server {
	t.Helper()
	h, err := NewHandler(core, httpkit.HandlerOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Auth: httpkit.BearerToken(testToken)})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// apiOperation is one operation of one version's contract.
type apiOperation struct {
	prefix       string // where its version is mounted: "/v1", ...
	doc          *openapi3.T
	method, path string
	op           *openapi3.Operation
}

// contracts are the documents of the versions the server mounts, by
// prefix (TestEveryVersionHasItsContract keeps it in step with
// apiVersions).
var contracts = map[string]func() (*openapi3.T, error){"/v1": api.GetSwagger, "/v2": apiv2.GetSwagger}

// apiOperations lists the operations of every version the server serves,
// in a fixed order.
func apiOperations(t *testing.T) []apiOperation {
	t.Helper()
	var ops []apiOperation
	for _, v := range apiVersions {
		load, ok := contracts[v.prefix]
		require.True(t, ok, "no contract for %s", v.prefix)
		doc, err := load()
		require.NoError(t, err)
		for path, item := range doc.Paths.Map() {
			for method, op := range item.Operations() {
				ops = append(ops, apiOperation{v.prefix, doc, method, path, op})
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		return ops[i].prefix+ops[i].path+ops[i].method < ops[j].prefix+ops[j].path+ops[j].method
	})
	require.NotEmpty(t, ops)
	return ops
}

// TestEveryVersionHasItsContract: the tests that walk every operation know
// the contract of every version the server mounts.
func TestEveryVersionHasItsContract(t *testing.T) {
	require.Len(t, contracts, len(apiVersions))
	for _, v := range apiVersions {
		require.Contains(t, contracts, v.prefix)
	}
}

// minimalSpecJSON is a spec with nothing that refers to host files.
const minimalSpecJSON = `{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"components":{"com1":{"type":"serial_port","num":"com1"}}}`

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// TestEveryOperationNeedsTheToken: every operation of the contract but the
// migration stream (which proves itself inside the stream) answers 401
// unauthorized to a request without the token or with a wrong one, before
// it looks at anything else the request holds; with the token it is not
// refused. The operations come from the document, so a new one is covered
// without a word here.
func TestEveryOperationNeedsTheToken(t *testing.T) {
	core := newFakeCore()
	srv := authServer(t, core)
	ops := apiOperations(t)
	var open []string
	for _, o := range ops {
		reqs := o.doc.Security
		if o.op.Security != nil {
			reqs = *o.op.Security
		}
		if len(reqs) == 0 {
			open = append(open, o.method+" "+o.prefix+o.path)
			continue
		}
		require.NotNil(t, o.op.Responses.Status(http.StatusUnauthorized), "%s %s%s declares its 401", o.method, o.prefix, o.path)
		url := srv.URL + o.prefix + pathParam.ReplaceAllString(o.path, "5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01")
		for _, cred := range []string{"", "Bearer wrong", "Bearer " + testToken + "x", "Bearer " + testToken[1:], "Basic " + testToken, "Bearer"} {
			t.Run(o.method+" "+o.prefix+o.path+" "+cred, func(t *testing.T) {
				for _, body := range []string{"", `{"not": "valid"} trailing`} {
					req, err := http.NewRequest(o.method, url+"?gen=-1&max_bytes=0", strings.NewReader(body))
					require.NoError(t, err)
					req.Header.Set("Content-Type", "application/json")
					if cred != "" {
						req.Header.Set("Authorization", cred)
					}
					resp, e := doRaw(t, req)
					require.Equal(t, http.StatusUnauthorized, resp.StatusCode, e.Message)
					require.Equal(t, CodeUnauthorized, e.ErrorCode)
					require.Equal(t, "Bearer", resp.Header.Get("WWW-Authenticate"))
					require.NotContains(t, e.Message, testToken[5:15])
				}
			})
		}
		// With the token the request gets past authentication.
		req, err := http.NewRequest(o.method, url, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.NotEqual(t, http.StatusUnauthorized, resp.StatusCode, "%s %s%s with the token", o.method, o.prefix, o.path)
	}
	var want []string
	for _, v := range apiVersions {
		want = append(want, "GET "+v.prefix+"/instance/migrate/{migration_id}/start")
	}
	require.Equal(t, want, open, "only the migration stream goes without a bearer token, in every version")

	// The open ones answer without a token (and learn what a stranger
	// learns: the migration is not expected).
	for _, v := range apiVersions {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+v.prefix+"/instance/migrate/5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01/start", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", MigrateUpgradeProtocol)
		resp, e := doRaw(t, req)
		require.Equal(t, http.StatusNotFound, resp.StatusCode, e.Message)
		require.Equal(t, CodeNoSuchMigration, e.ErrorCode, v.prefix)
	}
}

// TestNoTokenLearnsNothing: whether an instance exists or not, a request
// without the token gets the same answer.
func TestNoTokenLearnsNothing(t *testing.T) {
	core := newFakeCore()
	srv := authServer(t, core)
	answer := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/instance", nil)
		req.Header.Set("X-Request-Id", "same")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	status, before := answer()
	require.Equal(t, http.StatusUnauthorized, status)
	c, err := api.NewClientWithResponses(srv.URL+"/v1", api.WithRequestEditorFn(httpkit.BearerAuth(testToken)))
	require.NoError(t, err)
	r, err := c.InstanceEnsureWithBodyWithResponse(context.Background(), "application/json", strings.NewReader(ensureBody(minimalSpecJSON)))
	require.NoError(t, err)
	require.Less(t, r.StatusCode(), 300, string(r.Body))
	g, err := c.InstanceGetWithResponse(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, g.StatusCode(), "the generated client sends the token with BearerAuth")
	status, after := answer()
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, before, after)
}

// TestMethodNotAllowedAllow: a 405 lists in Allow exactly the methods the
// contract has on the path.
func TestMethodNotAllowedAllow(t *testing.T) {
	srv, _ := start(t, newFakeCore())
	for _, o := range apiOperations(t) {
		path, item := o.path, o.doc.Paths.Value(o.path)
		var want []string
		for m := range item.Operations() {
			want = append(want, m)
		}
		url := srv.URL + o.prefix + pathParam.ReplaceAllString(path, "5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01")
		for _, m := range []string{http.MethodDelete, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodGet} {
			if item.GetOperation(m) != nil {
				continue
			}
			req, _ := http.NewRequest(m, url, nil)
			resp, e := doRaw(t, req)
			require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s%s", m, o.prefix, path)
			require.Equal(t, CodeMethodNotAllowed, e.ErrorCode)
			got := strings.Split(resp.Header.Get("Allow"), ", ")
			require.ElementsMatch(t, want, got, "Allow of %s", path)
		}
	}
}

// TestContentTypeWithoutBody: a request with no body is not refused for
// its JSON content type.
func TestContentTypeWithoutBody(t *testing.T) {
	srv, _ := start(t, newFakeCore())
	for _, method := range []string{http.MethodGet, http.MethodPut} {
		req, _ := http.NewRequest(method, srv.URL+"/v1/instance", nil)
		req.Header.Set("Content-Type", "application/json")
		resp, e := doRaw(t, req)
		require.NotContains(t, e.Message, "EOF")
		require.NotContains(t, e.Message, "not one JSON value")
		if method == http.MethodGet {
			require.Equal(t, http.StatusNotFound, resp.StatusCode, "no instance yet: %s", e.Message)
		} else {
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			require.Contains(t, e.Message, "body")
		}
	}
}

// TestMalformedContentType: a content type that does not parse is 415,
// and cannot slip a second JSON value past the one-value check.
func TestMalformedContentType(t *testing.T) {
	srv, _ := start(t, newFakeCore())
	for _, ct := range []string{"application/json;;;=", "application/json; =x", "application/json;charset", "application/json, text/plain"} {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/instance", strings.NewReader(ensureBody(validSpecJSON)+` {}`))
		req.Header.Set("Content-Type", ct)
		e := doError(t, req, http.StatusUnsupportedMediaType)
		require.Equal(t, CodeUnsupportedMedia, e.ErrorCode, ct)
		require.Contains(t, e.Message, "Content-Type")
	}
}

// doRaw sends req and returns the response and, when it is one, the Error
// body (zero otherwise).
func doRaw(t *testing.T, req *http.Request) (*http.Response, api.Error) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e api.Error
	if resp.StatusCode >= 400 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&e), "every failure is the Error schema: %s", body)
		require.Equal(t, resp.Header.Get("X-Request-Id"), e.RequestId)
	}
	return resp, e
}

// startLimited serves the real handler over core on a loopback port with
// httpkit's Server (so its connection limit applies) and returns the
// address.
func startLimited(t *testing.T, core Core, hopts httpkit.HandlerOptions, sopts httpkit.ServerOptions) string {
	t.Helper()
	hopts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	hopts.Auth = httpkit.BearerToken(testToken)
	h, err := NewHandler(core, hopts)
	require.NoError(t, err)
	sopts.Log = hopts.Log
	srv := httpkit.NewServer(h, sopts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// goodGet sends a GET /v1/instance with the token on a new connection and
// returns its status (0 when the connection failed).
func goodGet(addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /v1/instance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", testToken); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestStrangersSlowBodiesCannotLockClientsOut: strangers that send the
// first byte of a body and then nothing, to the ensure (secured, 401) and
// to the migration stream (open, takes no body), fill every place; a
// client with the token is served all the same, and the strangers were
// told at once, with Connection: close.
func TestStrangersSlowBodiesCannotLockClientsOut(t *testing.T) {
	addr := startLimited(t, newFakeCore(), httpkit.HandlerOptions{}, httpkit.ServerOptions{MaxConns: 4})
	mig := "/v1/instance/migrate/5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01/start"
	for _, raw := range []string{
		"PUT /v1/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
		"PUT /v1/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
		"GET " + mig + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
		"GET " + mig + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: " + MigrateUpgradeProtocol + "\r\nContent-Length: 1000\r\n\r\n{",
	} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = io.WriteString(c, raw)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err, "answered without waiting for the body: %q", raw)
		resp.Body.Close()
		require.Less(t, resp.StatusCode, 500, raw)
		require.NotEqual(t, http.StatusSwitchingProtocols, resp.StatusCode, "a request with a body is not upgraded")
		require.True(t, resp.Close, "Connection: close for %q", raw)
	}
	for range 4 {
		require.Contains(t, []int{http.StatusOK, http.StatusNotFound}, goodGet(addr), "a client with the token is served")
	}
}

// TestClientThatStopsReadingIsCut: a client with the token that asks for
// large answers (serial history, 1 MiB each, pipelined) and reads none of
// them does not hold its handler and its place for ever: the write
// deadline cuts it, and the place is free again.
func TestClientThatStopsReadingIsCut(t *testing.T) {
	core := newFakeCore()
	core.serial = bytes.Repeat([]byte("x"), 1<<20)
	addr := startLimited(t, core, httpkit.HandlerOptions{WriteTimeout: 300 * time.Millisecond}, httpkit.ServerOptions{MaxConns: 1})
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	var pipelined strings.Builder
	for range 64 { // 64 MiB: far more than the socket buffers hold
		fmt.Fprintf(&pipelined, "GET /v1/instance/serial/history?max_bytes=1048576 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", testToken)
	}
	_, err = io.WriteString(c, pipelined.String())
	require.NoError(t, err)
	// c is never read. Its place frees once the write deadline passes.
	require.Eventually(t, func() bool {
		s := goodGet(addr)
		return s == http.StatusOK || s == http.StatusNotFound
	}, 10*time.Second, 20*time.Millisecond, "the reader that stopped still holds the only place")
}

// TestNoCredentialsNeverPass: a request without the token, or with a
// wrong one, to any secured operation never succeeds, however it is
// dressed: upgrade headers, encoded or doubled slashes, dot segments, a
// trailing slash, other letter case, an absolute target, HEAD, several
// Authorization headers. It is refused 401, 404 or 405 (503 when the
// server is full). The operations come from the document; the instance
// exists, so a request that got through would succeed.
func TestNoCredentialsNeverPass(t *testing.T) {
	core := newFakeCore()
	srv := authServer(t, core)
	addr := srv.Listener.Addr().String()
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/v1/instance", strings.NewReader(ensureBody(minimalSpecJSON)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, _ := doRaw(t, req)
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	ops := apiOperations(t)
	bodies := map[string]string{
		"/instance":                ensureBody(minimalSpecJSON),
		"/instance/state":          `{"requested":"run"}`,
		"/instance/migrate/expect": `{"migration_id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01"}`,
	}
	creds := [][]string{
		nil,
		{"Bearer wrong"},
		{"Bearer " + testToken + "x"},
		{"bearer  " + strings.ToUpper(testToken)},
		{"Basic " + testToken},
		{"Bearer wrong", "Bearer " + testToken},
		{"Bearer " + testToken, "Bearer wrong"},
		{"Bearer " + testToken + ", Bearer wrong"},
	}
	extras := []string{
		"",
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
		"Connection: Upgrade\r\nUpgrade: " + MigrateUpgradeProtocol + "\r\n",
		"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
		"Connection: close\r\n",
		"X-Forwarded-For: 127.0.0.1\r\nX-Original-URL: /v1/instance/migrate/5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01/start\r\n",
	}
	checked := 0
	for _, o := range ops {
		reqs := o.doc.Security
		if o.op.Security != nil {
			reqs = *o.op.Security
		}
		if len(reqs) == 0 {
			continue
		}
		v := o.prefix
		p := pathParam.ReplaceAllString(o.path, "5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01")
		query := "?gen=0&timeout_ms=0&max_bytes=10"
		targets := []string{
			v + p, v + p + "/", "/" + v + p, v + "/" + p, v + "/." + p, v + "/x/.." + p,
			v + strings.Replace(p, "/", "%2F", 1), v + strings.ReplaceAll(p, "/", "%2F"),
			v + strings.Replace(p, "i", "%69", 1), strings.ToUpper(v) + p, v + strings.ToUpper(p),
			"http://x" + v + p, v + p + "%00", v + p + ";",
		}
		methods := []string{o.method, strings.ToLower(o.method)}
		if o.method == http.MethodGet {
			methods = append(methods, http.MethodHead)
		}
		for _, target := range targets {
			for _, method := range methods {
				for _, cred := range creds {
					for _, extra := range extras {
						var raw strings.Builder
						fmt.Fprintf(&raw, "%s %s%s HTTP/1.1\r\nHost: x\r\n%s", method, target, query, extra)
						for _, a := range cred {
							fmt.Fprintf(&raw, "Authorization: %s\r\n", a)
						}
						if body, ok := bodies[o.path]; ok {
							fmt.Fprintf(&raw, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
						} else {
							raw.WriteString("\r\n")
						}
						status := statusOf(t, addr, raw.String(), method)
						checked++
						if status != http.StatusUnauthorized && status != http.StatusNotFound &&
							status != http.StatusMethodNotAllowed && status != http.StatusServiceUnavailable {
							t.Fatalf("%q answered %d", raw.String(), status)
						}
					}
				}
			}
		}
	}
	require.Greater(t, checked, 1000)
}

// statusOf sends raw on a new connection and returns the answer's status.
func statusOf(t *testing.T, addr, raw, method string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, raw)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	require.NoError(t, err, "an answer to %q", raw)
	resp.Body.Close()
	return resp.StatusCode
}
