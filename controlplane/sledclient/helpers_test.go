package sledclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

const testToken = "sled-token-3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// testTimeout bounds every wait of these tests.
const testTimeout = 10 * time.Second

// fakeAgent is an HTTP server that answers as the test says and records
// what it was sent.
type fakeAgent struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []*http.Request
}

func newAgent(t *testing.T, answer http.HandlerFunc) *fakeAgent {
	t.Helper()
	f := &fakeAgent{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		f.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAgent) addr() string { return f.srv.Listener.Addr().String() }

func (f *fakeAgent) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

// jsonAnswer answers status with body as JSON.
func jsonAnswer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// dialSled returns the client of the agent at addr, speaking v1, for
// sled id.
func dialSled(t *testing.T, id uuid.UUID, addr string, opts ...Option) controlplane.SledClient {
	t.Helper()
	c, err := New(func(string) (string, error) { return testToken, nil }, opts...)(
		model.Sled{ID: id, Address: addr, APIVersions: []string{"v1"}})
	require.NoError(t, err)
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// noToken fails when err holds the token.
func noToken(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		require.False(t, strings.Contains(err.Error(), testToken), "the error holds the token: %v", err)
	}
}
