package controlplane_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/db"
	"github.com/wagglevm/waggle/controlplane/internalapi"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/pgembed"
)

// While the database is away, rings answer 503 (the agent rings again) and
// nothing is half-written; when it is back, the same control plane, not
// restarted, hears and stores again.
func TestDatabaseAwayAnswers503AndRecovers(t *testing.T) {
	if !pgembed.Available() {
		t.Skip("no PostgreSQL binaries on this host")
	}
	ctx := context.Background()
	base, err := os.MkdirTemp("", "waggle-dbaway-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o711)) // PostgreSQL's own account passes through when we are root
	pgOpts := pgembed.Options{Dir: filepath.Join(base, "pg"), Logger: quiet(), Settings: map[string]string{"fsync": "off"}}
	pg, err := pgembed.Start(ctx, pgOpts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	store, err := db.Open(ctx, pg.URL(), db.WithLogger(quiet()))
	require.NoError(t, err)
	t.Cleanup(store.Close)

	// A sled and a running VMM, as the rig has them, on this database.
	sled := &scriptedSled{started: make(chan struct{}, 100)}
	r := &rig{store: store, sled: sled}
	r.vmm, r.inst = seedRunningVmm(t, store)
	sled.set(model.VmmRunning, 2)
	cp, err := controlplane.New(cpOptions(store, func(model.Sled) (controlplane.SledClient, error) { return sled, nil }))
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = cp.Run(runCtx) }()
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	h, err := internalapi.NewHandler(cp, httpkit.HandlerOptions{Log: quiet(), Auth: httpkit.BearerToken(token)}, nil)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ring := func() int {
		req, err := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/v1/vmms/"+r.vmm.String()+"/changed", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusAccepted, ring())
	require.Eventually(t, func() bool { return r.stored(t).Runtime.State == model.VmmRunning }, 10*time.Second, 5*time.Millisecond)

	require.NoError(t, pg.Stop(ctx))
	sled.set(model.VmmRebooting, 3)
	start := time.Now()
	require.Equal(t, http.StatusServiceUnavailable, ring())
	require.Less(t, time.Since(start), 10*time.Second, "a ring hung on the missing database")
	_, err = cp.WatchOnce(ctx)
	require.ErrorIs(t, err, controlplane.ErrUnavailable)

	pg, err = pgembed.Start(ctx, pgOpts)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ring() == http.StatusAccepted }, 20*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool { return r.stored(t).Runtime.State == model.VmmRebooting }, 10*time.Second, 5*time.Millisecond)
}
