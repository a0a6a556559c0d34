package vmm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"golang.org/x/sys/unix"
)

func TestMarkDirty(t *testing.T) {
	r := &memRegion{Region: Region{Size: 200 * PageSize}, dirty: make([]uint64, 4)}
	r.markDirty(PageSize-1, 2)           // pages 0 and 1
	r.markDirty(63*PageSize, PageSize+1) // pages 63 and 64
	r.markDirty(130*PageSize, 1)
	d := DirtyBitmap{Region: r.Region, Bits: r.dirty}
	var got []uint64
	for i := uint64(0); i < r.Pages(); i++ {
		if d.Dirty(i) {
			got = append(got, i)
		}
	}
	require.Equal(t, []uint64{0, 1, 63, 64, 130}, got)
	require.Equal(t, 5, d.Count())
}

// TestDirtyLog checks that CollectDirty reports the guest's writes (KVM's
// log) and the VMM's own (WriteGuest), and nothing twice.
func TestDirtyLog(t *testing.T) {
	m, _ := newTestMachine(t, codeSpinner, 1, 64)
	require.NoError(t, m.EnableDirtyLog())
	d, err := m.CollectDirty()
	require.NoError(t, err)
	require.Len(t, d, 1)
	require.Zero(t, d[0].Count(), "a fresh log is empty")

	require.NoError(t, m.WriteGuest([]byte{1}, 0x300000))
	require.NoError(t, m.Start())
	require.Eventually(t, counterAbove(m, 100), 10*time.Second, time.Millisecond)
	require.NoError(t, m.Pause())
	d, err = m.CollectDirty()
	require.NoError(t, err)
	require.True(t, d[0].Dirty(0x7000/PageSize), "the guest's counter page")
	require.True(t, d[0].Dirty(0x300000/PageSize), "the VMM's write")

	d, err = m.CollectDirty()
	require.NoError(t, err)
	require.Zero(t, d[0].Count(), "collecting clears the logs")
	require.NoError(t, m.DisableDirtyLog())
}

func TestHugeMemoryFails(t *testing.T) {
	requireKVM(t)
	// Cap the address space so that 1 TiB of guest RAM cannot be mapped;
	// the Go runtime keeps working with what it has reserved.
	var old unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_AS, &old))
	lim := old
	lim.Cur = 256 << 30
	if old.Max != unix.RLIM_INFINITY && old.Max < lim.Cur {
		lim.Cur = old.Max
	}
	require.NoError(t, unix.Setrlimit(unix.RLIMIT_AS, &lim))
	defer unix.Setrlimit(unix.RLIMIT_AS, &old)

	_, err := New(Config{Spec: testSpec(t, 1, 1<<20, "test", ""), Image: testImage(codeHello)})
	var ce *ComponentError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "board.memory_mb", ce.Component)
	require.ErrorIs(t, err, ErrMemory)
	require.ErrorIs(t, err, syscall.ENOMEM)
	t.Log(err)
}

// TestMapRAMAdvisesHugePages: guest RAM is mapped so that the kernel may
// back it with transparent huge pages (smaps' THPeligible), on any host
// whose THP setting is not "never": a migration target writing fresh RAM
// with 4 KiB pages ran at a seventh of the speed (server's
// BenchmarkMigrateWrittenRAM).
func TestMapRAMAdvisesHugePages(t *testing.T) {
	setting, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(setting), "[never]") {
		t.Skipf("this host has no transparent huge pages (%q, %v)", setting, err)
	}
	const size = 16 << 20
	m, err := MapRAM(size)
	require.NoError(t, err)
	defer UnmapRAM(m)
	require.Len(t, m, size)
	smaps, err := os.ReadFile("/proc/self/smaps")
	require.NoError(t, err)
	start := fmt.Sprintf("%x-", hostAddr(m))
	var eligible string
	in := false
	for line := range strings.Lines(string(smaps)) {
		field, _, _ := strings.Cut(line, " ")
		if !strings.HasSuffix(field, ":") { // a mapping's first line
			in = strings.HasPrefix(line, start)
			continue
		}
		if v, ok := strings.CutPrefix(line, "THPeligible:"); ok && in {
			eligible = strings.TrimSpace(v)
		}
	}
	require.Equal(t, "1", eligible, "smaps of the RAM mapping at %s", start)

	_, err = MapRAM(1 << 62)
	require.Error(t, err, "a size the host cannot map is refused")
}

// testRAM is guest memory of size bytes from GPA 0, one region, mapped as a
// Machine maps it but registered with no VM: for tests of its own logic.
func testRAM(t *testing.T, size uint64) *guestMemory {
	t.Helper()
	host, err := MapRAM(size)
	require.NoError(t, err)
	t.Cleanup(func() { UnmapRAM(host) })
	r := &memRegion{Region: Region{GPA: 0, Size: size}, host: host, dirty: make([]uint64, (size/PageSize+63)/64)}
	return &guestMemory{mapping: host, regions: []*memRegion{r}}
}

// TestFill: fill reads RAM straight from a reader into guest memory, marks
// the pages dirty (even when the reader ends early, since some bytes may
// have landed), and refuses ranges outside RAM before reading a byte.
func TestFill(t *testing.T) {
	const size = 4 << 20
	g := testRAM(t, size)
	r := g.regions[0]
	dirty := func() []uint64 {
		var pages []uint64
		d := DirtyBitmap{Region: r.Region, Bits: r.dirty}
		for i := range r.Pages() {
			if d.Dirty(i) {
				pages = append(pages, i)
			}
		}
		clear(r.dirty)
		return pages
	}

	data := bytes.Repeat([]byte("waggle!!"), 3*PageSize/8)
	src := bytes.NewReader(append(data, "next frame"...))
	require.NoError(t, g.fill(src, 5*PageSize, len(data)))
	got := make([]byte, len(data))
	require.NoError(t, g.ReadAt(got, 5*PageSize))
	require.Equal(t, data, got)
	require.Equal(t, []uint64{5, 6, 7}, dirty())
	require.Equal(t, len("next frame"), src.Len(), "no byte past the frame's data was read")

	big := bytes.Repeat([]byte{0xa5}, 1<<20) // pre-faulted first
	require.NoError(t, g.fill(bytes.NewReader(big), 1<<20, len(big)))
	require.Len(t, dirty(), 256)

	err := g.fill(bytes.NewReader(data[:PageSize+10]), 64*PageSize, 2*PageSize)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Equal(t, []uint64{64, 65}, dirty(), "what landed is marked")

	for _, bad := range []struct {
		gpa uint64
		n   int
	}{{size - PageSize, 2 * PageSize}, {size, PageSize}, {1 << 62, PageSize}, {0, -1}} {
		src := bytes.NewReader(data)
		require.Error(t, g.fill(src, bad.gpa, bad.n), "%#x+%d", bad.gpa, bad.n)
		require.Equal(t, len(data), src.Len(), "nothing was read for %#x+%d", bad.gpa, bad.n)
		require.Empty(t, dirty())
	}
}

// TestFillGuestFollowsTheLifecycle: a Machine's FillGuest writes RAM that
// ReadGuest then reads, and, like WriteGuest, refuses a closed machine.
func TestFillGuestFollowsTheLifecycle(t *testing.T) {
	m, _ := newTestMachine(t, codeSpinner, 1, 64)
	data := bytes.Repeat([]byte{7}, 2*PageSize)
	require.NoError(t, m.FillGuest(bytes.NewReader(data), 0x300000, len(data)))
	got := make([]byte, len(data))
	require.NoError(t, m.ReadGuest(got, 0x300000))
	require.Equal(t, data, got)
	require.NoError(t, m.Close())
	require.Error(t, m.FillGuest(bytes.NewReader(data), 0x300000, len(data)))
}

// TestView: a view is guest memory itself (a later write shows in it), and
// ranges outside RAM are refused.
func TestView(t *testing.T) {
	const size = 1 << 20
	g := testRAM(t, size)
	v, err := g.view(3*PageSize, 2*PageSize)
	require.NoError(t, err)
	require.Len(t, v, 2*PageSize)
	require.NoError(t, g.WriteAt([]byte("seen"), 4*PageSize+8))
	require.Equal(t, "seen", string(v[PageSize+8:PageSize+12]), "the view is RAM, not a copy")
	for _, bad := range []struct {
		gpa uint64
		n   int
	}{{size - PageSize, 2 * PageSize}, {size, 1}, {0, -1}, {1 << 63, PageSize}} {
		_, err := g.view(bad.gpa, bad.n)
		require.Error(t, err, "%#x+%d", bad.gpa, bad.n)
	}
}

// TestCloseWaitsForAView: RAM handed to ViewGuest stays mapped until the
// view ends, even when the machine is closed meanwhile; a view asked for
// after Close is refused.
func TestCloseWaitsForAView(t *testing.T) {
	m, _ := newTestMachine(t, codeSpinner, 1, 64)
	require.NoError(t, m.WriteGuest([]byte("still here"), 0x300000))
	inView, release := make(chan struct{}), make(chan struct{})
	viewed := make(chan string, 1)
	go func() {
		_ = m.ViewGuest(0x300000, PageSize, func(ram []byte) error {
			close(inView)
			<-release
			viewed <- string(ram[:10]) // would fault if RAM were unmapped
			return nil
		})
	}()
	<-inView
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	require.Never(t, func() bool { return len(closed) > 0 }, 200*time.Millisecond, 10*time.Millisecond,
		"Close returned while a view was held")
	close(release)
	require.Equal(t, "still here", <-viewed)
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return once the view ended")
	}
	require.Error(t, m.ViewGuest(0x300000, PageSize, func([]byte) error { return nil }))
}
