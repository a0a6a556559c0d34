package gate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/corpus"
	"github.com/wagglevm/waggle/internal/kvmtest"
)

// releaseCommitEnv pins the commit TestReleaseMigratesBothWays releases
// (default: HEAD~10 of this repository), so that its binary can be built
// and cached (ReleaseCacheEnv) before a slow run.
const releaseCommitEnv = "WAGGLE_GATE_TEST_RELEASE"

// TestReleaseMigratesBothWays releases a recent commit of this repository
// in a scratch clone and runs CheckReleases there on KVM: the checks
// without a VM run both ways, and a running ticker migrates from the
// release into HEAD and back, its guest counting on each time.
func TestReleaseMigratesBothWays(t *testing.T) {
	kvmtest.Require(t)
	rev := os.Getenv(releaseCommitEnv)
	if rev == "" {
		rev = "HEAD~10"
	}
	commit := run(t, repoRoot, "rev-parse", rev+"^{commit}")
	head := run(t, repoRoot, "rev-parse", "HEAD")
	clone := filepath.Join(t.TempDir(), "waggle")
	run(t, repoRoot, "clone", "-q", "--shared", "--no-checkout", ".", clone)
	run(t, clone, "checkout", "-q", "--detach", head)
	// Released in the scratch clone only: its LOCK line and its RELEASES
	// line, as the release commit would add them.
	contract, err := os.ReadFile(filepath.Join(clone, "openapi", "vmm-server", "v1.yaml"))
	require.NoError(t, err)
	lock := filepath.Join(clone, "openapi", "LOCK")
	lockData, err := os.ReadFile(lock)
	require.NoError(t, err)
	lockData = append(lockData, corpus.Sum(contract)+"  openapi/vmm-server/v1.yaml\n"...)
	require.NoError(t, os.WriteFile(lock, lockData, 0o644))
	rels := filepath.Join(clone, "corpus", "RELEASES")
	old, err := os.ReadFile(rels)
	require.NoError(t, err)
	line := "v0.0.0-gatetest  " + commit + "  vmm-server/v1\n"
	require.NoError(t, os.WriteFile(rels, append(old, line...), 0o644))

	start := time.Now()
	rep, err := CheckReleases(ctx, clone, t.TempDir())
	t.Logf("CheckReleases took %v: %+v", time.Since(start).Round(time.Second), rep)
	require.NoError(t, err)
	require.Equal(t, []string{"v0.0.0-gatetest"}, rep.Built)
	require.Empty(t, rep.Skipped)
	var ways []string
	for _, r := range rep.Ran {
		if strings.HasPrefix(r, "migrated a running ticker ") {
			ways = append(ways, r)
		}
	}
	require.Len(t, ways, 2, "both ways ran: %v", rep.Ran)
	require.Contains(t, ways[0], "migrated a running ticker v0.0.0-gatetest -> HEAD by HEAD's CLI: ticks ")
	require.Contains(t, ways[1], "migrated a running ticker HEAD -> v0.0.0-gatetest by v0.0.0-gatetest's CLI: ticks ")
	for _, w := range ways {
		require.Contains(t, w, "downtime ", "the CLI's summary gave the downtime")
	}
}

// TestMigrationFigures: the summary of `waggle vm migrate`, as JSON or as
// text, gives the total time and the downtime.
func TestMigrationFigures(t *testing.T) {
	total, down := migrationFigures([]byte(`{"migration_id":"x","total_us":1500000,"downtime_us":2500}`))
	require.Equal(t, 1500*time.Millisecond, total)
	require.Equal(t, 2500*time.Microsecond, down)
	total, down = migrationFigures([]byte("migrated vm from a to b\n  total      1.2s\n  downtime   35.5ms\n  sent       3.0 MiB in 2 rounds\n"))
	require.Equal(t, 1200*time.Millisecond, total)
	require.Equal(t, 35500*time.Microsecond, down)
	total, down = migrationFigures([]byte("nothing here"))
	require.Zero(t, total)
	require.Zero(t, down)
}

// TestTickNums reads only complete tick lines.
func TestTickNums(t *testing.T) {
	require.Equal(t, []int{1, 2, 3}, tickNums([]byte("ticker ready\ntick 1\ntick 2\ntick 3\ntick 4")))
	require.Empty(t, tickNums([]byte("ticker ready\n")))
}

// TestMigrationWayString says the figures a report shows.
func TestMigrationWayString(t *testing.T) {
	w := MigrationWay{What: "r -> HEAD by HEAD's CLI", LastBefore: 7, FirstAfter: 8, SeenAfter: 12, Total: 1234 * time.Millisecond, Downtime: 42 * time.Millisecond}
	require.Equal(t, "r -> HEAD by HEAD's CLI: ticks 7 on the source, 8..12 on the target, total 1.234s, downtime 42ms", w.String())
}

// TestCountsOn: the guest's own output proves the migration, and each way
// a migration can lose the guest is seen.
func TestCountsOn(t *testing.T) {
	src := []byte("ticker ready\ntick 1\ntick 2\ntick 3\ntick ")
	last, first, seen, err := countsOn(src, []byte("4\ntick 5\ntick 6\ntick 7\n"))
	require.NoError(t, err, "a line begun on the source ends on the target")
	require.Equal(t, []int{3, 4, 7}, []int{last, first, seen})
	_, _, _, err = countsOn(src[:len(src)-5], []byte("tick 4\ntick 5\ntick 6\n"))
	require.NoError(t, err)

	for _, c := range []struct{ name, before, after, want string }{
		{"booted again", "tick 1\ntick 2\n", "ticker ready\ntick 1\ntick 2\ntick 3\n", "booted again"},
		{"a tick lost", "tick 1\ntick 2\n", "tick 4\ntick 5\ntick 6\n", "do not count up by one (2 then 4)"},
		{"a tick repeated", "tick 1\ntick 2\n", "tick 2\ntick 3\ntick 4\ntick 5\n", "do not count up by one (2 then 2)"},
		{"stopped on the target", "tick 1\ntick 2\n", "tick 3\n", "did not count on past tick 2"},
		{"no tick on the source", "ticker ready\n", "tick 1\ntick 2\ntick 3\n", "the source's console shows no tick"},
	} {
		_, _, _, err := countsOn([]byte(c.before), []byte(c.after))
		require.ErrorContains(t, err, c.want, c.name)
	}
}

// TestReleaseThatCannotMigrateIn: HEAD's server, as the target, fails
// every device import (a fail point): the way in fails, names itself, and
// the way back is not tried; no server outlives the check.
func TestReleaseThatCannotMigrateIn(t *testing.T) {
	kvmtest.Require(t)
	bin, err := BuildHead(ctx, repoRoot, t.TempDir())
	require.NoError(t, err)
	peerFailPoints["head"] = "target-fail-device-import"
	t.Cleanup(func() { delete(peerFailPoints, "head") })
	ways, err := MigrateBothWays(ctx, "r", bin, bin, t.TempDir())
	var me *ReleaseMigrationError
	require.ErrorAs(t, err, &me)
	require.Equal(t, "r -> HEAD by HEAD's CLI", me.Way)
	require.ErrorContains(t, err, "waggle vm migrate")
	require.Empty(t, ways)
}
