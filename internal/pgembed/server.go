package pgembed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultDatabase is the database Start creates when Options.Database is
// empty.
const DefaultDatabase = "waggle"

// Superuser is the role initdb creates and connection strings name.
const Superuser = "postgres"

// port numbers the socket file (.s.PGSQL.<port>); nothing listens on TCP,
// and each server's socket has a directory of its own, so one number
// serves all.
const port = 5432

// maxSocketPath is the longest socket path Linux accepts (sun_path holds
// 108 bytes with the terminating NUL).
const maxSocketPath = 107

// logName is the server's log file, inside the data directory.
const logName = "pgembed.log"

// ErrAlreadyRunning is the error of Start on a data directory whose server
// runs already (errors.Is).
var ErrAlreadyRunning = errors.New("a PostgreSQL server already runs on this data directory")

// Options configure Start.
type Options struct {
	// Dir is the cluster's data directory (PGDATA): made, and initdb'd,
	// when it holds no cluster. It must be empty or hold a cluster.
	Dir string
	// Logger receives what Start and Stop do; nil logs nothing.
	Logger *slog.Logger
	// BinDir is where initdb, pg_ctl and postgres are; empty looks on PATH,
	// then under /usr/lib/postgresql/*/bin.
	BinDir string
	// Database is created at start when missing; empty is DefaultDatabase.
	Database string
	// StartTimeout bounds initdb and the server's start; zero is a minute.
	StartTimeout time.Duration
	// Settings are extra server settings (postgres -c name=value), such as
	// fsync=off for tests.
	Settings map[string]string
}

// Server is a running PostgreSQL. Its methods may be called from several
// goroutines.
type Server struct {
	bins     Binaries
	user     *runAs // nil: the programs run as this process's user
	dataDir  string
	sockDir  string
	ownSock  bool // sockDir was made by Start and is removed by Stop
	database string
	logger   *slog.Logger

	mu      sync.Mutex
	stopped bool // guarded by mu
}

// Start starts a server on o.Dir (making its cluster first when there is
// none) and creates o.Database in it when missing. It fails with
// ErrNoBinaries when the host has no PostgreSQL, and with ErrAlreadyRunning
// when a server runs on o.Dir already. Its errors name the program that
// failed and end with the tail of its output or of the server's log.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("pgembed: Options.Dir is empty")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgembed: data directory %q: %w", o.Dir, err)
	}
	if strings.ContainsAny(dir, "\"$`\\\n'") {
		return nil, fmt.Errorf("pgembed: data directory %q: it has a character pg_ctl's shell command cannot carry (one of \" $ ` \\ ' or a newline)", dir)
	}
	for k := range o.Settings {
		if !validSettingName(k) {
			return nil, fmt.Errorf("pgembed: setting %q: not a setting name", k)
		}
	}
	bins, err := FindBinaries(o.BinDir)
	if err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	ru, err := pickRunAs()
	if err != nil {
		return nil, fmt.Errorf("pgembed: %w", err)
	}
	s := &Server{bins: bins, user: ru, dataDir: dir, database: o.Database, logger: o.Logger}
	if s.database == "" {
		s.database = DefaultDatabase
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	timeout := o.StartTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	if err := s.prepareDir(ctx); err != nil {
		return nil, err
	}
	if err := s.pickSocketDir(); err != nil {
		return nil, err
	}
	if err := s.start(ctx, timeout, o.Settings); err != nil {
		s.removeSocketDir()
		return nil, err
	}
	if err := s.ensureDatabase(ctx, s.database); err != nil {
		_ = s.Stop(context.Background())
		return nil, err
	}
	s.logger.Info("postgres started", "dir", s.dataDir, "socket_dir", s.sockDir, "database", s.database)
	return s, nil
}

// prepareDir makes the data directory, gives it to the server's user and
// makes a cluster in it when it holds none.
func (s *Server) prepareDir(ctx context.Context) error {
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return fmt.Errorf("pgembed: make data directory: %w", err)
	}
	if err := s.user.canReach(s.dataDir); err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	if err := s.user.chownTree(s.dataDir); err != nil {
		return fmt.Errorf("pgembed: give data directory %s to user %s: %w", s.dataDir, s.user.name, err)
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	entries, err := os.ReadDir(s.dataDir)
	if err != nil {
		return fmt.Errorf("pgembed: read data directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("pgembed: data directory %s holds files but no PostgreSQL cluster (no PG_VERSION): refusing to initdb over them", s.dataDir)
	}
	s.logger.Info("postgres: initdb", "dir", s.dataDir)
	out, err := s.run(ctx, s.bins.Initdb, "-D", s.dataDir, "-U", Superuser, "-E", "UTF8", "--no-locale",
		"--auth-local=trust", "--auth-host=reject", "--no-instructions")
	if err != nil {
		return fmt.Errorf("pgembed: %s -D %s: %w\n%s", s.bins.Initdb, s.dataDir, err, tail(out, 20))
	}
	return nil
}

// pickSocketDir uses the data directory for the socket when its path is
// short enough and plain, else a fresh directory under the temporary
// directory, private to the server's user.
func (s *Server) pickSocketDir() error {
	sock := filepath.Join(s.dataDir, ".s.PGSQL."+strconv.Itoa(port))
	if len(sock) <= maxSocketPath && !strings.ContainsAny(s.dataDir, ", \t") {
		s.sockDir = s.dataDir
		return nil
	}
	d, err := os.MkdirTemp("", "pgembed-")
	if err != nil {
		return fmt.Errorf("pgembed: make a socket directory (the data directory's path is too long for a socket): %w", err)
	}
	if err := s.user.chownTree(d); err != nil {
		os.RemoveAll(d)
		return fmt.Errorf("pgembed: give socket directory %s to user %s: %w", d, s.user.name, err)
	}
	s.sockDir, s.ownSock = d, true
	return nil
}

func (s *Server) removeSocketDir() {
	if s.ownSock {
		os.RemoveAll(s.sockDir)
	}
}

// start runs pg_ctl start, waiting for the server to accept connections.
func (s *Server) start(ctx context.Context, timeout time.Duration, settings map[string]string) error {
	if pid, running := s.running(ctx); running {
		return fmt.Errorf("pgembed: %s (pid %d): %w", s.dataDir, pid, ErrAlreadyRunning)
	}
	opts := []string{"-c", "listen_addresses=", "-c", "unix_socket_directories=" + s.sockDir,
		"-c", "unix_socket_permissions=0700", "-c", "port=" + strconv.Itoa(port)}
	for k, v := range settings {
		opts = append(opts, "-c", k+"="+v)
	}
	logFile := filepath.Join(s.dataDir, logName)
	secs := strconv.Itoa(int(timeout.Seconds()) + 1)
	args := []string{"start", "-D", s.dataDir, "-l", logFile, "-w", "-t", secs, "-o", shellJoin(opts)}
	// A postmaster killed hard may leave children that hold its shared
	// memory for a moment; the server refuses to start until they are gone.
	for attempt := 1; ; attempt++ {
		out, err := s.run(ctx, s.bins.PgCtl, args...)
		if err == nil {
			return nil
		}
		log := readTail(logFile, 4096)
		if strings.Contains(log, "pre-existing shared memory block") && ctx.Err() == nil && attempt < 50 {
			s.logger.Info("postgres: the last server's processes still hold its memory; trying again", "dir", s.dataDir)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if ctx.Err() != nil {
			// pg_ctl was stopped with its context, and the server may come
			// up all the same: leave none behind. (Only then: a start that
			// lost a race for the directory must not stop the winner.)
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, up := s.running(cctx); up {
				_, _ = s.run(cctx, s.bins.PgCtl, "stop", "-D", s.dataDir, "-m", "immediate", "-w", "-t", "20")
			}
			cancel()
		}
		return fmt.Errorf("pgembed: %s start -D %s: %w\n%s\nserver log %s:\n%s", s.bins.PgCtl, s.dataDir, err,
			tail(out, 10), logFile, tail(log, 20))
	}
}

// running asks pg_ctl status whether a server runs on the data directory.
func (s *Server) running(ctx context.Context) (int, bool) {
	out, err := s.run(ctx, s.bins.PgCtl, "status", "-D", s.dataDir)
	if err != nil {
		return 0, false
	}
	// "pg_ctl: server is running (PID: 1234)"
	_, after, _ := strings.Cut(out, "PID: ")
	pid, _ := strconv.Atoi(strings.TrimRight(strings.SplitN(after, ")", 2)[0], " "))
	return pid, true
}

// ensureDatabase creates name when it does not exist.
func (s *Server) ensureDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.DatabaseURL("postgres"))
	if err != nil {
		return fmt.Errorf("pgembed: connect to create database %q: %w", name, err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("pgembed: look for database %q: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: made meanwhile
		err = nil
	}
	if err != nil {
		return fmt.Errorf("pgembed: create database %q: %w", name, err)
	}
	return nil
}

// Stop stops the server (pg_ctl stop -m fast, then -m immediate when the
// fast stop did not finish within ctx's time or 30 seconds) and removes the
// socket directory Start made, if any. Stopping a stopped server does
// nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	fast, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := s.run(fast, s.bins.PgCtl, "stop", "-D", s.dataDir, "-m", "fast", "-w", "-t", "30")
	if err != nil {
		s.logger.Warn("postgres: fast stop failed; stopping immediately", "dir", s.dataDir, "err", err)
		imm, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out2, err2 := s.run(imm, s.bins.PgCtl, "stop", "-D", s.dataDir, "-m", "immediate", "-w", "-t", "20")
		if err2 != nil {
			return fmt.Errorf("pgembed: %s stop -D %s: %w\n%s\n%s", s.bins.PgCtl, s.dataDir, err2, tail(out, 5), tail(out2, 5))
		}
	}
	s.stopped = true
	s.removeSocketDir()
	s.logger.Info("postgres stopped", "dir", s.dataDir)
	return nil
}

// DataDir is the cluster's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// SocketDir is the directory of the server's unix socket.
func (s *Server) SocketDir() string { return s.sockDir }

// LogFile is the server's log.
func (s *Server) LogFile() string { return filepath.Join(s.dataDir, logName) }

// URL is the connection string (a postgres:// URL pgx parses) of the
// database Start created, as the superuser, over the unix socket.
func (s *Server) URL() string { return s.DatabaseURL(s.database) }

// ConnString is URL: the connection string of the database Start created.
func (s *Server) ConnString() string { return s.URL() }

// DatabaseURL is the connection string of database name on this server.
func (s *Server) DatabaseURL(name string) string {
	q := url.Values{"host": {s.sockDir}, "port": {strconv.Itoa(port)}, "sslmode": {"disable"}}
	u := url.URL{Scheme: "postgres", User: url.User(Superuser), Host: "", Path: "/" + name, RawQuery: q.Encode()}
	return u.String()
}

// run runs a server program as the server's user, in a plain environment,
// and returns its combined output.
func (s *Server) run(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + filepath.Dir(bin) + ":/usr/bin:/bin", "LC_ALL=C", "LANG=C"}
	cmd.SysProcAttr = s.user.sysProcAttr()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// pg_ctl start leaves the server running; should it keep our pipe
	// open, stop waiting for it after a moment.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

// readTail returns at most the last n bytes of a file ("" when it cannot be
// read).
func readTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(b, off)
	return string(b)
}

// shellJoin quotes each word for /bin/sh (pg_ctl passes -o through a
// shell).
func shellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// validSettingName says whether k looks like a server setting name.
func validSettingName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if !(c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// StopDir stops, immediately, a server left running on data directory dir
// by a process that can no longer stop it (a test binary killed at its
// timeout). It does nothing when no server runs there.
func StopDir(ctx context.Context, dir string) error {
	bins, err := FindBinaries("")
	if err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	ru, err := pickRunAs()
	if err != nil {
		return fmt.Errorf("pgembed: %w", err)
	}
	s := &Server{bins: bins, user: ru, dataDir: dir}
	if _, running := s.running(ctx); !running {
		return nil
	}
	out, err := s.run(ctx, bins.PgCtl, "stop", "-D", dir, "-m", "immediate", "-w", "-t", "20")
	if err != nil {
		return fmt.Errorf("pgembed: %s stop -D %s: %w\n%s", bins.PgCtl, dir, err, tail(out, 5))
	}
	return nil
}
