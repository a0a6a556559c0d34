package db

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/wagglevm/waggle/controlplane"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchemaNewer is the error of Open on a database whose schema a newer
// control plane has migrated past what this one knows (errors.Is).
var ErrSchemaNewer = errors.New("the database schema is newer than this control plane knows")

// DB is the control plane's Store on PostgreSQL. Its methods may be called
// from many goroutines.
type DB struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

var _ controlplane.Store = (*DB)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	log *slog.Logger
}

// WithLogger logs what Open does (the migrations it applies) to l.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Open connects to the database at url (a pgx connection string), applies
// the schema migrations it lacks and checks that its schema is the newest
// this code knows. It refuses, with ErrSchemaNewer, a database that a
// newer control plane has migrated further. url's password appears in no
// log and no error.
func Open(ctx context.Context, dbURL string, opts ...Option) (*DB, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		// pgconn's own message quotes the string, with its password masked
		// only on a best-effort basis: say nothing of it.
		return nil, fmt.Errorf("db: open %s: the connection string does not parse", redactURL(dbURL))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fail("db: open", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fail("db: connect", err)
	}
	d := &DB{pool: pool, log: o.log}
	if err := d.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

// Close closes the database's connections.
func (d *DB) Close() { d.pool.Close() }

// Pool is the connection pool, for the runtime's own queries (sagas) and
// tests.
func (d *DB) Pool() *pgxpool.Pool { return d.pool }

// SchemaVersion is the newest schema version this code knows: the number
// that starts the name of the last file in migrations/.
func SchemaVersion() int64 {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return -1
	}
	var v int64 = -1
	for _, e := range entries {
		prefix, _, _ := strings.Cut(e.Name(), "_")
		if n, err := strconv.ParseInt(prefix, 10, 64); err == nil && n > v {
			v = n
		}
	}
	return v
}

// newProvider makes the goose provider of the embedded migrations on d.
func (d *DB) newProvider() (*goose.Provider, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	// A lock table, not an advisory lock: CockroachDB has none.
	locker, err := lock.NewPostgresTableLocker(lock.WithTableLockTimeout(time.Second, 120), lock.WithTableLogger(d.log))
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectPostgres, stdlib.OpenDBFromPool(d.pool), sub,
		goose.WithDisableGlobalRegistry(true), goose.WithLocker(locker), goose.WithSlog(d.log))
}

// migrate applies the pending migrations, refusing a newer schema.
func (d *DB) migrate(ctx context.Context) error {
	p, err := d.newProvider()
	if err != nil {
		return fmt.Errorf("db: load the schema migrations: %w", err)
	}
	defer p.Close()
	current, target, err := p.GetVersions(ctx)
	if err != nil {
		return fail("db: read the schema version", err)
	}
	if current > target {
		return fmt.Errorf("db: the database's schema is at version %d, this control plane knows up to %d: %w (run a newer control plane)",
			current, target, ErrSchemaNewer)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fail("db: apply the schema migrations", err)
	}
	for _, r := range results {
		d.log.Info("db: schema migration applied", "version", r.Source.Version, "file", r.Source.Path, "took", r.Duration)
	}
	current, err = p.GetDBVersion(ctx)
	if err != nil {
		return fail("db: read the schema version", err)
	}
	if current != target {
		return fmt.Errorf("db: the schema is at version %d after migrating, not %d", current, target)
	}
	return nil
}

// redactURL shows a connection URL without its password, or nothing of a
// string that is not a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "(the connection string)"
	}
	return u.Redacted()
}

// querier is what a pool and a transaction both offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// maxTxAttempts bounds the retries of a transaction the database aborted
// for a serialization failure or a deadlock.
const maxTxAttempts = 5

// inTx runs fn in a transaction and commits, trying again (fn must be safe
// to repeat) when the database asks for a retry.
func (d *DB) inTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, d.pool, fn)
		if err == nil {
			return nil
		}
		if attempt < maxTxAttempts && retryable(err) && ctx.Err() == nil {
			continue
		}
		return fail(op, err)
	}
}
