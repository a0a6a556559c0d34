package gate

import (
	"bytes"
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
	// Released in the scratch clone only, as the one release there: v1's
	// LOCK line (unless it is locked already) and a RELEASES file that lists
	// just this commit.
	contract, err := os.ReadFile(filepath.Join(clone, "openapi", "vmm-server", "v1.yaml"))
	require.NoError(t, err)
	lock := filepath.Join(clone, "openapi", "LOCK")
	lockData, err := os.ReadFile(lock)
	require.NoError(t, err)
	if !strings.Contains(string(lockData), "openapi/vmm-server/v1.yaml") {
		lockData = append(lockData, corpus.Sum(contract)+"  openapi/vmm-server/v1.yaml\n"...)
		require.NoError(t, os.WriteFile(lock, lockData, 0o644))
	}
	rels := filepath.Join(clone, "corpus", "RELEASES")
	line := "v0.0.0-gatetest  " + commit + "  vmm-server/v1\n"
	require.NoError(t, os.WriteFile(rels, []byte("# the one release of this test\n"+line), 0o644))

	start := time.Now()
	rep, err := CheckReleases(ctx, clone, t.TempDir())
	t.Logf("CheckReleases took %v: %+v", time.Since(start).Round(time.Second), rep)
	require.NoError(t, err)
	require.Equal(t, []string{"v0.0.0-gatetest"}, rep.Built)
	require.Empty(t, rep.Skipped)
	var ways []string
	for _, r := range rep.Ran {
		if strings.HasPrefix(r, "migrated a running ") {
			ways = append(ways, r)
		}
	}
	require.Len(t, ways, 2*len(migrationGuests), "both ways ran for every guest: %v", rep.Ran)
	for i, g := range migrationGuests {
		require.Contains(t, ways[2*i], "migrated a running "+g.name+" v0.0.0-gatetest -> HEAD by HEAD's CLI: "+g.unit+" ")
		require.Contains(t, ways[2*i+1], "migrated a running "+g.name+" HEAD -> v0.0.0-gatetest by v0.0.0-gatetest's CLI: "+g.unit+" ")
	}
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

// guest is the migration guest with the image name.
func guest(t *testing.T, name string) migrationGuest {
	for _, g := range migrationGuests {
		if g.name == name {
			return g
		}
	}
	t.Fatalf("no migration guest %s", name)
	return migrationGuest{}
}

// TestCounts reads only complete count lines, each guest its own.
func TestCounts(t *testing.T) {
	require.Equal(t, []int{1, 2, 3}, guest(t, "ticker").counts([]byte("ticker ready\ntick 1\ntick 2\ntick 3\ntick 4")))
	require.Empty(t, guest(t, "ticker").counts([]byte("ticker ready\n")))
	require.Equal(t, []int{1, 2}, guest(t, "memcheck").counts([]byte("mem filled 8 MiB\nmem ok 1\nmem ok 2\nmem ok 3")))
	require.Equal(t, []int{1, 2}, guest(t, "disk").counts([]byte("disk ok sectors=256\ndisk ok pass 1\ndisk ok pass 2\n")))
}

// TestMigrationWayString says the figures a report shows.
func TestMigrationWayString(t *testing.T) {
	w := MigrationWay{Guest: "ticker", What: "r -> HEAD by HEAD's CLI", Unit: "ticks", LastBefore: 7, FirstAfter: 8, SeenAfter: 12,
		Total: 1234 * time.Millisecond, Downtime: 42 * time.Millisecond}
	require.Equal(t, "ticker r -> HEAD by HEAD's CLI: ticks 7 on the source, 8..12 on the target, total 1.234s, downtime 42ms", w.String())
}

// TestCountsOn: the guest's own output proves the migration, and each way
// a migration can lose the guest is seen.
// TestPrintedOwn: the wait for a target's counts counts only what the
// target printed itself, not the history that came with the VM (a target
// that had printed one tick of its own once passed that wait, and then
// failed the check of three).
func TestPrintedOwn(t *testing.T) {
	ticker := guest(t, "ticker")
	src := []byte("ticker ready\ntick 1\ntick 2\ntick 3\ntick 4\n")
	require.True(t, printedOwn(ticker, nil, src, 3), "a fresh guest: its whole console")
	require.False(t, printedOwn(ticker, src, src, 3), "the history alone")
	require.False(t, printedOwn(ticker, src, append(bytes.Clone(src), "tick 5\ntick 6\n"...), 3))
	require.True(t, printedOwn(ticker, src, append(bytes.Clone(src), "tick 5\ntick 6\ntick 7\n"...), 3))
	require.True(t, printedOwn(ticker, src, []byte("tick 5\ntick 6\ntick 7\n"), 3), "a target that does not move the history")
}

func TestCountsOn(t *testing.T) {
	ticker, memcheck, disk := guest(t, "ticker"), guest(t, "memcheck"), guest(t, "disk")
	src := []byte("ticker ready\ntick 1\ntick 2\ntick 3\ntick ")
	last, first, seen, err := countsOn(ticker, src, []byte("4\ntick 5\ntick 6\ntick 7\n"))
	require.NoError(t, err, "a line begun on the source ends on the target")
	require.Equal(t, []int{3, 4, 7}, []int{last, first, seen})
	_, _, _, err = countsOn(ticker, src[:len(src)-5], []byte("tick 4\ntick 5\ntick 6\n"))
	require.NoError(t, err)
	last, first, seen, err = countsOn(memcheck, []byte("mem filled 8 MiB\nmem ok 1\nmem ok 2\n"), []byte("mem ok 3\nmem ok 4\nmem ok 5\n"))
	require.NoError(t, err)
	require.Equal(t, []int{2, 3, 5}, []int{last, first, seen})
	_, _, _, err = countsOn(disk, []byte("disk ok sectors=256\ndisk ok pass 1\n"), []byte("disk ok pass 2\ndisk ok pass 3\ndisk ok pass 4\n"))
	require.NoError(t, err)
	// A target whose console began with the source's history (both builds
	// move it), the source's last line begun or not.
	last, first, seen, err = countsOn(ticker, src, append(bytes.Clone(src[:len(src)-5]), "tick 4\ntick 5\ntick 6\n"...))
	require.NoError(t, err, "the history that came with the VM is not the target's own")
	require.Equal(t, []int{3, 4, 6}, []int{last, first, seen})
	_, _, _, err = countsOn(ticker, src[:len(src)-5], append(bytes.Clone(src[:len(src)-5]), "tick 4\ntick 5\ntick 6\n"...))
	require.NoError(t, err)

	for _, c := range []struct {
		name                string
		g                   migrationGuest
		before, after, want string
	}{
		{"booted again", ticker, "tick 1\ntick 2\n", "ticker ready\ntick 1\ntick 2\ntick 3\n", "booted again"},
		{"booted again after its history", ticker, "ticker ready\ntick 1\ntick 2\n", "ticker ready\ntick 1\ntick 2\nticker ready\ntick 1\n", "booted again"},
		{"a tick repeated after its history", ticker, "ticker ready\ntick 1\ntick 2\n", "ticker ready\ntick 1\ntick 2\ntick 2\ntick 3\ntick 4\ntick 5\n", "do not count up by one (2 then 2)"},
		{"a tick lost", ticker, "tick 1\ntick 2\n", "tick 4\ntick 5\ntick 6\n", "do not count up by one (2 then 4)"},
		{"a tick repeated", ticker, "tick 1\ntick 2\n", "tick 2\ntick 3\ntick 4\ntick 5\n", "do not count up by one (2 then 2)"},
		{"stopped on the target", ticker, "tick 1\ntick 2\n", "tick 3\n", "did not count on past 2"},
		{"no tick on the source", ticker, "ticker ready\n", "tick 1\ntick 2\ntick 3\n", "the source's console shows no ticks"},
		{"memory lost", memcheck, "mem ok 1\nmem ok 2\n", "mem BAD at 0x400000 pass 3\n", "found its state bad: \"mem BAD at 0x400000"},
		{"memcheck booted again", memcheck, "mem ok 1\n", "mem filled 8 MiB\nmem ok 1\nmem ok 2\n", "booted again"},
		{"disk data lost", disk, "disk ok pass 1\n", "disk ok pass 2\ndisk BAD sector 17\n", "found its state bad: \"disk BAD sector 17"},
		{"disk booted again", disk, "disk ok pass 1\n", "disk ok sectors=256\ndisk ok pass 1\n", "booted again"},
	} {
		_, _, _, err := countsOn(c.g, []byte(c.before), []byte(c.after))
		require.ErrorContains(t, err, c.want, c.name)
	}
}

// TestReleaseThatCannotMigrateIn: HEAD's server, as the target, fails
// every device import (a fail point): each guest's way in fails and names
// itself, and no way back is tried; no server outlives the check.
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
	require.Equal(t, "ticker", me.Guest)
	for _, g := range migrationGuests {
		require.ErrorContains(t, err, "migrating a running "+g.name+" r -> HEAD by HEAD's CLI", "every guest was tried, and failed its way in")
	}
	require.ErrorContains(t, err, "waggle vm migrate")
	require.Regexp(t, `HEAD's server logged last: \S`, err.Error(), "a failed way shows what the servers logged")
	require.Empty(t, ways)
}
