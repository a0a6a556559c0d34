package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wagglevm/waggle/internal/qemubench"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
	"github.com/wagglevm/waggle/vmm/guest"
)

// Where QEMU is installed, BenchmarkMigrate migrates the same guest image
// with the same command line between two QEMU processes and prints QEMU's
// figures beside ours.
func init() {
	qemuFigures = func(tb testing.TB, c migrationCase) qemuRow {
		if ok, why := qemubench.Available(); !ok {
			return qemuRow{note: "no QEMU: " + why}
		}
		img, err := guest.Image(c.image)
		if err != nil {
			return qemuRow{note: err.Error()}
		}
		cmdline := c.cmdline
		// Our VMM appends the TSC rate; QEMU does not, so tell the guest.
		if khz := hostTSCKHz(tb); khz != 0 {
			cmdline += fmt.Sprintf(" tsc_khz=%d", khz)
		}
		cfg := qemubench.Config{Image: img, MemoryMiB: c.mib, Cmdline: cmdline, WarmUp: time.Second, ReadyLine: c.qemuReady}
		if c.written {
			// memcheck says nothing for pace_ms after its fill: check
			// only that the target runs.
			cfg.AfterLines = -1
			cfg.MigrateTimeout = 3 * time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		r, err := qemubench.Migrate(ctx, cfg)
		if err != nil {
			return qemuRow{note: "QEMU failed: " + err.Error()}
		}
		version := "?"
		if f := strings.Fields(r.QEMUVersion); len(f) > 0 {
			version = f[0]
		}
		return qemuRow{measured: true, total: r.Total, downtime: r.Downtime, throughput: r.Throughput,
			version: version, accel: r.Accel}
	}
}

// hostTSCKHz asks KVM for the TSC rate it gives guests.
func hostTSCKHz(tb testing.TB) uint32 {
	s, err := spec.NewBuilder().SetBoard(spec.Board{CPUs: 1, MemoryMiB: 16, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "ticker"}).Build()
	if err != nil {
		tb.Fatal(err)
	}
	m, err := vmm.New(vmm.Config{Spec: s})
	if err != nil {
		return 0
	}
	defer m.Close()
	return m.TSCKHz()
}
