package qemubench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/vmm/guest"
)

func TestMigrateTicker(t *testing.T) {
	if ok, why := Available(); !ok {
		t.Skip("QEMU comparison skipped: " + why)
	}
	img, err := guest.Image("ticker")
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	res, err := Migrate(ctx, Config{
		Image:     img,
		MemoryMiB: 64,
		Cmdline:   "pace_ms=20 dirty_kib=1024",
		WarmUp:    200 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Logf("QEMU %s (%s): total %v, downtime %v, setup %v, %d bytes, %.1f MB/s, %d dirty syncs, ticks %d -> %d, wall %v",
		res.QEMUVersion, res.Accel, res.Total, res.Downtime, res.SetupTime, res.Bytes, res.Throughput/1e6,
		res.DirtySyncCount, res.SourceLastTick, res.TargetTick, time.Since(start))

	require.Positive(t, res.Total)
	require.Positive(t, res.Bytes)
	require.Positive(t, res.Throughput)
	require.LessOrEqual(t, res.Downtime, res.Total)
	require.NotEmpty(t, res.QEMUVersion)
	require.Contains(t, []string{"kvm", "tcg"}, res.Accel)
	require.Equal(t, MaxBandwidth, res.MaxBandwidth)
	require.Equal(t, DowntimeLimit, res.DowntimeLimit)
	// The guest ticked on the source, and carried on on the target.
	require.Positive(t, res.SourceLastTick)
	require.Greater(t, res.TargetTick, res.SourceLastTick)
}

func TestMigrateBadConfig(t *testing.T) {
	if ok, why := Available(); !ok {
		t.Skip("QEMU comparison skipped: " + why)
	}
	_, err := Migrate(context.Background(), Config{})
	require.ErrorContains(t, err, "Image is empty")
	_, err = Migrate(context.Background(), Config{Image: []byte{1}, Accel: "hvf"})
	require.ErrorContains(t, err, "Accel")
}

func TestPaceOf(t *testing.T) {
	require.Equal(t, 500*time.Millisecond, paceOf(""))
	require.Equal(t, 50*time.Millisecond, paceOf("pace_ms=10 dirty_kib=4 pace_ms=50ms"))
	require.Equal(t, time.Duration(0), paceOf("pace_ms=x"))
}

// TestMigrateWrittenGuestWithoutWaitingForLines: a memcheck guest that fills
// its memory and then says nothing for a minute migrates, and with
// AfterLines negative Migrate returns once the target runs, long before the
// guest's next line (the test's deadline is well under its pace).
func TestMigrateWrittenGuestWithoutWaitingForLines(t *testing.T) {
	if ok, why := Available(); !ok {
		t.Skip("QEMU comparison skipped: " + why)
	}
	img, err := guest.Image("memcheck")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	res, err := Migrate(ctx, Config{
		Image:      img,
		MemoryMiB:  64,
		Cmdline:    "span_mib=56 pace_ms=60000",
		ReadyLine:  "mem filled",
		AfterLines: -1,
	})
	require.NoError(t, err)
	t.Logf("QEMU %s (%s): total %v, downtime %v, %d bytes, %d normal pages", res.QEMUVersion, res.Accel,
		res.Total, res.Downtime, res.Bytes, res.NormalPages)
	require.Positive(t, res.Total)
	// The 56 MiB written are sent whole, not as zero pages.
	require.GreaterOrEqual(t, res.NormalPages, uint64(56<<20/4096))
	require.GreaterOrEqual(t, res.Bytes, uint64(56<<20))
	require.Zero(t, res.TargetTick, "no line was waited for")
}
