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

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// FuzzHTTPHandler sends random requests (method, path, Content-Type,
// Authorization, Content-Length, Upgrade, body) to the whole HTTP layer on
// a real loopback server over the fake core, one connection each, and
// checks every answer against the contract (see checkAnswer): a status
// that the operation declares (404 or 405 where no operation matches), no
// 5xx, every failure in the Error schema with a known code, and never a
// success for a secured operation without the token. The server must
// still answer a good request afterwards. An Authorization of "TOKEN"
// stands for the server's real token, so that inputs get past
// authentication too.
func FuzzHTTPHandler(f *testing.F) {
	ens := ensureBody(minimalSpecJSON)
	const mig = "/v1/instance/migrate/5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01/start"
	seeds := []struct {
		method, path, ct, auth, length, upgrade, body string
	}{
		{"GET", "/v1/instance", "", "TOKEN", "", "", ""},
		{"GET", "/v1/instance", "application/json", "TOKEN", "", "", ""},
		{"GET", "/v1/instance", "application/json", "", "0", "", ""},
		{"PUT", "/v1/instance", "application/json", "TOKEN", "", "", ens},
		{"PUT", "/v1/instance", "application/json", "Bearer wrong", "", "", ens},
		{"PUT", "/v1/instance", "application/json;;;=", "TOKEN", "", "", ens + " {}"},
		{"PUT", "/v1/instance", "Application/JSON; charset=utf-8", "TOKEN", "", "", ens + "]"},
		{"PUT", "/v1/instance", "text/plain", "TOKEN", "", "", ens},
		{"PUT", "/v1/instance", "application/json", "TOKEN", "3", "", ens},
		{"PUT", "/v1/instance", "application/json", "TOKEN", "99999999", "", ens},
		{"PUT", "/v1/instance", "application/json", "TOKEN", "-1", "", ens},
		{"PUT", "/v1/instance", "application/json", "TOKEN", "", "", `{"properties":`},
		{"PUT", "/v1/instance/state", "application/json", "TOKEN", "", "", `{"requested":"run"}`},
		{"PUT", "/v1/instance/state", "application/json", "TOKEN", "", "", `{"requested":"explode"}`},
		{"GET", "/v1/instance/state-monitor?gen=0", "", "TOKEN", "", "", ""},
		{"GET", "/v1/instance/state-monitor?gen=99&timeout_ms=10", "", "TOKEN", "", "", ""},
		{"GET", "/v1/instance/state-monitor?gen=99", "", "TOKEN", "", "", ""},
		{"GET", "/v1/instance/serial/history?from_start=0&most_recent=1", "", "TOKEN", "", "", ""},
		{"GET", "/v1/instance/serial", "", "TOKEN", "", "websocket", ""},
		{"GET", "/v1/instance/migration-status", "", "TOKEN", "", "", ""},
		{"PUT", "/v1/instance/migrate/expect", "application/json", "TOKEN", "", "", `{"migration_id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01"}`},
		{"GET", mig, "", "", "", MigrateUpgradeProtocol, ""},
		{"GET", mig, "", "", "", "", ""},
		{"GET", "/v1/instance/migrate/not-a-uuid/start", "", "", "", MigrateUpgradeProtocol, ""},
		{"DELETE", "/v1/instance", "", "TOKEN", "", "", ""},
		{"OPTIONS", "*", "", "", "", "", ""},
		{"GET", "/v1/../v1/instance", "", "TOKEN", "", "", ""},
		{"GET", "/v1/instance%2fspec", "", "TOKEN", "", "", ""},
		{"GET", "/v2/instance", "", "", "", "", ""},
		{"GET", "/v2/instance", "", "TOKEN", "", "", ""},
		{"PUT", "/v2/instance", "application/json", "TOKEN", "", "", `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"f"},"init":{"method":"spec","spec":` + minimalSpecJSON + `}}`},
		{"PUT", "/v2/instance", "application/json", "TOKEN", "", "", `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"f"},"init":{"method":"nope"}}`},
		{"PUT", "/v2/instance/state", "application/json", "TOKEN", "", "", `{"requested":"run"}`},
		{"GET", "/v2/instance/spec", "", "TOKEN", "", "", ""},
		{"GET", "/v2/instance/state-monitor?gen=0", "", "TOKEN", "", "", ""},
		{"GET", "/v2/instance/migrate/5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01/start", "", "", "", MigrateUpgradeProtocol, ""},
		{"POST", "/", "application/json", "", "", "", "{}"},
		{"GET", "/v1/instance", "application/json", "TOKEN", "", "", "{}{}"},
		{"GET", "/v1/instance", ";;", "TOKEN", "", "", "{}"},
		{"GET", "/v1/instance", "", "TOKEN", "2000000", "", "{"},
		{"GET", "/v1/instance", "", "TOKEN", "1000", "", "{"},
		{"GET", "/v1/instance/serial", "", "", "", "websocket", ""},
		{"GET", "/v1/instance/serial", "", "Bearer wrong", "", "websocket", "{}"},
		{"HEAD", "/v1/instance", "", "", "", "", ""},
		{"GET", "/v1/instance/", "", "", "", "", ""},
		{"GET", "//v1/instance", "", "", "", "", ""},
		{"GET", "/v1/./instance", "", "", "", "", ""},
		{"GET", "/V1/INSTANCE", "", "", "", "", ""},
		{"GET", "/v1/%69nstance", "", "", "", "", ""},
		{"GET", "http://fuzz/v1/instance", "", "", "", "", ""},
		{"PUT", "/v1/instance/migrate/expect", "application/json", "", "2000000", "", "{"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.ct, s.auth, s.length, s.upgrade, []byte(s.body))
	}

	core := newFakeCore()
	h, err := NewHandler(core, httpkit.HandlerOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Auth: httpkit.BearerToken(testToken), BodyReadTimeout: 2 * time.Second})
	require.NoError(f, err)
	// A long poll (state-monitor for a generation still to come) ends
	// within a second, as at shutdown, so that no input runs for long.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	}))
	f.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	contract := newContractChecker(f)

	f.Fuzz(func(t *testing.T, method, path, ct, auth, length, upgrade string, body []byte) {
		// Keep the request well framed: the fields are single tokens and
		// header values, so that what is fuzzed is the server, not
		// net/http's parser.
		if !token(method) || !token(path) || !headerValue(ct) || !headerValue(auth) || !headerValue(length) || !headerValue(upgrade) {
			return
		}
		if bytes.Contains(body, []byte(`"panic"`)) {
			return // the fake core panics at this name on purpose (TestPanicIsAnInternalError)
		}
		authed := auth == "TOKEN"
		if authed {
			auth = "Bearer " + testToken
		}
		var req strings.Builder
		fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: fuzz\r\n", method, path)
		header := func(name, value string) {
			if value != "" {
				fmt.Fprintf(&req, "%s: %s\r\n", name, value)
			}
		}
		header("Content-Type", ct)
		header("Authorization", auth)
		if length == "" {
			length = fmt.Sprint(len(body))
		}
		header("Content-Length", length)
		if upgrade != "" {
			header("Connection", "Upgrade")
			header("Upgrade", upgrade)
			header("Sec-WebSocket-Version", "13")
			header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		}
		req.WriteString("\r\n")
		req.Write(body)
		resp, answer := exchangeFull(t, addr, req.String(), method)
		if msg := contract.check(req.String(), authed, resp, answer); msg != "" {
			t.Fatalf("%s\nrequest: %q\nanswer: %d %q", msg, req.String(), resp.StatusCode, answer)
		}
		// The server still serves a good request.
		good := exchange(t, addr, "GET /v1/instance HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer "+testToken+"\r\n\r\n")
		if good != http.StatusOK && good != http.StatusNotFound {
			t.Fatalf("a good request answered %d after %q", good, req.String())
		}
	})
}

// exchange sends raw on a new connection, closes its sending side (a body
// shorter than its Content-Length ends there) and returns the status of
// the answer; a connection that ends with no answer fails the test.
func exchange(t *testing.T, addr, raw string) int {
	t.Helper()
	resp, _ := exchangeFull(t, addr, raw, http.MethodGet)
	return resp.StatusCode
}

// exchangeFull is exchange that returns the answer and its body (read
// for a second at most: an upgraded connection's goes on).
func exchangeFull(t *testing.T, addr, raw, method string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("no answer to %q: %v", raw, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, nil
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body
}

// knownCodes are the error codes the v1 contract lists.
var knownCodes = map[string]bool{
	CodeInvalidRequest: true, CodeNotFound: true, CodeMethodNotAllowed: true, CodeBodyTooLarge: true,
	CodeUnsupportedMedia: true, CodeUnauthorized: true, CodeRequestTimeout: true, CodeTooManyConnections: true,
	CodeInternal: true, CodeInvalidSpec: true, CodeNoInstance: true, CodeInstanceExists: true,
	CodeInvalidTransition: true, CodeNoSuchMigration: true, CodeNotUpgraded: true, CodeVMError: true,
	CodeNotExpressible: true, CodeInsufficientCapacity: true, CodeTooManyConsoles: true,
	CodeEnsureInProgress: true, CodeShuttingDown: true,
}

// contractChecker judges answers by the embedded v1 contract.
type contractChecker struct {
	versions map[string]checkedVersion // by prefix: "/v1", ...
}

// checkedVersion is one version's contract and its router.
type checkedVersion struct {
	doc    *openapi3.T
	router routers.Router
}

func newContractChecker(t testing.TB) *contractChecker {
	c := &contractChecker{versions: map[string]checkedVersion{}}
	for prefix, load := range contracts {
		doc, err := load()
		require.NoError(t, err)
		doc.Servers = nil
		router, err := legacy.NewRouter(doc)
		require.NoError(t, err)
		c.versions[prefix] = checkedVersion{doc, router}
	}
	return c
}

// operation returns the contract's operation for req and its document;
// nil for none.
func (c *contractChecker) operation(req *http.Request) (*openapi3.Operation, *openapi3.T) {
	for prefix, v := range c.versions {
		if !strings.HasPrefix(req.URL.Path, prefix+"/") {
			continue
		}
		probe := *req
		u := *req.URL
		u.Path, u.RawPath = strings.TrimPrefix(u.Path, prefix), ""
		probe.URL = &u
		route, _, err := v.router.FindRoute(&probe)
		if err != nil {
			return nil, nil
		}
		return route.Operation, v.doc
	}
	return nil, nil
}

// check returns what is wrong with the answer resp (body) to the raw
// request, "" for nothing. authed tells whether the request carried the
// server's token.
func (c *contractChecker) check(raw string, authed bool, resp *http.Response, body []byte) string {
	status := resp.StatusCode
	if status >= 500 && status != http.StatusServiceUnavailable {
		return "a 5xx"
	}
	// The only 503s are the server's own refusals, said in the Error
	// schema: every connection busy, or the server stopping.
	if status == http.StatusServiceUnavailable &&
		!strings.Contains(string(body), `"too_many_connections"`) && !strings.Contains(string(body), `"shutting_down"`) {
		return "a 503 that is not too_many_connections or shutting_down"
	}
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		// net/http refuses what it cannot parse, before the handler.
		if status != http.StatusBadRequest {
			return fmt.Sprintf("an unparsable request answered %d, not net/http's 400", status)
		}
		return ""
	}
	if req.Method == http.MethodOptions && req.RequestURI == "*" {
		return "" // net/http's own answer
	}
	op, doc := c.operation(req)
	if op == nil {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return fmt.Sprintf("no operation matches, yet %d", status)
		}
	} else {
		if op.Responses.Status(status) == nil {
			return fmt.Sprintf("%s does not declare %d", op.OperationID, status)
		}
		reqs := doc.Security
		if op.Security != nil {
			reqs = *op.Security
		}
		if len(reqs) > 0 && !authed && (status < 300 || status == http.StatusSwitchingProtocols) {
			return fmt.Sprintf("%s answered %d without the token", op.OperationID, status)
		}
	}
	if status < 400 || req.Method == http.MethodHead {
		return ""
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return "an error with Content-Type " + ct
	}
	var e httpkit.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return "an error that is not the Error schema: " + err.Error()
	}
	if !knownCodes[e.ErrorCode] {
		return "an unknown error code " + e.ErrorCode
	}
	if e.Message == "" || e.RequestID == "" {
		return "an error without message or request id"
	}
	return ""
}

// token reports whether s is non-empty and has no white space or control
// bytes (a request line's method or target).
func token(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// headerValue reports whether s can be sent as one header value.
func headerValue(s string) bool {
	if len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' && s[i] != '\t' || s[i] == 0x7f {
			return false
		}
	}
	return strings.TrimSpace(s) == s
}
