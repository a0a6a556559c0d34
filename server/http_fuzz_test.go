package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// FuzzHTTPHandler sends random requests (method, path, Content-Type,
// Authorization, Content-Length, Upgrade, body) to the whole HTTP layer on
// a real loopback server over the fake core, one connection each, and
// checks that each is answered with no 5xx and no panic, and that the
// server still answers a good request afterwards. An Authorization of
// "TOKEN" stands for the server's real token, so that inputs get past
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
		{"POST", "/", "application/json", "", "", "", "{}"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.ct, s.auth, s.length, s.upgrade, []byte(s.body))
	}

	core := newFakeCore()
	h, err := NewHandler(core, httpkit.HandlerOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Auth: httpkit.BearerToken(testToken), BodyReadTimeout: 2 * time.Second})
	require.NoError(f, err)
	srv := httptest.NewServer(h)
	f.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

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
		if auth == "TOKEN" {
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
		status := exchange(t, addr, req.String())
		if status >= 500 {
			t.Fatalf("%d for %q", status, req.String())
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
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to %q: %v", raw, err)
	}
	resp.Body.Close()
	return resp.StatusCode
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
