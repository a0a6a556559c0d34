package pgtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/pgembed"
)

func TestMain(m *testing.M) { Main(m) }

func TestEachCallerGetsAFreshDatabaseOnOneServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := Database(t), Database(t)
	require.NotEqual(t, a, b)

	ca, err := pgx.Connect(ctx, a)
	require.NoError(t, err)
	defer ca.Close(ctx)
	cb, err := pgx.Connect(ctx, b)
	require.NoError(t, err)
	defer cb.Close(ctx)

	_, err = ca.Exec(ctx, "CREATE TABLE only_in_a (n INT8)")
	require.NoError(t, err)
	var n int
	require.NoError(t, cb.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n))
	require.Zero(t, n, "a table of one database shows in another")

	var pa, pb int
	require.NoError(t, ca.QueryRow(ctx, "SELECT setting::int FROM pg_settings WHERE name = 'port'").Scan(&pa))
	require.NoError(t, cb.QueryRow(ctx, "SELECT setting::int FROM pg_settings WHERE name = 'port'").Scan(&pb))
	require.Equal(t, pa, pb)
	mu.Lock()
	require.NotNil(t, server, "one server, shared")
	mu.Unlock()
}

func TestDatabaseIsDroppedWhenItsTestEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var name string
	t.Run("inner", func(t *testing.T) {
		url := Database(t)
		cfg, err := pgx.ParseConfig(url)
		require.NoError(t, err)
		name = cfg.Database
		// A connection left open does not stop the drop.
		c, err := pgx.Connect(ctx, url)
		require.NoError(t, err)
		_ = c
	})
	mu.Lock()
	pool := admin
	mu.Unlock()
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n))
	require.Zero(t, n, "database %s outlived its test", name)
}

func TestDBName(t *testing.T) {
	long := dbName("TestA/Very Long-Name"+strings.Repeat("x", 100), 12345)
	require.LessOrEqual(t, len(long), 63)
	require.Regexp(t, `^t_[a-z0-9_]+_12345$`, long)
}

// A server left behind by a test binary that is gone is stopped and its
// directory removed by the next one's sweep; a live one's is left alone.
func TestSweepStopsOrphansOfDeadBinaries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !pgembed.Available() {
		t.Skipf("skipped: %v", pgembed.ErrNoBinaries)
	}
	// A root of its own: other test binaries sweep the shared one, and
	// would take this test's orphan.
	root, err := os.MkdirTemp("", "pgtest-sweep-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	require.NoError(t, os.Chmod(root, 0o755))
	old := sweepRoot
	sweepRoot = root
	t.Cleanup(func() { sweepRoot = old })

	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	deadPid := dead.Process.Pid
	orphan, err := os.MkdirTemp(root, dirPrefix+strconv.Itoa(deadPid)+"-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(orphan) })
	require.NoError(t, os.Chmod(orphan, 0o755))
	srv, err := pgembed.Start(ctx, pgembed.Options{Dir: filepath.Join(orphan, "data")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	// A directory of a live process (this one's parent) stays.
	alive, err := os.MkdirTemp(root, dirPrefix+strconv.Itoa(os.Getppid())+"-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(alive) })

	sweepOrphans(ctx)
	_, err = os.Stat(orphan)
	require.True(t, os.IsNotExist(err), "the orphan's directory is still there")
	_, err = pgx.Connect(ctx, srv.URL())
	require.Error(t, err, "the orphan's server still answers")
	_, err = os.Stat(alive)
	require.NoError(t, err)
}
