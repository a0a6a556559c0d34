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
	qemuFigures = func(tb testing.TB, mib int, cmdline string) string {
		if ok, why := qemubench.Available(); !ok {
			return "no QEMU: " + why
		}
		img, err := guest.Image("ticker")
		if err != nil {
			return err.Error()
		}
		// Our VMM appends the TSC rate; QEMU does not, so tell the guest.
		if khz := hostTSCKHz(tb); khz != 0 {
			cmdline += fmt.Sprintf(" tsc_khz=%d", khz)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		r, err := qemubench.Migrate(ctx, qemubench.Config{Image: img, MemoryMiB: mib, Cmdline: cmdline, WarmUp: time.Second})
		if err != nil {
			return "QEMU failed: " + err.Error()
		}
		total := "n/a"
		if r.Total > 0 {
			total = fmt.Sprintf("%.0f ms", float64(r.Total.Microseconds())/1000)
		}
		// QEMU reports times in whole milliseconds.
		return fmt.Sprintf("%s / %d ms / %.2f GB/s (QEMU %s, %s)", total, r.Downtime.Milliseconds(), r.Throughput/1e9,
			strings.Fields(r.QEMUVersion)[0], r.Accel)
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
