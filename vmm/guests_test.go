package vmm

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// newGuestMachine builds a machine for one of package guest's images.
func newGuestMachine(t testing.TB, s spec.Spec) (*Machine, *serialBuffer) {
	t.Helper()
	return newGuestMachineIn(t, s, "")
}

// newGuestMachineIn is newGuestMachine with disks beneath storageRoot.
func newGuestMachineIn(t testing.TB, s spec.Spec, storageRoot string) (*Machine, *serialBuffer) {
	t.Helper()
	requireKVM(t)
	out := &serialBuffer{}
	m, err := New(Config{
		Spec:        s,
		StorageRoot: storageRoot,
		Properties:  Properties{ID: [16]byte{0xa1, 0xb2, 0xc3, 0xd4, 0, 0, 0x40, 0, 0x80}, Name: "guest-vm-1"},
		Version:     "1.2.3",
		Serial:      map[spec.SerialPortNumber]io.Writer{spec.COM1: out},
	})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, out
}

// withDisk adds a virtio disk in slot 0 backed by path (relative to the
// storage root).
func withDisk(path string, readOnly bool) func(*spec.Builder) {
	return func(b *spec.Builder) {
		b.Add(spec.MustKey("disk0"), spec.VirtioDisk{Backend: spec.MustKey("disk0-file"), Slot: 0})
		b.Add(spec.MustKey("disk0-file"), spec.FileStorageBackend{Path: path, ReadOnly: readOnly, BlockSize: 512})
	}
}

// diskFile makes a sparse file of size bytes in a new storage root and
// returns the root and the file's storage path.
func diskFile(t testing.TB, size int64) (root, path string) {
	t.Helper()
	root = t.TempDir()
	path = "vm/disk.img"
	require.NoError(t, os.MkdirAll(filepath.Join(root, "vm"), 0o700))
	p := filepath.Join(root, path)
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	require.NoError(t, os.Truncate(p, size))
	return root, path
}

func TestTickerBoots(t *testing.T) {
	m, out := newGuestMachine(t, testSpec(t, 1, 64, "ticker", "pace_ms=10"))
	require.NoError(t, m.Start())
	out.waitFor(t, "tick 3\n", 20*time.Second)
	require.Contains(t, out.String(), "ticker ready\ntick 1\ntick 2\ntick 3\n")
}

func TestTickerPowersOff(t *testing.T) {
	m, out := newGuestMachine(t, testSpec(t, 1, 64, "ticker", "pace_ms=5 ticks=2"))
	require.NoError(t, m.Start())
	e := waitExit(t, m, 20*time.Second)
	require.Equal(t, Exit{Reason: ExitPoweredOff, Status: 0}, e)
	require.NoError(t, m.Close())
	require.Contains(t, out.String(), "tick 2\n")
}

func TestSMBIOSGuest(t *testing.T) {
	m, out := newGuestMachine(t, testSpec(t, 1, 64, "smbios", ""))
	require.NoError(t, m.Start())
	e := waitExit(t, m, 20*time.Second)
	require.NoError(t, m.Close())
	require.Equal(t, Exit{Reason: ExitPoweredOff}, e, out.String())
	require.Contains(t, out.String(), "smbios manufacturer=waggle product=waggle VM version=1.2.3 serial=guest-vm-1\n")
}

// TestSMBIOSGuestExplicit: a spec's explicit table is what the guest
// reads, an empty string (the manufacturer here) as no string at all.
func TestSMBIOSGuestExplicit(t *testing.T) {
	m, out := newGuestMachine(t, testSpec(t, 1, 64, "smbios", "", func(b *spec.Builder) {
		b.SetSMBIOS(spec.SMBIOS{Product: "Rocket 9", Version: "7", SerialNumber: "abc-123", SKU: "sku-1", Family: "fam"})
	}))
	require.NoError(t, m.Start())
	e := waitExit(t, m, 60*time.Second)
	require.NoError(t, m.Close())
	require.Equal(t, Exit{Reason: ExitPoweredOff}, e, out.String())
	require.Equal(t, "smbios manufacturer= product=Rocket 9 version=7 serial=abc-123\n", out.String())
}

// TestPanicGuest: the panic guest, given a pvpanic device, ends its VM as
// failed with ErrGuestPanicked right after its last tick.
func TestPanicGuest(t *testing.T) {
	m, out := newGuestMachine(t, testSpec(t, 1, 64, "panic", "pace_ms=10 panic_after=3", func(b *spec.Builder) {
		b.Add(spec.MustKey("pvpanic"), spec.PVPanic{})
	}))
	require.NoError(t, m.Start())
	e := waitExit(t, m, 60*time.Second)
	require.NoError(t, m.Close())
	require.Equal(t, ExitFailed, e.Reason, out.String())
	require.ErrorIs(t, e.Err, ErrGuestPanicked)
	require.Equal(t, "failed: the guest reported a panic (pvpanic)", e.String())
	require.Equal(t, "panic ready\ntick 1\ntick 2\ntick 3\npanicking\n", out.String())
}

// migrate moves src's VM into dst the way a live migration does: RAM
// copied while src runs, dirty pages copied again in rounds, then src
// paused, the last dirty pages and the machine state copied, src stopped and
// dst started.
func migrate(t testing.TB, src, dst *Machine, rounds int) {
	t.Helper()
	require.NoError(t, src.EnableDirtyLog())
	copyAllRAM(t, src, dst)
	for range rounds {
		// Pacing, not synchronisation: a round lasts longer than the
		// guests' dirtying period (20 ms), so each round has pages the
		// guest dirtied while src ran, as a live migration's rounds do.
		time.Sleep(30 * time.Millisecond)
		copyDirty(t, src, dst)
	}
	require.NoError(t, src.Pause())
	copyDirty(t, src, dst)
	st, err := src.ExportState()
	require.NoError(t, err)
	// Through the wire encoding, as a migration sends it.
	enc, err := st.MarshalBinary()
	require.NoError(t, err)
	st, err = UnmarshalState(enc)
	require.NoError(t, err)
	require.NoError(t, dst.ImportState(st))
	require.NoError(t, src.Stop())
	require.NoError(t, dst.Start())
}

// copyDirty copies the pages src reports dirty and returns how many.
func copyDirty(t testing.TB, src, dst *Machine) int {
	t.Helper()
	d, err := src.CollectDirty()
	require.NoError(t, err)
	page := make([]byte, PageSize)
	n := 0
	for _, b := range d {
		for i := uint64(0); i < b.Region.Pages(); i++ {
			if !b.Dirty(i) {
				continue
			}
			gpa := b.Region.GPA + i*PageSize
			require.NoError(t, src.ReadGuest(page, gpa))
			require.NoError(t, dst.WriteGuest(page, gpa))
			n++
		}
	}
	return n
}

var tickRE = regexp.MustCompile(`tick (\d+)\n`)

func ticks(s string) []int {
	var out []int
	for _, m := range tickRE.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

func TestTickerMigrates(t *testing.T) {
	s := testSpec(t, 1, 64, "ticker", "pace_ms=20 dirty_kib=2048 dirty_base_mib=16")
	src, srcOut := newGuestMachine(t, s)
	dst, dstOut := newGuestMachine(t, s)
	require.NoError(t, src.Start())
	srcOut.waitFor(t, "tick 3\n", 20*time.Second)
	migrate(t, src, dst, 3)
	require.NoError(t, src.Close()) // flushes its serial output
	before := ticks(srcOut.String())
	last := before[len(before)-1]
	dstOut.waitFor(t, "tick "+strconv.Itoa(last+3)+"\n", 20*time.Second)
	// The ticks, source then target, count up by one with no gap or repeat;
	// a line cut by the pause is finished by the target.
	all := ticks(srcOut.String() + dstOut.String())
	for i, n := range all {
		require.Equal(t, i+1, n, "ticks %v", all)
	}
	require.GreaterOrEqual(t, len(all), last+3, "source %q, target %q", srcOut.String(), dstOut.String())
}

var memOKRE = regexp.MustCompile(`mem ok (\d+)\n`)

func TestMemcheckMigrates(t *testing.T) {
	s := testSpec(t, 1, 64, "memcheck", "base_mib=4 span_mib=16 pace_ms=20")
	src, srcOut := newGuestMachine(t, s)
	dst, dstOut := newGuestMachine(t, s)
	require.NoError(t, src.Start())
	srcOut.waitFor(t, "mem ok 2\n", 30*time.Second)
	migrate(t, src, dst, 2)
	require.NoError(t, src.Close())
	passes := memOKRE.FindAllStringSubmatch(srcOut.String(), -1)
	last, _ := strconv.Atoi(passes[len(passes)-1][1])
	dstOut.waitFor(t, "mem ok "+strconv.Itoa(last+2)+"\n", 30*time.Second)
	require.NotContains(t, dstOut.String(), "BAD")
}

func TestDiskMigrates(t *testing.T) {
	root, path := diskFile(t, 1<<20)
	s := testSpec(t, 1, 64, "disk", "mode=write sectors=64 pace_ms=20", withDisk(path, false))
	src, srcOut := newGuestMachineIn(t, s, root)
	dst, dstOut := newGuestMachineIn(t, s, root)
	require.NoError(t, src.Start())
	srcOut.waitFor(t, "disk ok pass 2\n", 30*time.Second)
	migrate(t, src, dst, 2)
	require.NoError(t, src.Close())
	// Two whole passes on dst: it has read the disk back twice, and written
	// nothing but what the pattern says, after the migration.
	dstOut.await(t, 30*time.Second, "two passes", func(out string) bool { return strings.Count(out, "disk ok pass") >= 2 })
	require.NoError(t, dst.Pause())
	require.NotContains(t, dstOut.String(), "BAD", dstOut.String())
	require.NotContains(t, srcOut.String(), "BAD", srcOut.String())

	// The data is on the file: a fresh VM verifies it.
	require.NoError(t, dst.Close())
	v, vOut := newGuestMachineIn(t, testSpec(t, 1, 64, "disk", "mode=verify sectors=64", withDisk(path, true)), root)
	require.NoError(t, v.Start())
	e := waitExit(t, v, 30*time.Second)
	require.NoError(t, v.Close())
	require.Equal(t, Exit{Reason: ExitPoweredOff}, e, vOut.String())
	require.Contains(t, vOut.String(), "disk ok sectors=64\n")
}

func TestReadOnlyDiskWrite(t *testing.T) {
	root, path := diskFile(t, 64<<10)
	m, out := newGuestMachineIn(t, testSpec(t, 1, 64, "disk", "mode=rotest start=0", withDisk(path, true)), root)
	require.NoError(t, m.Start())
	e := waitExit(t, m, 30*time.Second)
	require.NoError(t, m.Close())
	require.Equal(t, Exit{Reason: ExitPoweredOff}, e, out.String())
	require.Contains(t, out.String(), "disk write status=1\n")
}

// TestDiskSpecErrors: New refuses a disk it cannot open beneath the storage
// root, naming the backend's path, before it touches KVM (so it runs on
// hosts without /dev/kvm).
func TestDiskSpecErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		disk func(t *testing.T) (root, path string)
		want error
	}{
		{"missing", func(t *testing.T) (string, string) { return t.TempDir(), "nope.img" }, ErrDiskMissing},
		{"too small", func(t *testing.T) (string, string) { return diskFile(t, 100) }, ErrDiskTooSmall},
		{"empty", func(t *testing.T) (string, string) { return diskFile(t, 0) }, ErrDiskTooSmall},
		{"no storage root", func(t *testing.T) (string, string) { _, p := diskFile(t, 1<<20); return "", p }, ErrNoStorageRoot},
		{"escape", func(t *testing.T) (string, string) {
			root := t.TempDir()
			require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(root, "passwd.img")))
			return root, "passwd.img"
		}, ErrStorageEscape},
	} {
		t.Run(c.name, func(t *testing.T) {
			root, path := c.disk(t)
			_, err := New(Config{Spec: testSpec(t, 1, 64, "disk", "", withDisk(path, false)), StorageRoot: root})
			require.ErrorIs(t, err, c.want)
			var ce *ComponentError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "components.disk0-file.path", ce.Component)
			t.Log(err)
		})
	}
}
