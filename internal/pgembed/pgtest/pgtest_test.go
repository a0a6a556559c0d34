package pgtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
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
