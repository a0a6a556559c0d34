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

// The check of a release that needs KVM: a running VM migrates live from
// the release's `waggle server` into HEAD's and back, each way driven by
// the other build's `waggle vm migrate`, and the guest's own output proves
// it went on: the ticker's tick numbers live in guest RAM (vmm/guest/ABI.md),
// so the target's console continues the source's count with the next
// number, none lost, none repeated, and no second "ticker ready" (a guest
// that booted again would count from 1).

// migrateTickerSpec is the guest every release migrates: the ticker, small
// so that a migration under nested emulation takes seconds, dirtying 1 MiB
// per tick so that pre-copy has pages to send again.
const migrateTickerSpec = `{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},"boot":{"cmdline":"pace_ms=50 dirty_kib=1024 dirty_base_mib=8","image":"ticker"},` +
	`"components":{"com1":{"num":"com1","type":"serial_port"}}}`

// Bounds of the migration check. They are generous because the gate also
// runs under nested software emulation, where a migration of the small
// ticker takes seconds instead of milliseconds.
var (
	// MigrateCommandTimeout bounds each CLI command but the migration.
	MigrateCommandTimeout = 60 * time.Second
	// MigrateTimeout bounds one `waggle vm migrate`.
	MigrateTimeout = 5 * time.Minute
	// MigrateTickWait bounds each wait for the guest's ticks.
	MigrateTickWait = 3 * time.Minute
)

// MigrationWay is one direction of a release's migration check, with its
// figures.
type MigrationWay struct {
	// What says the way: "<release> -> HEAD by HEAD's CLI", ...
	What string
	// LastBefore is the last tick the source printed; FirstAfter the first
	// the target printed, which must be LastBefore+1; SeenAfter the last the
	// target had printed when the check ended.
	LastBefore, FirstAfter, SeenAfter int
	// Total and Downtime are what the CLI's summary said (zero if it said
	// nothing).
	Total, Downtime time.Duration
}

// String says the way and its figures in words.
func (w MigrationWay) String() string {
	s := fmt.Sprintf("%s: ticks %d on the source, %d..%d on the target", w.What, w.LastBefore, w.FirstAfter, w.SeenAfter)
	if w.Total > 0 {
		s += fmt.Sprintf(", total %v", w.Total.Round(time.Millisecond))
	}
	if w.Downtime > 0 {
		s += fmt.Sprintf(", downtime %v", w.Downtime.Round(100*time.Microsecond))
	}
	return s
}

// ReleaseMigrationError says a running VM did not migrate between a
// release and HEAD in one direction, and why.
type ReleaseMigrationError struct {
	Release, Way string
	Err          error
}

func (e *ReleaseMigrationError) Error() string {
	return fmt.Sprintf("release %s: migrating a running ticker %s: %v", e.Release, e.Way, e.Err)
}

func (e *ReleaseMigrationError) Unwrap() error { return e.Err }

// MigrateBothWays starts relBin's `waggle server` and headBin's (each with
// its own storage root and token file under dir, on loopback), creates and
// runs a ticker on the release's server with HEAD's CLI, migrates it into
// HEAD's server with HEAD's CLI, and back into the release's server with
// the release's CLI, checking after each way that the VM runs on the
// target and its guest counts on. It returns the ways that passed; a way
// that fails is a *ReleaseMigrationError, and the way back is not tried
// after a failed way there. Every process it starts has ended when it
// returns.
func MigrateBothWays(ctx context.Context, release, relBin, headBin, dir string) ([]MigrationWay, error) {
	rel, err := startPeer(ctx, "release", relBin, dir)
	if err != nil {
		return nil, &ReleaseMigrationError{Release: release, Way: "(starting its server)", Err: err}
	}
	defer rel.stop()
	head, err := startPeer(ctx, "head", headBin, dir)
	if err != nil {
		return nil, &ReleaseMigrationError{Release: release, Way: "(starting HEAD's server)", Err: err}
	}
	defer head.stop()
	spec := filepath.Join(dir, "ticker.json")
	if err := os.WriteFile(spec, []byte(migrateTickerSpec), 0o644); err != nil {
		return nil, err
	}

	there := release + " -> HEAD by HEAD's CLI"
	if err := createTicker(ctx, headBin, dir, rel, spec); err != nil {
		return nil, &ReleaseMigrationError{Release: release, Way: there, Err: fmt.Errorf("before migrating: %w", err)}
	}
	var ways []MigrationWay
	w, err := migrateOnce(ctx, headBin, dir, rel, head, there)
	if err != nil {
		return ways, &ReleaseMigrationError{Release: release, Way: there, Err: err}
	}
	ways = append(ways, w)
	back := "HEAD -> " + release + " by " + release + "'s CLI"
	// The release's server keeps what its first instance printed apart
	// from the second's: the way back's source history is HEAD's.
	w, err = migrateOnce(ctx, relBin, dir, head, rel, back)
	if err != nil {
		return ways, &ReleaseMigrationError{Release: release, Way: back, Err: err}
	}
	return append(ways, w), nil
}

// peerFailPoints sets WAGGLE_FAILPOINTS of a peer ("release" or "head"):
// tests make a server misbehave on purpose and see the check fail.
var peerFailPoints = map[string]string{}

// peer is a server of the migration check, with its token file.
type peer struct {
	*serverProc
	name, token string
}

func startPeer(ctx context.Context, name, bin, dir string) (*peer, error) {
	pdir := filepath.Join(dir, name)
	storage := filepath.Join(pdir, "storage")
	if err := os.MkdirAll(storage, 0o700); err != nil {
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

// createTicker creates and runs the ticker on p with cliBin's CLI.
func createTicker(ctx context.Context, cliBin, dir string, p *peer, spec string) error {
	if _, err := vm(ctx, cliBin, dir, MigrateCommandTimeout, p, "create", "-spec", spec, "-name", "compat-ticker"); err != nil {
		return err
	}
	if _, err := vm(ctx, cliBin, dir, MigrateCommandTimeout, p, "run"); err != nil {
		return err
	}
	_, err := awaitTicks(ctx, cliBin, dir, p, 3)
	return err
}

// migrateOnce migrates the VM from src to dst with cliBin's CLI and checks
// that it runs on dst and its guest goes on counting where it stopped on
// src. The source's console is read after the source has let its VM go
// (its last bytes are flushed then).
func migrateOnce(ctx context.Context, cliBin, dir string, src, dst *peer, what string) (MigrationWay, error) {
	w := MigrationWay{What: what}
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
	after, err := awaitTicks(ctx, cliBin, dir, dst, 3)
	if err != nil {
		return w, fmt.Errorf("on the target: %w", err)
	}
	w.LastBefore, w.FirstAfter, w.SeenAfter, err = countsOn(before, after)
	if err != nil {
		return w, err
	}
	return w, nil
}

// countsOn checks that the guest counted on across a migration: the
// source's console (before) shows ticks, the target's (after) shows no new
// boot, the ticks of both joined count up by one with none lost or
// repeated, and the target printed at least three past the source's last.
// It returns the source's last tick, the first after it and the last seen.
func countsOn(before, after []byte) (last, first, seen int, err error) {
	got := tickNums(before)
	if len(got) == 0 {
		return 0, 0, 0, fmt.Errorf("the source's console shows no tick: %q", tail(before, 300))
	}
	last = got[len(got)-1]
	if bytes.Contains(after, []byte("ticker ready")) {
		return last, 0, 0, fmt.Errorf("the target's guest booted again (its console says \"ticker ready\"): %q", tail(after, 300))
	}
	// A line the guest had begun on the source ends on the target: join
	// the consoles before reading the numbers.
	all := tickNums(append(bytes.Clone(before), after...))
	for i := 1; i < len(all); i++ {
		if all[i] != all[i-1]+1 {
			return last, 0, 0, fmt.Errorf("the ticks across the migration do not count up by one (%d then %d): source %q, target %q",
				all[i-1], all[i], tail(before, 200), tail(after, 200))
		}
	}
	if all[len(all)-1] < last+3 {
		return last, 0, 0, fmt.Errorf("the guest did not count on past tick %d on the target: %v", last, all[max(0, len(all)-6):])
	}
	return last, last + 1, all[len(all)-1], nil
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

// awaitTicks waits until p's console shows at least n ticks and returns
// the console.
func awaitTicks(ctx context.Context, cliBin, dir string, p *peer, n int) ([]byte, error) {
	deadline := time.Now().Add(MigrateTickWait)
	for {
		out, err := history(ctx, cliBin, dir, p)
		if err != nil {
			return nil, err
		}
		if len(tickNums(out)) >= n {
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the guest printed fewer than %d ticks within %v: %q", n, MigrateTickWait, tail(out, 300))
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// history is what p's guest printed (`waggle vm serial -history`).
func history(ctx context.Context, cliBin, dir string, p *peer) ([]byte, error) {
	return vm(ctx, cliBin, dir, MigrateCommandTimeout, p, "serial", "-history")
}

var tickLine = regexp.MustCompile(`tick (\d+)\n`)

// tickNums returns the numbers of the complete tick lines in text.
func tickNums(text []byte) []int {
	var out []int
	for _, m := range tickLine.FindAllSubmatch(text, -1) {
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
