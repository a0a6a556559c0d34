package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/kvmtest"
)

// migrationRow is one line of the migration benchmark's table.
type migrationRow struct {
	name                    string
	total, downtime         time.Duration
	bytes                   uint64
	throughput, loopbackBPS float64
	qemu                    string
}

// loopbackBandwidth measures TCP over 127.0.0.1 with one connection and 1
// MiB writes: the limit a migration stream on this host cannot beat.
func loopbackBandwidth(tb testing.TB, total int64) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < total; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	c.Close()
	n := <-done
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkMigrate live-migrates ticker guests of 256 MiB and 1 GiB, idle
// and dirtying RAM, between two real `waggle server` processes, and prints
// total time, downtime, throughput and its ratio to loopback TCP bandwidth
// measured in the same run. `make bench-migrate` runs it.
func BenchmarkMigrate(b *testing.B) {
	kvmtest.Require(b)
	loop := loopbackBandwidth(b, 2<<30)
	b.Logf("loopback TCP: %.2f GB/s", loop/1e9)
	var rows []migrationRow
	for _, c := range []struct {
		name    string
		mib     int
		cmdline string
	}{
		{"256MiB-idle", 256, "pace_ms=100"},
		{"1GiB-idle", 1024, "pace_ms=100"},
		{"256MiB-dirty128MiB", 256, "pace_ms=20 dirty_kib=131072"},
		{"1GiB-dirty128MiB", 1024, "pace_ms=20 dirty_kib=131072"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var row migrationRow
			for range b.N {
				row = migrateOnce(b, c.mib, c.cmdline)
			}
			row.name, row.loopbackBPS = c.name, loop
			row.qemu = qemuFigures(b, c.mib, c.cmdline)
			b.ReportMetric(float64(row.total.Microseconds()), "total-µs")
			b.ReportMetric(float64(row.downtime.Microseconds()), "downtime-µs")
			b.ReportMetric(row.throughput/1e6, "MB/s")
			b.ReportMetric(row.throughput/loop, "x-loopback")
			rows = append(rows, row)
		})
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nloopback TCP %.2f GB/s (measured in this run)\n\n", loop/1e9)
	fmt.Fprintln(&sb, "| guest | total | downtime | sent | throughput | of loopback | QEMU (total / downtime / throughput) |")
	fmt.Fprintln(&sb, "|---|---|---|---|---|---|---|")
	for _, r := range rows {
		// An idle guest sends too little for a rate to mean anything.
		rate, share := "–", "–"
		if r.bytes >= 16<<20 {
			rate, share = fmt.Sprintf("%.2f GB/s", r.throughput/1e9), fmt.Sprintf("%.0f%%", 100*r.throughput/r.loopbackBPS)
		}
		fmt.Fprintf(&sb, "| %s | %.1f ms | %.3f ms | %.1f MiB | %s | %s | %s |\n", r.name,
			float64(r.total.Microseconds())/1000, float64(r.downtime.Microseconds())/1000,
			float64(r.bytes)/(1<<20), rate, share, r.qemu)
	}
	fmt.Fprint(os.Stdout, sb.String())
}

// migrateOnce boots a ticker guest on a fresh server, lets it tick five
// times, migrates it to another fresh server and returns the source's figures.
func migrateOnce(b *testing.B, mib int, cmdline string) migrationRow {
	b.StopTimer()
	a, dst := startServer(b), startServer(b)
	defer a.stop()
	defer dst.stop()
	ctx := context.Background()
	w, err := specDecode(fmt.Sprintf(`{"board":{"cpus":1,"memory_mb":%d,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":%q},
	 "components":{"com1":{"type":"serial_port","num":"com1"}}}`, mib, cmdline))
	if err != nil {
		b.Fatal(err)
	}
	props := api.InstanceProperties{Id: uuid.New(), Name: "bench"}
	if r, err := a.client.InstanceEnsureWithResponse(ctx, specEnsure(b, props, w)); err != nil || r.JSON201 == nil {
		b.Fatalf("ensure: %v %s", err, body(r))
	}
	if _, err := a.client.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun}); err != nil {
		b.Fatal(err)
	}
	// Let the guest settle into its pace (and, dirtying, into its working
	// set) before the migration starts.
	serialUntil(b, a.client, "tick 5\n")
	id := uuid.New()
	armed, err := a.client.InstanceMigrateExpectWithResponse(ctx, api.InstanceMigrateExpectRequest{MigrationId: id})
	if err != nil {
		b.Fatalf("arm the source: %v", err)
	}
	if armed.JSON200 == nil || armed.JSON200.Secret == nil {
		b.Fatalf("arm the source: HTTP %d, no secret: %s", armed.StatusCode(), armed.Body)
	}
	b.StartTimer()
	r, err := dst.client.InstanceEnsureWithResponse(ctx, targetEnsure(b, props,
		api.InstanceMigrateInitiateRequest{MigrationId: id, SrcAddr: a.addr, Secret: *armed.JSON200.Secret}))
	if err != nil {
		b.Fatalf("ensure target: %v", err)
	}
	if r.StatusCode() != http.StatusCreated {
		b.Fatalf("ensure target: HTTP %d: %s", r.StatusCode(), r.Body)
	}
	// Wait with the state monitor's long poll, as a control plane would:
	// polling the target during its downtime would steal CPU from it.
	waitState(b, dst.client, r.JSON201.Gen, api.InstanceStateRunning)
	var out, in api.MigrationProgress
	if st, err := dst.client.InstanceMigrationStatusWithResponse(ctx); err == nil && st.JSON200 != nil && st.JSON200.MigrationIn != nil {
		in = *st.JSON200.MigrationIn
	}
	if st, err := a.client.InstanceMigrationStatusWithResponse(ctx); err == nil && st.JSON200 != nil && st.JSON200.MigrationOut != nil {
		out = *st.JSON200.MigrationOut
	}
	b.StopTimer()
	if in.Phase != api.MigrationPhaseCompleted || out.Phase != api.MigrationPhaseCompleted {
		b.Fatalf("migration failed: %s %s", deref(in.FailureReason), deref(out.FailureReason))
	}
	row := migrationRow{bytes: uint64(out.BytesSent)}
	row.total = time.Duration(*out.TotalUs) * time.Microsecond
	row.downtime = time.Duration(*in.DowntimeUs) * time.Microsecond // the whole downtime, from the target
	row.throughput = float64(out.BytesSent) / row.total.Seconds()
	return row
}

// body is r's body, or nothing when there is no r.
func body(r *api.InstanceEnsureResponse) []byte {
	if r == nil {
		return nil
	}
	return r.Body
}

// qemuFigures is filled in where QEMU is installed (see qemu_bench_test.go).
var qemuFigures = func(testing.TB, int, string) string { return "not measured" }
