package vmmclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
)

// SpecBoard reads the board of the server's spec: nil while there is no
// instance or the spec has not come from the migration source yet.
func TestSpecBoard(t *testing.T) {
	const props = `"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"t","description":""},"state":"migrating","gen":2`
	answers := map[string]string{
		"waiting": `{` + props + `,"spec_status":"waiting_for_migration_source"}`,
		"present": `{` + props + `,"spec_status":"present","spec":{"board":{"cpus":32,"memory_mb":4096,"chipset":"i440fx"},"components":{}}}`,
	}
	for _, c := range []struct {
		answer string
		want   *sledagent.Resources
	}{
		{"none", nil},
		{"waiting", nil},
		{"present", &sledagent.Resources{CPUs: 32, MemoryMiB: 4096}},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			require.Equal(t, "/v1/instance/spec", r.URL.Path)
			body, ok := answers[c.answer]
			if !ok {
				httpkit.WriteError(w, r, httpkit.Errorf(404, "no_instance", "no instance has been created"))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(body))
		}))
		cl, err := newV1(srv.URL+"/v1", http.DefaultClient, strings.Repeat("t", 43))
		require.NoError(t, err)
		got, err := cl.SpecBoard(context.Background())
		srv.Close()
		require.NoError(t, err, c.answer)
		require.Equal(t, c.want, got, c.answer)
	}
}
