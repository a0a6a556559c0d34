package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEnsureWhileShuttingDown: once the runtime is closing, an ensure is
// refused with 503 shutting_down (not a 500) and builds nothing.
func TestEnsureWhileShuttingDown(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.rt.Close()
	_, _, err := g.rt.Ensure(context.Background(), specRequest(t, "late"))
	require.ErrorIs(t, err, ErrShuttingDown)
	require.Zero(t, g.vms.count(), "no VM was built")

	r, err := g.c.InstanceEnsureWithBodyWithResponse(context.Background(), "application/json",
		strings.NewReader(ensureBody(`{"board":{"cpus":1,"memory_mb":32,"chipset":"i440fx"},"components":{}}`)))
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, r.StatusCode(), string(r.Body))
	require.Contains(t, string(r.Body), `"shutting_down"`)
}
