package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The check of a release that needs KVM: running VMs migrate live from
// the release's `waggle server` into HEAD's and back, each way driven by
// the other build's `waggle vm migrate`, and each guest's own output proves
// it went on. Every guest keeps a count in its RAM and prints it on a line
// (vmm/guest/ABI.md): the ticker its ticks, memcheck its verified passes
// over a memory pattern, disk its verified passes over the sectors it
// wrote. So the target's console continues the source's count with the
// next number, none lost, none repeated; it never shows the line the guest
// prints once at boot (a guest that booted again would show it and count
// from 1), nor the line the guest prints when it finds its memory or its
// disk not as it left them.

// migrationGuest is a guest the release check migrates, and how its
// console proves that it went on.
type migrationGuest struct {
	// name is the guest's image name, which the report shows.
	name string
	// spec is its vmm-server v1 InstanceSpec. Each is small, so that a
	// migration under nested emulation takes seconds.
	spec string
	// count matches a line with the guest's count, the number in group 1;
	// unit names what it counts in the report.
	count *regexp.Regexp
	unit  string
	// booted is what the guest prints once, at boot; bad what it prints
	// when its memory or disk is not as it left it ("" if it cannot).
	booted, bad string
	// disk is the path beneath the shared storage root of the disk file
	// the spec names ("" for none); the check makes it.
	disk string
}

// migrationGuests are the guests every release migrates: the ticker (a
// UART's state and a dirtying guest: pre-copy has pages to send again),
// memcheck (every page of its region checked on the target) and disk (a
// virtio-blk device in use, its queue state carried across).
var migrationGuests = []migrationGuest{
	{name: "ticker", unit: "ticks",
		spec: `{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},"boot":{"cmdline":"pace_ms=50 dirty_kib=1024 dirty_base_mib=8","image":"ticker"},` +
			`"components":{"com1":{"num":"com1","type":"serial_port"}}}`,
		count: regexp.MustCompile(`tick (\d+)\n`), booted: "ticker ready"},
	{name: "memcheck", unit: "passes",
		spec: `{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},"boot":{"cmdline":"base_mib=4 span_mib=8 pace_ms=100","image":"memcheck"},` +
			`"components":{"com1":{"num":"com1","type":"serial_port"}}}`,
		count: regexp.MustCompile(`mem ok (\d+)\n`), booted: "mem filled", bad: "mem BAD"},
	{name: "disk", unit: "passes", disk: "compat-gate/disk.img",
		spec: `{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},"boot":{"cmdline":"sectors=256 pace_ms=100","image":"disk"},` +
			`"components":{"com1":{"num":"com1","type":"serial_port"},"disk0":{"backend":"disk0-be","slot":0,"type":"virtio_disk"},` +
			`"disk0-be":{"path":"compat-gate/disk.img","type":"file_storage_backend"}}}`,
		count: regexp.MustCompile(`disk ok pass (\d+)\n`), booted: "disk ok sectors=", bad: "disk BAD"},
}

// Bounds of the migration check. They are generous because the gate also
// runs under nested software emulation, where a migration of the small
// guests takes seconds instead of milliseconds.
var (
	// MigrateCommandTimeout bounds each CLI command but the migration.
	MigrateCommandTimeout = 60 * time.Second
	// MigrateTimeout bounds one `waggle vm migrate`.
	MigrateTimeout = 5 * time.Minute
	// MigrateTickWait bounds each wait for the guest's count.
	MigrateTickWait = 3 * time.Minute
)

// MigrationWay is one direction of a release's migration check of one
// guest, with its figures.
type MigrationWay struct {
	// Guest is the guest's image name; What says the way: "<release> ->
	// HEAD by HEAD's CLI", ...
	Guest, What string
	// Unit names what the guest counts ("ticks", "passes").
	Unit string
	// LastBefore is the last count the source printed; FirstAfter the
	// first the target printed, which must be LastBefore+1; SeenAfter the
	// last the target had printed when the check ended.
	LastBefore, FirstAfter, SeenAfter int
	// Total and Downtime are what the CLI's summary said (zero if it said
	// nothing).
	Total, Downtime time.Duration
}

// String says the guest, the way and its figures in words.
func (w MigrationWay) String() string {
	s := fmt.Sprintf("%s %s: %s %d on the source, %d..%d on the target", w.Guest, w.What, w.Unit, w.LastBefore, w.FirstAfter, w.SeenAfter)
	if w.Total > 0 {
		s += fmt.Sprintf(", total %v", w.Total.Round(time.Millisecond))
	}
	if w.Downtime > 0 {
		s += fmt.Sprintf(", downtime %v", w.Downtime.Round(100*time.Microsecond))
	}
	return s
}

// ReleaseMigrationError says a running guest did not migrate between a
// release and HEAD in one direction, and why.
type ReleaseMigrationError struct {
	Release, Guest, Way string
	Err                 error
}

func (e *ReleaseMigrationError) Error() string {
	return fmt.Sprintf("release %s: migrating a running %s %s: %v", e.Release, e.Guest, e.Way, e.Err)
}

func (e *ReleaseMigrationError) Unwrap() error { return e.Err }

// MigrateBothWays checks each of migrationGuests in turn with
// migrateGuestBothWays, in its own directory under dir, and returns every
// way that passed and the errors of those that failed (each a
// *ReleaseMigrationError). A guest that fails does not stop the next.
func MigrateBothWays(ctx context.Context, release, relBin, headBin, dir string) ([]MigrationWay, error) {
	var ways []MigrationWay
	var errs []error
	for _, g := range migrationGuests {
		gdir := filepath.Join(dir, g.name)
		if err := os.MkdirAll(gdir, 0o755); err != nil {
			return ways, err
		}
		w, err := migrateGuestBothWays(ctx, g, release, relBin, headBin, gdir)
		ways = append(ways, w...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return ways, errors.Join(errs...)
}

// migrateGuestBothWays starts relBin's `waggle server` and headBin's (each
// with its own token file under dir, on loopback, sharing one storage
// root as hosts share storage), creates and runs guest g on the release's
// server with HEAD's CLI, migrates it into HEAD's server with HEAD's CLI,
// and back into the release's server with the release's CLI, checking
// after each way that the VM runs on the target and its guest counts on.
// It returns the ways that passed; a way that fails is a
// *ReleaseMigrationError, and the way back is not tried after a failed way
// there. Every process it starts has ended when it returns.
func migrateGuestBothWays(ctx context.Context, g migrationGuest, release, relBin, headBin, dir string) ([]MigrationWay, error) {
	fail := func(way string, err error) error {
		return &ReleaseMigrationError{Release: release, Guest: g.name, Way: way, Err: err}
	}
	storage := filepath.Join(dir, "storage")
	if g.disk != "" {
		if err := makeDisk(filepath.Join(storage, filepath.FromSlash(g.disk))); err != nil {
			return nil, fail("(making its disk)", err)
		}
	}
	rel, err := startPeer(ctx, "release", relBin, dir, storage)
	if err != nil {
		return nil, fail("(starting its server)", err)
	}
	defer rel.stop()
	head, err := startPeer(ctx, "head", headBin, dir, storage)
	if err != nil {
		return nil, fail("(starting HEAD's server)", err)
	}
	defer head.stop()
	// A way that fails says what each server logged last: a guest that
	// faults or hangs after a migration shows it only there.
	logged := func(err error) error {
		return fmt.Errorf("%w\n  the release's server logged last: %s\n  HEAD's server logged last: %s",
			err, tail(rel.stderr.Bytes(), 2000), tail(head.stderr.Bytes(), 2000))
	}
	spec := filepath.Join(dir, g.name+".json")
	if err := os.WriteFile(spec, []byte(g.spec), 0o644); err != nil {
		return nil, err
	}

	there := release + " -> HEAD by HEAD's CLI"
	if err := createGuest(ctx, g, headBin, dir, rel, spec); err != nil {
		return nil, fail(there, logged(fmt.Errorf("before migrating: %w", err)))
	}
	var ways []MigrationWay
	w, err := migrateOnce(ctx, g, headBin, dir, rel, head, there)
	if err != nil {
		return ways, fail(there, logged(err))
	}
	ways = append(ways, w)
	back := "HEAD -> " + release + " by " + release + "'s CLI"
	// The release's server keeps what its first instance printed apart
	// from the second's: the way back's source history is HEAD's.
	w, err = migrateOnce(ctx, g, relBin, dir, head, rel, back)
	if err != nil {
		return ways, fail(back, logged(err))
	}
	return append(ways, w), nil
}

// makeDisk makes the disk guest's 1 MiB disk file at path.
func makeDisk(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, make([]byte, 1<<20), 0o600)
}

// peerFailPoints sets WAGGLE_FAILPOINTS of a peer ("release" or "head"):
// tests make a server misbehave on purpose and see the check fail.
var peerFailPoints = map[string]string{}

// peer is a server of the migration check, with its token file.
type peer struct {
	*serverProc
	name, token string
}

// startPeer starts bin's server as peer name, its files in dir/name and
// its storage root storage.
func startPeer(ctx context.Context, name, bin, dir, storage string) (*peer, error) {
	pdir := filepath.Join(dir, name)
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, err
	}
	token, err := writeToken(filepath.Join(pdir, "token"))
	if err != nil {
		return nil, err
	}
	var env []string
	if fp := peerFailPoints[name]; fp != "" {
		env = append(env, "WAGGLE_FAILPOINTS="+fp)
	}
	p, err := startServer(ctx, bin, pdir, storage, token, env...)
	if err != nil {
		return nil, err
	}
	return &peer{serverProc: p, name: name, token: token}, nil
}

// vm runs cliBin's `waggle vm <cmd> -server <p> -token-file <p's> args...`
// within limit and returns its stdout; a failure shows its stderr.
func vm(ctx context.Context, cliBin, dir string, limit time.Duration, p *peer, cmd string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	full := append([]string{"vm", cmd, "-server", p.addr, "-token-file", p.token}, args...)
	c := exec.CommandContext(ctx, cliBin, full...)
	c.Env = isolatedEnv(dir)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	line := "waggle vm " + cmd + " (" + p.name + "'s server)"
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s did not end within %v: %s", line, limit, tail(stderr.Bytes(), 500))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", line, err, strings.TrimSpace(tail(stderr.Bytes(), 1000)))
	}
	return stdout.Bytes(), nil
}

// createGuest creates and runs g on p with cliBin's CLI, and waits for
// its first three counts.
func createGuest(ctx context.Context, g migrationGuest, cliBin, dir string, p *peer, spec string) error {
	if _, err := vm(ctx, cliBin, dir, MigrateCommandTimeout, p, "create", "-spec", spec, "-name", "compat-"+g.name); err != nil {
		return err
	}
	if _, err := vm(ctx, cliBin, dir, MigrateCommandTimeout, p, "run"); err != nil {
		return err
	}
	_, err := awaitCounts(ctx, g, cliBin, dir, p, nil, 3)
	return err
}

// migrateOnce migrates the VM from src to dst with cliBin's CLI and checks
// that it runs on dst and its guest g goes on counting where it stopped
// on src. The source's console is read after the source has let its VM go
// (its last bytes are flushed then).
func migrateOnce(ctx context.Context, g migrationGuest, cliBin, dir string, src, dst *peer, what string) (MigrationWay, error) {
	w := MigrationWay{Guest: g.name, What: what, Unit: g.unit}
	out, err := vm(ctx, cliBin, dir, MigrateTimeout, src, "migrate", "-to", dst.addr, "-to-token-file", dst.token, "-o", "json")
	if err != nil {
		return w, err
	}
	w.Total, w.Downtime = migrationFigures(out)
	if err := awaitState(ctx, cliBin, dir, src, "destroyed"); err != nil {
		return w, fmt.Errorf("the source after the migration: %w", err)
	}
	if err := awaitState(ctx, cliBin, dir, dst, "running"); err != nil {
		return w, fmt.Errorf("the target after the migration: %w", err)
	}
	before, err := history(ctx, cliBin, dir, src)
	if err != nil {
		return w, err
	}
	after, err := awaitCounts(ctx, g, cliBin, dir, dst, before, 3)
	if err != nil {
		return w, fmt.Errorf("on the target: %w", err)
	}
	w.LastBefore, w.FirstAfter, w.SeenAfter, err = countsOn(g, before, after)
	if err != nil {
		return w, err
	}
	return w, nil
}

// countsOn checks that guest g counted on across a migration: the
// source's console (before) shows counts and the target's (after) no new
// boot, neither says the guest found its state bad, the counts of both
// joined go up by one with none lost or repeated, and the target printed
// at least three past the source's last. It returns the source's last
// count, the first after it and the last seen.
func countsOn(g migrationGuest, before, after []byte) (last, first, seen int, err error) {
	got := g.counts(before)
	if len(got) == 0 {
		return 0, 0, 0, fmt.Errorf("the source's console shows no %s: %q", g.unit, tail(before, 300))
	}
	last = got[len(got)-1]
	// A target of a build that moves the console's history with the VM
	// begins its console with the source's: only what follows is the
	// target's own.
	after = ownOutput(before, after)
	if bytes.Contains(after, []byte(g.booted)) {
		return last, 0, 0, fmt.Errorf("the target's guest booted again (its console says %q): %q", g.booted, tail(after, 300))
	}
	// A line the guest had begun on the source ends on the target: join
	// the consoles before reading them.
	joined := append(bytes.Clone(before), after...)
	if g.bad != "" {
		if i := bytes.Index(joined, []byte(g.bad)); i >= 0 {
			return last, 0, 0, fmt.Errorf("the guest found its state bad: %q", tail(joined[i:], 200))
		}
	}
	all := g.counts(joined)
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			return last, 0, 0, fmt.Errorf("the %s across the migration do not count up by one (%d then %d): source %q, target %q",
				g.unit, all[i-1], all[i], tail(before, 200), tail(after, 200))
		}
	}
	if all[len(all)-1] < last+3 {
		return last, 0, 0, fmt.Errorf("the guest did not count on past %d on the target: %v", last, all[max(0, len(all)-6):])
	}
	return last, last + 1, all[len(all)-1], nil
}

// ownOutput is what a target printed itself: after without the complete
// lines it begins with that are before's first lines, in order (the
// history that came with the VM, when both builds move it; none, when
// either does not). A line the source had begun but not ended is the
// target's, which ends it.
func ownOutput(before, after []byte) []byte {
	for {
		i := bytes.IndexByte(before, '\n')
		if i < 0 || !bytes.HasPrefix(after, before[:i+1]) {
			return after
		}
		before, after = before[i+1:], after[i+1:]
	}
}

// migrationFigures reads the total time and downtime from the summary of
// `waggle vm migrate -o json` (or, from an older CLI, its text lines).
func migrationFigures(out []byte) (total, downtime time.Duration) {
	var sum struct {
		TotalUs    int64 `json:"total_us"`
		DowntimeUs int64 `json:"downtime_us"`
	}
	if json.Unmarshal(out, &sum) == nil && sum.TotalUs > 0 {
		return time.Duration(sum.TotalUs) * time.Microsecond, time.Duration(sum.DowntimeUs) * time.Microsecond
	}
	for _, m := range summaryLine.FindAllSubmatch(out, -1) {
		d, err := time.ParseDuration(string(m[2]))
		if err != nil {
			continue
		}
		if string(m[1]) == "total" {
			total = d
		} else {
			downtime = d
		}
	}
	return total, downtime
}

var summaryLine = regexp.MustCompile(`(?m)^\s+(total|downtime)\s+(\S+)\s*$`)

// awaitState waits until p's instance is in state want, reading it with
// `waggle vm get -o json`.
func awaitState(ctx context.Context, cliBin, dir string, p *peer, want string) error {
	deadline := time.Now().Add(MigrateCommandTimeout)
	var last string
	for {
		out, err := vm(ctx, cliBin, dir, MigrateCommandTimeout, p, "get", "-o", "json")
		if err != nil {
			return err
		}
		var inst struct {
			State string `json:"state"`
		}
		if err := json.Unmarshal(out, &inst); err != nil {
			return fmt.Errorf("waggle vm get -o json: %w: %q", err, tail(out, 300))
		}
		if inst.State == want {
			return nil
		}
		last = inst.State
		if time.Now().After(deadline) {
			return fmt.Errorf("the instance is %s, not %s, after %v", last, want, MigrateCommandTimeout)
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// awaitCounts waits until p's console shows at least n of guest g's
// counts past before (nil on a fresh guest; a migration target's source's
// console otherwise) and returns the console. A console that says the
// guest found its state bad ends the wait at once.
func awaitCounts(ctx context.Context, g migrationGuest, cliBin, dir string, p *peer, before []byte, n int) ([]byte, error) {
	deadline := time.Now().Add(MigrateTickWait)
	for {
		out, err := history(ctx, cliBin, dir, p)
		if err != nil {
			return nil, err
		}
		if g.bad != "" && bytes.Contains(out, []byte(g.bad)) {
			return nil, fmt.Errorf("the guest found its state bad: %q", tail(out, 300))
		}
		if printedOwn(g, before, out, n) {
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the guest printed fewer than %d %s within %v: %q", n, g.unit, MigrateTickWait, tail(out, 300))
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// printedOwn says whether out, a console that may begin with before (the
// source's console, when the history moved with the VM), shows n counts of
// its own guest's beyond it. Counted on the whole console, a target's
// history alone would pass.
func printedOwn(g migrationGuest, before, out []byte, n int) bool {
	return len(g.counts(ownOutput(before, out))) >= n
}

// history is what p's guest printed (`waggle vm serial -history`).
func history(ctx context.Context, cliBin, dir string, p *peer) ([]byte, error) {
	return vm(ctx, cliBin, dir, MigrateCommandTimeout, p, "serial", "-history")
}

// counts returns the numbers of g's complete count lines in text.
func (g migrationGuest) counts(text []byte) []int {
	var out []int
	for _, m := range g.count.FindAllSubmatch(text, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		out = append(out, n)
	}
	return out
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errors.Join(errors.New("waiting for the guest"), ctx.Err())
	case <-t.C:
		return nil
	}
}
