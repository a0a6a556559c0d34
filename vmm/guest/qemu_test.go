package guest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// qemuPC is QEMU's pc machine: SeaBIOS and its multiboot option ROM load the
// image the way our VMM does, and SeaBIOS provides SMBIOS tables.
const qemuPC = "pc"

// qemuMicrovm is QEMU's microvm machine, which has virtio-mmio transports
// (0x200 bytes apart from 0xfeb00000, the first device plugged into the last
// of 24), modern when force-legacy is off. Its ISA serial port is COM1.
const qemuMicrovm = "microvm,rtc=off,pit=off,pic=off,isa-serial=on"

// qemuMicrovmDisk is where the first virtio device lands on microvm.
const qemuMicrovmDisk = "mmio=0xfeb02e00"

// qemuRun boots image under qemu-system-x86_64 (TCG) on machine with the
// command line append, and returns the serial output from the guest's first
// line on, and the guest's exit status written to port 0xf4. The test is
// skipped when QEMU is not installed: it is a development aid, never required.
func qemuRun(t *testing.T, machine, image, firstLine, append string, extra ...string) (string, int) {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not on PATH: install qemu-system-x86 to boot the guest images under QEMU")
	}
	img, err := Image(image)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), image+".bin")
	require.NoError(t, os.WriteFile(path, img, 0o644))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{
		"-M", machine, "-accel", "tcg", "-m", "64",
		"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=4",
		"-kernel", path, "-append", append,
	}
	cmd := exec.CommandContext(ctx, qemu, append2(args, extra)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	require.NoError(t, ctx.Err(), "QEMU timed out; serial output so far:\n%s", stdout.String())

	// isa-debug-exit makes QEMU exit with (v << 1) | 1 for guest status v.
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "QEMU must exit through port 0xf4: err=%v stderr=%s serial=%s", err, stderr.String(), stdout.String())
	code := exitErr.ExitCode()
	require.Equal(t, 1, code&1, "QEMU exit code %d is not from isa-debug-exit; stderr=%s", code, stderr.String())

	// Drop the firmware's output before the guest's first line.
	out := strings.ReplaceAll(stdout.String(), "\r", "")
	i := strings.Index(out, firstLine)
	require.GreaterOrEqual(t, i, 0, "guest output %q not found in serial output:\n%s", firstLine, out)
	return out[i:], code >> 1
}

func append2(a, b []string) []string { return append(a[:len(a):len(a)], b...) }

func TestQEMUTicker(t *testing.T) {
	t.Parallel()
	out, status := qemuRun(t, qemuPC, "ticker", "ticker ready", "pace_ms=20 ticks=5 dirty_kib=4096")
	require.Equal(t, "ticker ready\ntick 1\ntick 2\ntick 3\ntick 4\ntick 5\n", out)
	require.Equal(t, 0, status)
}

func TestQEMUMemcheck(t *testing.T) {
	t.Parallel()
	out, status := qemuRun(t, qemuPC, "memcheck", "mem filled", "base_mib=8 span_mib=32 pace_ms=10 passes=3")
	require.Equal(t, "mem filled 32 MiB\nmem ok 1\nmem ok 2\nmem ok 3\n", out)
	require.Equal(t, 0, status)
}

// TestQEMUMemcheckZero: with zero_pages= the zeroing pass says so, and the
// passes after it find the zeroed pages still zero (and the rest of the
// region still following the patterns); the range is clamped to the region.
func TestQEMUMemcheckZero(t *testing.T) {
	t.Parallel()
	out, status := qemuRun(t, qemuPC, "memcheck", "mem filled", "base_mib=8 span_mib=32 pace_ms=10 passes=4 zero_pages=16 zero_pass=2")
	require.Equal(t, "mem filled 32 MiB\nmem ok 1\nmem zeroed 16 pages\nmem ok 2\nmem ok 3\nmem ok 4\n", out)
	require.Equal(t, 0, status)

	out, status = qemuRun(t, qemuPC, "memcheck", "mem filled", "base_mib=8 span_mib=4 pace_ms=10 passes=2 zero_pages=100000")
	require.Equal(t, "mem filled 4 MiB\nmem zeroed 1024 pages\nmem ok 1\nmem ok 2\n", out)
	require.Equal(t, 0, status)
}

func TestQEMUSMBIOS(t *testing.T) {
	t.Parallel()
	out, status := qemuRun(t, qemuPC, "smbios", "smbios ", "",
		"-machine", "smbios-entry-point-type=32",
		"-smbios", "type=1,manufacturer=acme,product=rocket,version=7,serial=abc123")
	require.Equal(t, "smbios manufacturer=acme product=rocket version=7 serial=abc123\n", out)
	require.Equal(t, 0, status)
}

// TestQEMUPanic: the panic guest ticks, says it panics after panic_after
// ticks and writes "panicked" to QEMU's own pvpanic device, which ends QEMU
// (-action panic=exit-failure: exit code 1, which qemuRun reads as status
// 0; without the device the guest would sleep until the timeout).
func TestQEMUPanic(t *testing.T) {
	t.Parallel()
	out, status := qemuRun(t, qemuPC, "panic", "panic ready", "pace_ms=20 panic_after=3",
		"-device", "pvpanic", "-action", "panic=exit-failure")
	require.Equal(t, "panic ready\ntick 1\ntick 2\ntick 3\npanicking\n", out)
	require.Equal(t, 0, status)
}

func TestQEMUDiskAbsent(t *testing.T) {
	t.Parallel()
	// The pc machine has no virtio-mmio: the guest must say so and fail.
	out, status := qemuRun(t, qemuPC, "disk", "disk ", "")
	require.Equal(t, "disk not found\n", out)
	require.Equal(t, 1, status)
}

func TestQEMUDiskMicrovm(t *testing.T) {
	t.Parallel()
	disk := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(disk, make([]byte, 1<<20), 0o644)) // 2048 sectors
	run := func(append string, readonly bool) (string, int) {
		drive := "if=none,id=d0,format=raw,file=" + disk
		if readonly {
			drive += ",readonly=on"
		}
		return qemuRun(t, qemuMicrovm, "disk", "disk ", qemuMicrovmDisk+" "+append,
			"-global", "virtio-mmio.force-legacy=false",
			"-drive", drive, "-device", "virtio-blk-device,drive=d0")
	}
	steps := []struct {
		append, want string
		readonly     bool
		status       int
	}{
		{append: "seed=5 start=3 sectors=100 pace_ms=10 passes=2", want: "disk ok sectors=100\ndisk ok pass 1\ndisk ok pass 2\n"},
		{append: "mode=verify seed=5 start=3 sectors=100", want: "disk ok sectors=100\n"},
		{append: "mode=verify seed=6 start=3 sectors=100", want: "disk BAD sector 3\n", status: 1},
		{append: "mode=verify seed=5 start=3 sectors=101", want: "disk BAD sector 103\n", status: 1},
		{append: "sectors=2049", want: "disk BAD range capacity=2048\n", status: 1},
		{append: "mode=rotest", want: "disk write status=1\n", readonly: true},
		{append: "mode=rotest", want: "disk write status=0\n"},
		// An empty transport: magic "virt" but device ID 0. The later mmio= wins.
		{append: "mmio=0xfeb02c00", want: "disk not found\n", status: 1},
		{append: "mode=read", want: "disk bad mode\n", status: 1},
	}
	for _, s := range steps {
		out, status := run(s.append, s.readonly)
		require.Equal(t, s.want, out, s.append)
		require.Equal(t, s.status, status, s.append)
	}
}
