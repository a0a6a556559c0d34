package db

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/internal/pgembed"
	"github.com/wagglevm/waggle/internal/pgembed/pgtest"
)

func TestOpenAppliesTheSchemaOnceAndAgain(t *testing.T) {
	ctx := ctxT(t)
	url := pgtest.Database(t)
	d, err := Open(ctx, url)
	require.NoError(t, err)
	var v int64
	require.NoError(t, d.Pool().QueryRow(ctx, "SELECT max(version_id) FROM goose_db_version").Scan(&v))
	require.Equal(t, SchemaVersion(), v)
	require.GreaterOrEqual(t, v, int64(1))
	d.Close()

	d2, err := Open(ctx, url)
	require.NoError(t, err, "a second open finds nothing to apply")
	d2.Close()
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	ctx := ctxT(t)
	url := pgtest.Database(t)
	d, err := Open(ctx, url)
	require.NoError(t, err)
	_, err = d.Pool().Exec(ctx, "INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, true)", SchemaVersion()+1)
	require.NoError(t, err)
	d.Close()

	_, err = Open(ctx, url)
	require.ErrorIs(t, err, ErrSchemaNewer)
	require.Contains(t, err.Error(), "newer control plane")
}

func TestOpenKeepsPasswordsOutOfErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "nothing-here")
	_, err := Open(ctx, "postgres://waggle:s3cr3t-pw@/waggle?host="+missing+"&connect_timeout=2")
	require.Error(t, err)
	require.ErrorIs(t, err, controlplane.ErrUnavailable)
	require.NotContains(t, err.Error(), "s3cr3t-pw")

	for _, bad := range []string{"postgres://waggle:s3cr3t-pw@host:notaport/waggle", "host=x password=s3cr3t-pw port=nope"} {
		_, err = Open(ctx, bad)
		require.Error(t, err)
		require.NotContains(t, err.Error(), "s3cr3t-pw", bad)
	}
}

// The database goes away and comes back: the store answers
// ErrUnavailable meanwhile, and works again without being reopened.
func TestUnavailableWhileTheDatabaseIsDownThenRecovers(t *testing.T) {
	if !pgembed.Available() {
		t.Skipf("skipped: %v", pgembed.ErrNoBinaries)
	}
	ctx := ctxT(t)
	dir, err := os.MkdirTemp("", "db-down-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := pgembed.Options{Dir: filepath.Join(dir, "data"), Settings: map[string]string{"fsync": "off"}}
	srv, err := pgembed.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	d, err := Open(ctx, srv.URL())
	require.NoError(t, err)
	defer d.Close()
	f := &fixture{d: d, ctx: ctx}
	s := f.addSled(t, capacity16)

	require.NoError(t, srv.Stop(ctx))
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = d.Sled(short, s.ID)
	require.ErrorIs(t, err, controlplane.ErrUnavailable)
	_, err = d.ApplySledVmmState(short, uuid.New(), "", sledState(running(2)), at(2))
	require.ErrorIs(t, err, controlplane.ErrUnavailable)

	srv2, err := pgembed.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv2.Stop(context.Background()) })
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := d.Sled(ctx, s.ID)
		if assert.NoError(c, err) {
			assert.Equal(c, s.ID, got.ID)
		}
	}, 30*time.Second, 50*time.Millisecond)
}

// Two control planes starting at once on a fresh database: goose's lock
// table lets one migrate while the other waits; both open.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	ctx := ctxT(t)
	url := pgtest.Database(t)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			d, err := Open(ctx, url)
			if err == nil {
				d.Close()
			}
			errs <- err
		}()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
	d, err := Open(ctx, url)
	require.NoError(t, err)
	defer d.Close()
	var applied int
	require.NoError(t, d.Pool().QueryRow(ctx, "SELECT count(*) FROM goose_db_version WHERE version_id = $1", SchemaVersion()).Scan(&applied))
	require.Equal(t, 1, applied)
}
