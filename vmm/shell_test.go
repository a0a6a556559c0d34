package vmm

import (
	"errors"
	"io"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// helloConfig is a 16 MiB, one-vCPU machine that prints "hi" on COM1.
func helloConfig(t *testing.T, out io.Writer) Config {
	return Config{
		Spec:   testSpec(t, 1, 16, "test", ""),
		Serial: map[spec.SerialPortNumber]io.Writer{spec.COM1: out},
		Image:  testImage(codeHello),
	}
}

// TestNewRefusesASpentShell: a shell serves one New. New given a closed
// shell fails with ErrShellTaken and builds nothing; no KVM is needed to
// see it, since New reaches the shell before any ioctl.
func TestNewRefusesASpentShell(t *testing.T) {
	s := &Shell{} // as a shell is once taken or closed
	require.NoError(t, s.Close())
	require.NoError(t, (*Shell)(nil).Close(), "no shell")
	if m, err := New(helloConfig(t, io.Discard)); err == nil {
		m.Close() // a host with KVM
	} else if errors.Is(err, ErrShellTaken) {
		t.Fatal("New without a shell must not report ErrShellTaken")
	}
	cfg := helloConfig(t, io.Discard)
	cfg.Shell = s
	m, err := New(cfg)
	require.ErrorIs(t, err, ErrShellTaken)
	require.Nil(t, m)
}

// TestMachineOnAShell: a machine built on a shell made ahead runs its
// guest; New takes the shell, so a second New with it is refused and
// closing it afterwards does nothing to the machine.
func TestMachineOnAShell(t *testing.T) {
	requireKVM(t)
	s, err := NewShell()
	require.NoError(t, err)
	require.NotNil(t, s.ram, "the shell reserved RAM")
	reserved := hostAddr(s.ram)
	const aged = time.Second
	time.Sleep(aged) // the shell's VM clock runs meanwhile
	out := &serialBuffer{}
	cfg := helloConfig(t, out)
	cfg.Shell = s
	m, err := New(cfg)
	require.NoError(t, err)
	defer m.Close()
	require.True(t, m.StartTimings().Prepared)
	require.Equal(t, reserved, hostAddr(m.mem.mapping), "the guest's RAM is the shell's reserve")
	require.Len(t, m.mem.mapping, int(cfg.Spec.Board().MemoryMiB<<20))
	var clock kvm.ClockData
	require.NoError(t, m.vm.GetClock(&clock))
	require.Less(t, time.Duration(clock.Clock), aged, "the guest's clock starts at New, not when the shell was made")

	again := helloConfig(t, io.Discard)
	again.Shell = s
	_, err = New(again)
	require.ErrorIs(t, err, ErrShellTaken)
	require.NoError(t, s.Close())

	require.NoError(t, m.Start())
	require.Equal(t, Exit{Reason: ExitPoweredOff, Status: 7}, waitExit(t, m, 20*time.Second))
	require.NoError(t, m.Close()) // the console's last bytes are written by Close
	require.Equal(t, "hi\n", out.String())
}

// TestShellsAreReleased: an unused shell's Close, a failed New's shell and
// a machine's Close each give back every file descriptor.
func TestShellsAreReleased(t *testing.T) {
	requireKVM(t)
	before := openFDs(t)

	s, err := NewShell()
	require.NoError(t, err)
	require.Greater(t, openFDs(t), before, "a shell holds /dev/kvm and its VM")
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "closing twice")
	require.Equal(t, before, openFDs(t), "Close of an unused shell")

	// New fails before taking the shell (no such image): it closes it.
	s, err = NewShell()
	require.NoError(t, err)
	cfg := helloConfig(t, io.Discard)
	cfg.Image = nil
	cfg.Spec = testSpec(t, 1, 16, "no-such-image", "")
	cfg.Shell = s
	_, err = New(cfg)
	require.ErrorIs(t, err, ErrNoImage)
	require.Equal(t, before, openFDs(t), "New that failed before the shell")

	// New fails after taking it (more vCPUs than the host allows).
	s, err = NewShell()
	require.NoError(t, err)
	if limit := vcpuLimit(s.sys); limit+1 <= spec.MaxCPUs {
		cfg = helloConfig(t, io.Discard)
		cfg.Spec = testSpec(t, limit+1, 16, "test", "")
		cfg.Shell = s
		_, err = New(cfg)
		require.ErrorIs(t, err, ErrTooManyVCPUs)
	} else {
		t.Logf("host allows %d vCPUs, more than a spec may ask: no failure after the take", limit)
		require.NoError(t, s.Close())
	}
	require.Equal(t, before, openFDs(t), "New that failed after taking the shell")

	s, err = NewShell()
	require.NoError(t, err)
	cfg = helloConfig(t, io.Discard)
	cfg.Shell = s
	m, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.Equal(t, before, openFDs(t), "a machine's Close")
}

// TestReadableMSRs: the batched probe keeps exactly the MSRs that read
// back one by one, whatever their order, across chunks of at most
// maxIOMSRs, and leaves out an MSR whose ioctl fails outright.
func TestReadableMSRs(t *testing.T) {
	const n = 600
	list := make([]uint32, n)
	for i := range list {
		list[i] = uint32(0x1000 + i)
	}
	unreadable := func(idx uint32) bool { return idx%7 == 3 || idx == 0x1000 || idx == 0x1000+n-1 || idx%97 == 0 }
	failing := func(idx uint32) bool { return idx == 0x1100 } // EIO when it leads a call
	calls := 0
	get := func(entries []kvm.MsrEntry) (int, error) {
		calls++
		if calls > n {
			t.Fatalf("%d calls for %d MSRs: the probe does not move on", calls, n)
		}
		if len(entries) > maxIOMSRs {
			return 0, syscall.E2BIG
		}
		if len(entries) > 0 && failing(entries[0].Index) {
			return 0, syscall.EIO
		}
		for i, e := range entries {
			if unreadable(e.Index) || failing(e.Index) {
				return i, nil
			}
			entries[i].Data = uint64(e.Index) * 3
		}
		return len(entries), nil
	}
	var want []uint32
	for _, idx := range list {
		if !unreadable(idx) && !failing(idx) {
			want = append(want, idx)
		}
	}
	got := readableMSRs(get, list)
	require.Equal(t, want, got)
	require.Less(t, calls, n/3, "one call per run of readable MSRs, not one per MSR")

	require.Empty(t, readableMSRs(get, nil))
	all := readableMSRs(func(e []kvm.MsrEntry) (int, error) { return len(e), nil }, list)
	require.True(t, slices.Equal(list, all))
	none := readableMSRs(func([]kvm.MsrEntry) (int, error) { return 0, syscall.EIO }, list)
	require.Empty(t, none)
	// A count the kernel never gives (more than asked) reads as nothing.
	bogus := readableMSRs(func(e []kvm.MsrEntry) (int, error) { return len(e) + 1, nil }, list[:3])
	require.Empty(t, bogus)
}

// TestReadableMSRsMatchesOneByOne: on this host's KVM, the batched probe
// finds the same MSRs as reading each alone.
func TestReadableMSRsMatchesOneByOne(t *testing.T) {
	requireKVM(t)
	m, _ := newTestMachine(t, codeHello, 1, 16)
	list, err := m.sys.MSRIndexList()
	require.NoError(t, err)
	var oneByOne []uint32
	require.NoError(t, m.vcpus[0].call(func(c *kvm.VCPU) error {
		for _, idx := range list {
			if n, err := c.GetMSRs([]kvm.MsrEntry{{Index: idx}}); err == nil && n == 1 {
				oneByOne = append(oneByOne, idx)
			}
		}
		return nil
	}))
	require.NotEmpty(t, oneByOne)
	require.Equal(t, oneByOne, m.caps.msrs)
}

// TestShellRAMReserve: a shell's RAM reserve starts on a huge page, its
// head is in memory before anything touches it, a guest's RAM is claimed
// from its start with the rest unmapped, and Close unmaps a reserve no
// guest claimed but never RAM a guest holds.
func TestShellRAMReserve(t *testing.T) {
	s := &Shell{ram: reserveRAM()}
	require.NotNil(t, s.ram, "this host refused the reserve")
	full := s.ram
	require.Zero(t, hostAddr(full)%hugePage, "the reserve is aligned to a huge page")
	require.GreaterOrEqual(t, len(full), 64<<20)
	vec := make([]byte, ramHead/PageSize)
	require.NoError(t, mincore(full[:ramHead], vec))
	for i, v := range vec {
		require.Equal(t, byte(1), v&1, "page %d of the head is not in memory", i)
	}

	require.Nil(t, s.claimRAM(uint64(len(full))+PageSize), "a guest larger than the reserve gets none of it")
	require.Nil(t, s.claimRAM(64<<20+1), "nor does a size that is not whole pages")
	require.Nil(t, s.claimRAM(0), "nor a guest of no RAM")
	const size = 64 << 20
	ram := s.claimRAM(size)
	require.Len(t, ram, size)
	require.Equal(t, hostAddr(full), hostAddr(ram))
	require.Equal(t, size, cap(ram), "the guest cannot reach past its RAM")
	require.ErrorIs(t, mincore(full[size:size+PageSize], vec[:1]), unix.ENOMEM, "the rest of the reserve is unmapped")
	require.NoError(t, mincore(ram[size-PageSize:], vec[:1]))
	require.Nil(t, s.claimRAM(size), "a reserve is claimed once")
	require.NoError(t, s.Close())
	require.NoError(t, mincore(ram[:PageSize], vec[:1]), "Close unmapped RAM a guest holds")
	require.Equal(t, make([]byte, ramHead), ram[:ramHead], "fresh RAM reads zero")
	ram[size-1] = 1
	require.NoError(t, UnmapRAM(ram))

	unclaimed := &Shell{ram: reserveRAM()}
	head := unclaimed.ram[:PageSize]
	require.NoError(t, unclaimed.Close())
	require.ErrorIs(t, mincore(head, vec[:1]), unix.ENOMEM, "Close left the reserve mapped")
	require.NoError(t, unclaimed.Close(), "a second Close does nothing")
}

// mincore is mincore(2): vec gets a byte per page of b, its low bit set for
// a page in memory; ENOMEM when part of b is not mapped.
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		return e
	}
	return nil
}
