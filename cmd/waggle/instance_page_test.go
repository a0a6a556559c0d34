package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	cpapi "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/pgembed"
)

// A real control plane process (on the PostgreSQL it embeds) holding 250
// instances answers them in pages of 100; `waggle instance list` follows
// all three pages and prints each instance once, by name, in its table and
// in its JSON alike (one list, no token).
func TestInstanceListFollowsEveryPage(t *testing.T) {
	if !pgembed.Available() {
		t.Skip("no PostgreSQL binaries on this host (make deps installs them)")
	}
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("WAGGLE_CONTROL_PLANE_TOKEN_FILE", "")
	base, err := os.MkdirTemp("", "waggle-cp-pages-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	tokenFile := filepath.Join(base, "cp-token")
	require.NoError(t, httpkit.WriteTokenFile(tokenFile, token))
	require.NoError(t, os.Chmod(base, 0o711))
	_, _, _, api := startDaemon(t, []string{"control-plane", "-listen", "127.0.0.1:0", "-api-listen", "127.0.0.1:0",
		"-auth-token-file", tokenFile, "-data-dir", filepath.Join(base, "cp"), "-sled-agent-token-file", testTokenFile},
		[]string{"DATABASE_URL="}, cpAPIListening)
	apiTokenPath, err := httpkit.DefaultTokenPath(api)
	require.NoError(t, err)
	apiToken, err := httpkit.ReadTokenFile(apiTokenPath)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := cpapi.NewClientWithResponses("http://"+api+"/v1", cpapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+apiToken)
		return nil
	}))
	require.NoError(t, err)
	raw, err := os.ReadFile("../../examples/ticker.json")
	require.NoError(t, err)
	var spec map[string]any
	require.NoError(t, json.Unmarshal(raw, &spec))
	const n = 250
	var want []string
	for i := range n {
		// Created out of order, so the list's order is the control plane's.
		name := fmt.Sprintf("vm-%03d", (i*7)%n)
		r, err := cl.InstanceCreateWithResponse(ctx, cpapi.InstanceCreate{Name: name,
			Spec: cpapi.SpecEnvelope{SpecVersion: "vmm-server/v1", Spec: spec}})
		require.NoError(t, err)
		require.Equal(t, 201, r.StatusCode(), "%s", r.Body)
		want = append(want, name)
	}
	slices.Sort(want)

	// A proxy in front of the API records each list request's query.
	target, err := url.Parse("http://" + api)
	require.NoError(t, err)
	var (
		mu      sync.Mutex
		queries []url.Values
	)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/instances" {
			mu.Lock()
			queries = append(queries, r.URL.Query())
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	addr := strings.TrimPrefix(front.URL, "http://")
	listed := func() []url.Values {
		mu.Lock()
		defer mu.Unlock()
		out := queries
		queries = nil
		return out
	}

	res := cli(t, "instance", "list", "-server", addr, "-token-file", apiTokenPath, "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	var list cpapi.InstanceList
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &list))
	var got []string
	for _, in := range list.Instances {
		got = append(got, in.Name)
	}
	require.Equal(t, want, got, "every instance exactly once, by name")
	require.Nil(t, list.NextPageToken, "the CLI's list is whole: no token")
	qs := listed()
	require.Len(t, qs, 3, "250 instances are 3 pages of 100")
	require.False(t, qs[0].Has("page_token"), "the first page is asked without a token")
	require.NotEmpty(t, qs[1].Get("page_token"))
	require.NotEmpty(t, qs[2].Get("page_token"))
	require.NotEqual(t, qs[1].Get("page_token"), qs[2].Get("page_token"))

	res = cli(t, "instance", "list", "-server", addr, "-token-file", apiTokenPath)
	require.Equal(t, 0, res.code, res.stderr)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, n+1, "a header and a line an instance")
	for i, line := range lines[1:] {
		require.Equal(t, want[i], strings.Fields(line)[0])
	}
	require.Len(t, listed(), 3)
}

// A list whose pages never end (a control plane that answers the same
// token again) is an error, not a loop; an error on a later page is the
// command's error.
func TestListPagesThatDoNotEnd(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/instances": func(w http.ResponseWriter, r *http.Request) {
			next := "again"
			writeJSON(w, 200, cpapi.InstanceList{Instances: []cpapi.Instance{cpInstance(cpapi.InstanceStateRunning)}, NextPageToken: &next})
		},
		"GET /v1/sleds": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("page_token") {
				writeError(w, 400, "invalid_request", "query parameter page_token: is not a page token")
				return
			}
			next := "more"
			writeJSON(w, 200, cpapi.SledList{Sleds: []cpapi.Sled{}, NextPageToken: &next})
		},
	})
	res := cli(t, "instance", "list", "-server", f.addr)
	require.Equal(t, 1, res.code, res.stdout)
	require.Contains(t, res.stderr, "does not end")
	res = cli(t, "sled", "list", "-server", f.addr)
	require.Equal(t, 1, res.code, res.stdout)
	require.Contains(t, res.stderr, "page_token")
	require.Empty(t, res.stdout, "no partial list is printed")
}
