// Package pgtest gives a package's tests real PostgreSQL: one server per
// test binary, started on first use and shared by every test, and a fresh,
// empty database for each caller.
//
// A package that uses it runs its tests through Main, which stops the
// server when they are done:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		url := pgtest.Database(t) // a new database, dropped when t ends
//		...
//	}
//
// Why Main and not a cleanup of the first test: the server outlives every
// single test, and only TestMain sees the end of them all. Database fails
// the test when Main is not in use, rather than leak a server.
//
// A test binary killed before Main returns (go test's -timeout) leaves its
// server behind; the next binary that starts one stops such orphans first
// (their directories name the process that made them, and a directory
// whose process is gone is an orphan's).
//
// Tests skip, with the reason, only where the host has no PostgreSQL
// binaries at all; a server that is there but does not start fails them.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wagglevm/waggle/internal/pgembed"
)

// dirPrefix starts the name of every shared server's directory, followed
// by the pid of the test binary that made it.
const dirPrefix = "waggle-pgtest-"

// sweepRoot is where the shared servers' directories are made and their
// orphans looked for; tests of this package point it elsewhere.
var sweepRoot = os.TempDir()

// settings trade durability for speed: a test's database dies with it.
var settings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "300",
}

var (
	mu      sync.Mutex
	inMain  bool            // guarded by mu; Main runs the tests
	server  *pgembed.Server // guarded by mu; nil until first use
	admin   *pgxpool.Pool   // guarded by mu; connected to server's postgres database
	baseDir string          // guarded by mu; removed at the end
	failed  error           // guarded by mu; why the server did not start
	counter int             // guarded by mu; numbers the databases
	sigs    chan os.Signal  // guarded by mu
)

// Main runs m's tests, then stops the shared server (when one started) and
// removes its directory, and exits with the tests' code. An interrupt or
// termination signal stops the server too.
func Main(m *testing.M) {
	mu.Lock()
	inMain = true
	sigs = make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	mu.Unlock()
	go func() {
		if _, ok := <-sigs; ok {
			shutdown()
			os.Exit(1)
		}
	}()
	code := m.Run()
	signal.Stop(sigs)
	shutdown()
	os.Exit(code)
}

// shutdown stops the shared server and removes its directory.
func shutdown() {
	mu.Lock()
	defer mu.Unlock()
	if admin != nil {
		admin.Close()
		admin = nil
	}
	if server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := server.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		server = nil
	}
	if baseDir != "" {
		os.RemoveAll(baseDir)
		baseDir = ""
	}
}

// Database returns the connection string of a new, empty database on the
// shared server, dropped (with any connection still open to it) when t
// ends. The first call starts the server.
func Database(t testing.TB) string {
	t.Helper()
	if !pgembed.Available() {
		t.Skipf("pgtest: skipped: %v", pgembed.ErrNoBinaries)
	}
	pool, srv, name, err := newDatabase(t.Name())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return srv.DatabaseURL(name)
}

// newDatabase starts the server when none runs and creates a database
// named after the test.
func newDatabase(testName string) (*pgxpool.Pool, *pgembed.Server, string, error) {
	mu.Lock()
	defer mu.Unlock()
	if !inMain {
		return nil, nil, "", errors.New("the package's tests must run through pgtest.Main: add func TestMain(m *testing.M) { pgtest.Main(m) }")
	}
	if failed != nil {
		return nil, nil, "", failed
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if server == nil {
		if err := startLocked(ctx); err != nil {
			failed = fmt.Errorf("start the shared server: %w", err)
			return nil, nil, "", failed
		}
	}
	counter++
	name := dbName(testName, counter)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, nil, "", fmt.Errorf("create database %s: %w", name, err)
	}
	return admin, server, name, nil
}

// startLocked stops orphans of killed test binaries, then starts the
// shared server in a directory of its own.
func startLocked(ctx context.Context) error {
	sweepOrphans(ctx)
	d, err := os.MkdirTemp(sweepRoot, dirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return err
	}
	// The server may run as another user (this process is root): let it
	// through.
	if err := os.Chmod(d, 0o755); err != nil {
		os.RemoveAll(d)
		return err
	}
	s, err := pgembed.Start(ctx, pgembed.Options{Dir: filepath.Join(d, "data"), Database: "pgtest", Settings: settings})
	if err != nil {
		os.RemoveAll(d)
		return err
	}
	pool, err := pgxpool.New(ctx, s.DatabaseURL("postgres"))
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		_ = s.Stop(ctx)
		os.RemoveAll(d)
		return fmt.Errorf("connect to the shared server: %w", err)
	}
	server, admin, baseDir = s, pool, d
	return nil
}

// sweepOrphans stops the servers of test binaries that are gone and
// removes their directories.
func sweepOrphans(ctx context.Context) {
	dirs, _ := filepath.Glob(filepath.Join(sweepRoot, dirPrefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), dirPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // alive (or not ours to judge)
		}
		if err := pgembed.StopDir(ctx, filepath.Join(d, "data")); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: orphan %s: %v\n", d, err)
			continue
		}
		os.RemoveAll(d)
	}
}

// dbName makes a database name from a test's name and a number: lower
// case letters, digits and underscores, within PostgreSQL's 63 bytes.
func dbName(testName string, n int) string {
	var b strings.Builder
	for _, c := range strings.ToLower(testName) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 40 {
		s = s[:40]
	}
	return fmt.Sprintf("t_%s_%d", s, n)
}
