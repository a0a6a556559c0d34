package pgembed

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// needBinaries skips t when the host has no PostgreSQL at all.
func needBinaries(t *testing.T) {
	t.Helper()
	if _, err := FindBinaries(""); err != nil {
		t.Skipf("pgembed: skipped: %v", err)
	}
}

// testDir returns a fresh directory that the server's user can reach (a
// t.TempDir is 0700 and root's, which an unprivileged server cannot pass).
func testDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "pgembed-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(d, 0o755))
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var fastSettings = map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}

func startT(t *testing.T, ctx context.Context, dir string) *Server {
	t.Helper()
	s, err := Start(ctx, Options{Dir: dir, Settings: fastSettings})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func exec1(t *testing.T, ctx context.Context, url, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	require.NoError(t, err)
}

func queryInt(t *testing.T, ctx context.Context, url, sql string) int {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&n))
	return n
}

func TestStartConnectStopRestartKeepsData(t *testing.T) {
	needBinaries(t)
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "data")
	s := startT(t, ctx, dir)
	require.Contains(t, s.URL(), "/waggle?")
	require.NotContains(t, s.URL(), "localhost")

	exec1(t, ctx, s.URL(), "CREATE TABLE kept (n INT8)")
	exec1(t, ctx, s.URL(), "INSERT INTO kept VALUES (42)")
	var enc, listen string
	conn, err := pgx.Connect(ctx, s.URL())
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, "SHOW server_encoding").Scan(&enc))
	require.NoError(t, conn.QueryRow(ctx, "SHOW listen_addresses").Scan(&listen))
	conn.Close(ctx)
	require.Equal(t, "UTF8", enc)
	require.Equal(t, "", listen, "no TCP listener")

	require.NoError(t, s.Stop(ctx))
	require.NoError(t, s.Stop(ctx), "a second Stop does nothing")
	_, err = pgx.Connect(ctx, s.URL())
	require.Error(t, err, "stopped server still answers")

	s2 := startT(t, ctx, dir)
	require.Equal(t, 42, queryInt(t, ctx, s2.URL(), "SELECT n FROM kept"))
}

func TestStartTwiceOnOneDirIsRefused(t *testing.T) {
	needBinaries(t)
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "data")
	s := startT(t, ctx, dir)
	_, err := Start(ctx, Options{Dir: dir})
	require.ErrorIs(t, err, ErrAlreadyRunning)
	require.Contains(t, err.Error(), dir)
	// The first is untouched.
	require.Equal(t, 1, queryInt(t, ctx, s.URL(), "SELECT 1"))
}

func TestRestartAfterKill9(t *testing.T) {
	needBinaries(t)
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "data")
	// Default settings: synchronous_commit=off would lose the last
	// commits to the kill.
	s, err := Start(ctx, Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	exec1(t, ctx, s.URL(), "CREATE TABLE kept (n INT8)")
	exec1(t, ctx, s.URL(), "INSERT INTO kept VALUES (7)")

	pidFile := filepath.Join(dir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 30*time.Second, 20*time.Millisecond)
	_, err = os.Stat(pidFile)
	require.NoError(t, err, "a killed postmaster leaves its pid file")

	s2, err := Start(ctx, Options{Dir: dir})
	require.NoError(t, err, "a stale postmaster.pid must not block a start")
	t.Cleanup(func() { _ = s2.Stop(context.Background()) })
	require.Equal(t, 7, queryInt(t, ctx, s2.URL(), "SELECT n FROM kept"))
}

func TestLongDirUsesShortSocketDir(t *testing.T) {
	needBinaries(t)
	ctx := testCtx(t)
	dir := testDir(t)
	for len(dir) < 120 {
		dir = filepath.Join(dir, "a-rather-long-directory-name")
	}
	require.NoError(t, os.MkdirAll(filepath.Dir(dir), 0o755))
	for p := filepath.Dir(dir); strings.HasPrefix(p, os.TempDir()+"/pgembed-test-"); p = filepath.Dir(p) {
		require.NoError(t, os.Chmod(p, 0o755))
	}
	s := startT(t, ctx, dir)
	require.NotEqual(t, dir, s.SocketDir())
	require.LessOrEqual(t, len(filepath.Join(s.SocketDir(), ".s.PGSQL.5432")), maxSocketPath)
	require.Equal(t, 1, queryInt(t, ctx, s.URL(), "SELECT 1"))
	sock := s.SocketDir()
	require.NoError(t, s.Stop(ctx))
	_, err := os.Stat(sock)
	require.True(t, os.IsNotExist(err), "the short socket directory is removed at Stop")
}

func TestMissingBinariesAreNamed(t *testing.T) {
	empty := t.TempDir()
	_, err := Start(context.Background(), Options{Dir: filepath.Join(empty, "data"), BinDir: empty})
	require.Error(t, err)
	require.Contains(t, err.Error(), "initdb")
	require.Contains(t, err.Error(), empty)

	old := debianGlob
	debianGlob = filepath.Join(empty, "*", "bin")
	t.Cleanup(func() { debianGlob = old })
	t.Setenv("PATH", empty)
	_, err = Start(context.Background(), Options{Dir: filepath.Join(empty, "data")})
	require.ErrorIs(t, err, ErrNoBinaries)
	require.False(t, Available())
}

func TestDirWithForeignFilesIsRefused(t *testing.T) {
	needBinaries(t)
	dir := testDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o644))
	_, err := Start(testCtx(t), Options{Dir: dir})
	require.Error(t, err)
	require.Contains(t, err.Error(), "no PG_VERSION")
	_, err = os.Stat(filepath.Join(dir, "precious"))
	require.NoError(t, err)
}

func TestBadOptions(t *testing.T) {
	_, err := Start(context.Background(), Options{})
	require.ErrorContains(t, err, "Dir is empty")
	_, err = Start(context.Background(), Options{Dir: "/tmp/x$y"})
	require.ErrorContains(t, err, "character")
	_, err = Start(context.Background(), Options{Dir: "/tmp/x", Settings: map[string]string{"a b": "1"}})
	require.ErrorContains(t, err, `setting "a b"`)
}

func TestUnreachableDirIsNamedWhenRoot(t *testing.T) {
	needBinaries(t)
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	closed := t.TempDir() // 0700, root's
	_, err := Start(testCtx(t), Options{Dir: filepath.Join(closed, "data")})
	require.Error(t, err)
	require.Contains(t, err.Error(), "does not let it reach")
	require.False(t, errors.Is(err, ErrNoBinaries))
}

// A server that will not start: the error names pg_ctl and carries the
// server log's own words.
func TestStartFailureNamesTheProgramAndItsLog(t *testing.T) {
	needBinaries(t)
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "data")
	_, err := Start(ctx, Options{Dir: dir, Settings: map[string]string{"shared_buffers": "lots"}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "pg_ctl start -D "+dir)
	require.Contains(t, err.Error(), `invalid value for parameter "shared_buffers"`)
	// The cluster was made; a start with sound settings works.
	s := startT(t, ctx, dir)
	require.Equal(t, 1, queryInt(t, ctx, s.URL(), "SELECT 1"))
}
