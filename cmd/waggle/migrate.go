package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/term"
)

// migrationSummary is what `waggle vm migrate -o json` prints at the end
// of a completed migration.
type migrationSummary struct {
	MigrationID uuid.UUID `json:"migration_id"`
	Name        string    `json:"name"`     // the instance's name
	From        string    `json:"from"`     // the source server, as the CLI reached it
	To          string    `json:"to"`       // the target server
	SrcAddr     string    `json:"src_addr"` // the source, as the target reached it
	TotalUs     int64     `json:"total_us"`
	DowntimeUs  int64     `json:"downtime_us"`
	BytesSent   int64     `json:"bytes_sent"`
	Rounds      int64     `json:"rounds"`
	// ThroughputMiBs is MiB sent per second of the whole migration.
	ThroughputMiBs float64 `json:"throughput_mib_s"`
}

// replaceFlag collects -replace NAME=PATH flags: file backends of the
// source's spec that the target opens at another path.
type replaceFlag map[string]string

func (r replaceFlag) String() string { return "" }

func (r replaceFlag) Set(s string) error {
	name, path, ok := strings.Cut(s, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("want NAME=PATH, the name of a file backend and its path under the target's storage root")
	}
	if _, dup := r[name]; dup {
		return fmt.Errorf("%s replaced twice", name)
	}
	r[name] = path
	return nil
}

// migrate drives a live migration from the server at -server (the source)
// to the server at -to (the target): it arms the source, which answers the
// migration's one-time secret, creates the target as a migration target
// with that secret, shows progress, and ends with a summary. The target
// dials the source at -src-addr, for when it reaches the source by another
// address than the CLI does (default: -server). The secret is never shown.
func (c *vmCmd) migrate(ctx context.Context, args []string) error {
	to := c.fs.String("to", "", "the target VMM server: host:port, http://host:port, or a host (required)")
	srcAddr := c.fs.String("src-addr", "", "the source as the target reaches it, host:port (default: -server)")
	toToken := c.fs.String("to-token-file", "", "the target server's bearer token (default: the file the target wrote)")
	replace := replaceFlag{}
	c.fs.Var(replace, "replace", "NAME=PATH: the target opens the source's file backend NAME at PATH beneath its storage root (repeatable)")
	if err := c.parse(args); err != nil {
		return err
	}
	if *to == "" {
		fmt.Fprintln(c.stderr, "waggle vm migrate: -to is required: the server to move the VM to")
		c.usage(c.stderr)
		return errUsage
	}
	toEP, err := parseServer(*to)
	if err != nil {
		fmt.Fprintf(c.stderr, "waggle vm migrate: -to: %v\n", err)
		return errUsage
	}
	src := c.ep.host
	if *srcAddr != "" {
		ep, err := parseServer(*srcAddr)
		if err != nil {
			fmt.Fprintf(c.stderr, "waggle vm migrate: -src-addr: %v\n", err)
			return errUsage
		}
		src = ep.host
	}
	// Refuse before calling anything: a server cannot be its own target.
	if sameServer(ctx, c.ep, toEP) {
		return fmt.Errorf("-to %s is the server the VM runs on (-server %s): a migration moves the VM to another "+
			"`waggle server` (start one with `waggle server -listen 127.0.0.1:12401`)", toEP, c.ep)
	}
	// Each server is spoken to in the newest version it serves (or -api):
	// a released server on one side and today's on the other is fine.
	srcCl, err := c.client(ctx)
	if err != nil {
		return err
	}
	dstCl, err := c.clientFor(ctx, toEP, *toToken, 30*time.Second)
	if err != nil {
		return err
	}
	inst, err := srcCl.instance(ctx)
	if err != nil {
		return err
	}
	var replacements map[string]json.RawMessage
	if len(replace) > 0 {
		if replacements, err = c.replacements(ctx, srcCl, replace); err != nil {
			return err
		}
	}
	id := uuid.New()
	secret, err := srcCl.arm(ctx, id)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = dstCl.createTarget(ctx, inst.Properties, migrationTarget{ID: id, SrcAddr: src, Secret: secret, Replace: replacements})
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Code == codeInstanceExists {
			ae.Text = fmt.Sprintf("the target server at %s already has a VM", toEP)
			ae.Hint = fmt.Sprintf("a target holds one VM at a time: stop that one first (`waggle vm stop -server %s`), "+
				"or migrate to another server; the VM runs on at %s", toEP, c.ep)
		}
		return err
	}

	// Follow the target's view of the migration, with the source's figures.
	prog := newProgress(c.stderr, c.json())
	var last migrationProgress
	for {
		st, err := dstCl.migrations(ctx)
		if err != nil {
			return err
		}
		if st.In == nil {
			return fmt.Errorf("the target %s shows no inbound migration", toEP)
		}
		last = *st.In
		prog.show(last)
		if last.Phase == phaseCompleted || last.Phase == phaseFailed {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	prog.done()
	if last.Phase == phaseFailed {
		where := ""
		if now, err := stateNow(ctx, srcCl); err == nil && now.State == stateRunning {
			where = fmt.Sprintf("; the VM runs on at %s", c.ep)
		}
		return fmt.Errorf("migration %s failed: %s%s", id, deref(last.FailureReason), where)
	}
	elapsed := time.Since(start)
	var out migrationProgress
	if s, err := srcCl.migrations(ctx); err == nil && s.Out != nil {
		out = *s.Out
	}
	total := elapsed
	if out.TotalUs != nil {
		total = time.Duration(*out.TotalUs) * time.Microsecond
	}
	// The target's downtime is the whole of it (the source's pause to the
	// hand-off, plus the target's resume).
	var downtime time.Duration
	if last.DowntimeUs != nil {
		downtime = time.Duration(*last.DowntimeUs) * time.Microsecond
	} else if out.DowntimeUs != nil {
		downtime = time.Duration(*out.DowntimeUs) * time.Microsecond
	}
	sum := migrationSummary{
		MigrationID: id, Name: inst.Properties.Name, From: c.ep.String(), To: toEP.String(), SrcAddr: src,
		TotalUs: total.Microseconds(), DowntimeUs: downtime.Microseconds(),
		BytesSent: out.BytesSent, Rounds: int64(out.Rounds),
	}
	mib := float64(out.BytesSent) / (1 << 20)
	if total > 0 {
		sum.ThroughputMiBs = mib / total.Seconds()
	}
	if c.json() {
		return c.printJSON(sum)
	}
	fmt.Fprintf(c.stdout, "migrated %s from %s to %s\n", inst.Properties.Name, c.ep, toEP)
	fmt.Fprintf(c.stdout, "  total      %v\n", total.Round(time.Microsecond))
	fmt.Fprintf(c.stdout, "  downtime   %v\n", downtime.Round(time.Microsecond))
	fmt.Fprintf(c.stdout, "  sent       %.1f MiB in %d rounds\n", mib, out.Rounds)
	fmt.Fprintf(c.stdout, "  throughput %.0f MiB/s\n", sum.ThroughputMiBs)
	fmt.Fprintf(c.stdout, "drive it there: waggle vm get -server %s\n", toEP)
	return nil
}

// replacements builds the target's replacement components: each named
// file backend of the source's spec, at another path. The rest of each
// backend (read-only, block size) stays as the source has it. Each is the
// component's JSON as the source's version writes it; the target's version
// reads it (a file backend has the same fields in every version).
func (c *vmCmd) replacements(ctx context.Context, cl vmmAPI, replace replaceFlag) (map[string]json.RawMessage, error) {
	sv, err := cl.spec(ctx)
	if err != nil {
		return nil, err
	}
	if sv.Spec == nil {
		return nil, fmt.Errorf("-replace: the source %s does not know its spec yet", c.ep)
	}
	var view struct {
		Spec struct {
			Components map[string]map[string]json.RawMessage `json:"components"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(sv.raw, &view); err != nil {
		return nil, fmt.Errorf("-replace: the source's spec: %w", err)
	}
	out := map[string]json.RawMessage{}
	for name, path := range replace {
		comp, ok := view.Spec.Components[name]
		if !ok {
			return nil, fmt.Errorf("-replace %s: the VM has no component %q", name, name)
		}
		var kind string
		_ = json.Unmarshal(comp["type"], &kind)
		if kind != "file_storage_backend" {
			return nil, fmt.Errorf("-replace %s: component %q is a %s, not a file_storage_backend", name, name, kind)
		}
		p, err := json.Marshal(path)
		if err != nil {
			return nil, err
		}
		comp["path"] = p
		data, err := json.Marshal(comp)
		if err != nil {
			return nil, err
		}
		out[name] = data
	}
	return out, nil
}

// progress shows a migration's progress on w: one line redrawn in place
// on a terminal, a line per phase elsewhere (a pipe or a file gets no
// carriage returns), nothing for programs.
type progress struct {
	w     io.Writer
	tty   bool
	quiet bool
	phase string // the last phase shown
	shown bool
}

func newProgress(w io.Writer, quiet bool) *progress {
	return &progress{w: w, tty: isTerminal(w), quiet: quiet}
}

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *progress) show(m migrationProgress) {
	if p.quiet {
		return
	}
	line := fmt.Sprintf("%-12s %s %8.1f MiB  %6d pages left  round %d", m.Phase, bar(m),
		float64(m.BytesSent)/(1<<20), m.PagesLeft, m.Rounds)
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\r%s ", line)
	case !p.shown || m.Phase != p.phase:
		fmt.Fprintln(p.w, line)
	}
	p.phase, p.shown = m.Phase, true
}

// done ends the progress display.
func (p *progress) done() {
	if p.tty && p.shown && !p.quiet {
		fmt.Fprintln(p.w)
	}
}

// bar draws how far along the phases a migration is.
func bar(p migrationProgress) string {
	phases := []string{"negotiate", "preamble", "ram_precopy", "pause", "ram_final", "device_state", "clock",
		"handoff", phaseCompleted}
	done := 0
	for i, ph := range phases {
		if ph == p.Phase {
			done = i + 1
		}
	}
	return "[" + strings.Repeat("#", done*2) + strings.Repeat(".", (len(phases)-done)*2) + "]"
}
