package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
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

// migrate drives a live migration from the server at -server (the source)
// to the server at -to (the target): it arms the source, creates the target
// as a migration target, shows progress, and ends with a summary. The
// target dials the source at -src-addr, for when it reaches the source by
// another address than the CLI does (default: -server).
func (c *vmCmd) migrate(ctx context.Context, args []string) error {
	to := c.fs.String("to", "", "the target VMM server, host:port (required)")
	srcAddr := c.fs.String("src-addr", "", "the source as the target reaches it, host:port (default: -server)")
	if err := c.parse(args); err != nil {
		return err
	}
	if *to == "" {
		fmt.Fprintln(c.stderr, "-to is required")
		return errUsage
	}
	if *srcAddr == "" {
		*srcAddr = *c.server
	}
	src, err := c.client()
	if err != nil {
		return err
	}
	dst, err := api.NewClientWithResponses("http://"+*to+"/v1", api.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
	if err != nil {
		return err
	}
	inst, err := getInstance(ctx, src)
	if err != nil {
		return err
	}
	id := uuid.New()
	e, err := src.InstanceMigrateExpectWithResponse(ctx, api.InstanceMigrateExpectRequest{MigrationId: id})
	if err != nil {
		return err
	}
	if e.StatusCode() != http.StatusNoContent {
		return apiErr(e.StatusCode(), e.Body)
	}
	start := time.Now()
	r, err := dst.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{
		Properties: inst.Properties,
		Migrate:    &api.InstanceMigrateInitiateRequest{MigrationId: id, SrcAddr: *srcAddr},
	})
	if err != nil {
		return err
	}
	if r.JSON201 == nil {
		return apiErr(r.StatusCode(), r.Body)
	}

	// Follow the target's view of the migration, with the source's figures.
	var last api.MigrationProgress
	for {
		st, err := dst.InstanceMigrationStatusWithResponse(ctx)
		if err != nil {
			return err
		}
		if st.JSON200 == nil || st.JSON200.MigrationIn == nil {
			return apiErr(st.StatusCode(), st.Body)
		}
		last = *st.JSON200.MigrationIn
		if !c.json() {
			fmt.Fprintf(c.stderr, "\r%-12s %s %8.1f MiB  %6d pages left  round %d ", last.Phase,
				bar(last), float64(last.BytesSent)/(1<<20), last.PagesLeft, last.Rounds)
		}
		if last.Phase == api.MigrationPhaseCompleted || last.Phase == api.MigrationPhaseFailed {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !c.json() {
		fmt.Fprintln(c.stderr)
	}
	if last.Phase == api.MigrationPhaseFailed {
		return fmt.Errorf("migration %s failed: %s", id, deref(last.FailureReason))
	}
	elapsed := time.Since(start)
	var out api.MigrationProgress
	if s, err := src.InstanceMigrationStatusWithResponse(ctx); err == nil && s.JSON200 != nil && s.JSON200.MigrationOut != nil {
		out = *s.JSON200.MigrationOut
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
		MigrationID: id, Name: inst.Properties.Name, From: *c.server, To: *to, SrcAddr: *srcAddr,
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
	fmt.Fprintf(c.stdout, "migrated %s from %s to %s\n", inst.Properties.Name, *c.server, *to)
	fmt.Fprintf(c.stdout, "  total      %v\n", total.Round(time.Microsecond))
	fmt.Fprintf(c.stdout, "  downtime   %v\n", downtime.Round(time.Microsecond))
	fmt.Fprintf(c.stdout, "  sent       %.1f MiB in %d rounds\n", mib, out.Rounds)
	fmt.Fprintf(c.stdout, "  throughput %.0f MiB/s\n", sum.ThroughputMiBs)
	return nil
}

// bar draws how far along the phases a migration is.
func bar(p api.MigrationProgress) string {
	phases := []api.MigrationPhase{api.MigrationPhaseNegotiate, api.MigrationPhasePreamble, api.MigrationPhaseRamPrecopy,
		api.MigrationPhasePause, api.MigrationPhaseRamFinal, api.MigrationPhaseDeviceState, api.MigrationPhaseClock,
		api.MigrationPhaseHandoff, api.MigrationPhaseCompleted}
	done := 0
	for i, ph := range phases {
		if ph == p.Phase {
			done = i + 1
		}
	}
	return "[" + strings.Repeat("#", done*2) + strings.Repeat(".", (len(phases)-done)*2) + "]"
}
