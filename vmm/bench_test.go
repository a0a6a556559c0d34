package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// Each benchmark reports, beside its own figures, a reference measured in
// the same run on the same machine, and the ratio of the two:
//
//	ref-ns/op  the reference's time per operation
//	x-ref      ns/op (or the named figure) divided by ref-ns/op

// bareVCPU is a minimal VM with no VMM around it: one vCPU in real mode
// looping over "out %al, $0x80", so every KVM_RUN is one exit round trip.
type bareVCPU struct {
	sys *kvm.System
	vm  *kvm.VM
	cpu *kvm.VCPU
	mem []byte
}

func newBareVCPU(tb testing.TB) *bareVCPU {
	tb.Helper()
	sys, err := kvm.Open()
	if err != nil {
		tb.Fatal(err)
	}
	bv := &bareVCPU{sys: sys}
	if bv.vm, err = sys.CreateVM(); err != nil {
		tb.Fatal(err)
	}
	if bv.mem, err = unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE); err != nil {
		tb.Fatal(err)
	}
	copy(bv.mem[0x1000:], []byte{0xe6, 0x80, 0xeb, 0xfc}) // 1: out %al,$0x80; jmp 1b
	if err := bv.vm.SetUserMemoryRegion(&kvm.UserspaceMemoryRegion{MemorySize: 1 << 20, UserspaceAddr: hostAddr(bv.mem)}); err != nil {
		tb.Fatal(err)
	}
	if bv.cpu, err = bv.vm.CreateVCPU(0); err != nil {
		tb.Fatal(err)
	}
	var s kvm.Sregs
	if err := bv.cpu.GetSregs(&s); err != nil {
		tb.Fatal(err)
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := bv.cpu.SetSregs(&s); err != nil {
		tb.Fatal(err)
	}
	if err := bv.cpu.SetRegs(&kvm.Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		tb.Fatal(err)
	}
	return bv
}

// run runs the vCPU to its next exit, which is the next OUT.
func (bv *bareVCPU) run(tb testing.TB) {
	if err := runToExit(bv.cpu.Run, func() uint32 { return bv.cpu.RunData().ExitReason }, kvm.KVM_EXIT_IO); err != nil {
		tb.Fatal(err)
	}
}

// maxInterruptedRuns bounds how often runToExit re-enters after a signal
// before it gives up: enough for any burst of the Go runtime's preemption
// signals, few enough that a vCPU that never exits fails the benchmark.
const maxInterruptedRuns = 1 << 16

// runToExit calls run (one KVM_RUN) until the vCPU exits with reason want.
// As in the machine's own run loop, a KVM_RUN interrupted by a signal
// (EINTR, or EAGAIN; the Go runtime preempts threads with SIGURG) is no
// exit of the guest: the vCPU is simply entered again. So is an exit of
// reason KVM_EXIT_INTR. Any other error or exit reason is returned.
func runToExit(run func() error, reason func() uint32, want uint32) error {
	for range maxInterruptedRuns {
		if err := run(); err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return err
		}
		switch r := reason(); r {
		case want:
			return nil
		case kvm.KVM_EXIT_INTR:
			continue
		default:
			return fmt.Errorf("exit reason %d, want %d", r, want)
		}
	}
	return fmt.Errorf("KVM_RUN interrupted %d times in a row", maxInterruptedRuns)
}

func (bv *bareVCPU) close() {
	bv.cpu.Close()
	bv.vm.Close()
	unix.Munmap(bv.mem)
	bv.sys.Close()
}

// timePer runs f n times and returns the mean duration.
func timePer(n int, f func()) time.Duration {
	start := time.Now()
	for range n {
		f()
	}
	return time.Since(start) / time.Duration(n)
}

func report(b *testing.B, name string, v, ref time.Duration) {
	b.ReportMetric(float64(v.Nanoseconds()), name+"-ns/op")
	b.ReportMetric(float64(v)/float64(ref), name+"-x-ref")
}

// BenchmarkCreateToFirstSerialByte: New, Start and the ticker's first byte
// on COM1, then Close. Reference: create a bare VM and vCPU and run it to
// its first I/O exit.
func BenchmarkCreateToFirstSerialByte(b *testing.B) {
	requireKVM(b)
	ref := timePer(10, func() {
		bv := newBareVCPU(b)
		bv.run(b)
		bv.close()
	})
	s := testSpec(b, 1, 64, "ticker", "pace_ms=1000")
	for b.Loop() {
		out := &firstByte{c: make(chan struct{})}
		m, err := New(Config{Spec: s, Serial: map[spec.SerialPortNumber]io.Writer{spec.COM1: out}, Image: guestImage(b, "ticker")})
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Start(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-out.c:
		case <-time.After(20 * time.Second):
			b.Fatal("no serial output")
		}
		m.Close()
	}
	b.ReportMetric(float64(ref.Nanoseconds()), "ref-ns/op")
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(ref), "x-ref")
}

func guestImage(tb testing.TB, name string) []byte {
	img, err := lookupImage(name)
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

// firstByte closes c on the first write.
type firstByte struct {
	c    chan struct{}
	done bool
}

func (f *firstByte) Write(p []byte) (int, error) {
	if !f.done && len(p) > 0 {
		f.done = true
		close(f.c)
	}
	return len(p), nil
}

// BenchmarkPauseResume: Pause then Resume of a running 2-vCPU machine.
// Reference: one bare KVM_RUN exit round trip.
func BenchmarkPauseResume(b *testing.B) {
	requireKVM(b)
	bv := newBareVCPU(b)
	ref := timePer(2000, func() { bv.run(b) })
	bv.close()
	m, _ := newTestMachine(b, codeSpinner, 2, 64)
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	var pause, resume time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := m.Pause(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := m.Resume(); err != nil {
			b.Fatal(err)
		}
		pause += t1.Sub(t0)
		resume += time.Since(t1)
	}
	b.ReportMetric(float64(ref.Nanoseconds()), "ref-ns/op")
	report(b, "pause", pause/time.Duration(b.N), ref)
	report(b, "resume", resume/time.Duration(b.N), ref)
}

// BenchmarkStateExportImport: ExportState, encode, decode and ImportState
// into a second machine, both paused. Reference: a memcpy of the encoded
// state's bytes... which is far too small to compare with ioctls, so the
// reference is one bare KVM_GET_REGS ioctl instead.
func BenchmarkStateExportImport(b *testing.B) {
	requireKVM(b)
	bv := newBareVCPU(b)
	var regs kvm.Regs
	ref := timePer(10000, func() {
		if err := bv.cpu.GetRegs(&regs); err != nil {
			b.Fatal(err)
		}
	})
	bv.close()
	s := testSpec(b, 1, 64, "ticker", "pace_ms=10")
	src, srcOut := newTestMachine(b, nil, 1, 64, func(c *Config) { c.Spec, c.Image = s, guestImage(b, "ticker") })
	dst, _ := newTestMachine(b, nil, 1, 64, func(c *Config) { c.Spec, c.Image = s, guestImage(b, "ticker") })
	if err := src.Start(); err != nil {
		b.Fatal(err)
	}
	// The guest has booted and runs its loop: its state is a running one.
	srcOut.waitFor(b, "tick 1\n", 20*time.Second)
	if err := src.Pause(); err != nil {
		b.Fatal(err)
	}
	var export, imp time.Duration
	size := 0
	for b.Loop() {
		t0 := time.Now()
		st, err := src.ExportState()
		if err != nil {
			b.Fatal(err)
		}
		enc, err := st.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		st, err = UnmarshalState(enc)
		if err != nil {
			b.Fatal(err)
		}
		if err := dst.ImportState(st); err != nil {
			b.Fatal(err)
		}
		export += t1.Sub(t0)
		imp += time.Since(t1)
		size = len(enc)
	}
	b.ReportMetric(float64(ref.Nanoseconds()), "ref-ns/op")
	b.ReportMetric(float64(size), "state-bytes")
	report(b, "export", export/time.Duration(b.N), ref)
	report(b, "import", imp/time.Duration(b.N), ref)
}

// BenchmarkDirtyLogScan1GiB: CollectDirty over 1 GiB of guest RAM with KVM
// dirty logging on, while the ticker guest rewrites 64 MiB of it (16384
// pages) every 20 ms and the VMM writes 16 pages per scan. Before each scan,
// with the timer stopped, it waits until the guest has dirtied its whole
// range since the previous scan, so every scan finds about 16400 dirty pages
// (dirty-pages/op). Reference: copying 1 GiB (what a migration round would
// cost without dirty tracking).
func BenchmarkDirtyLogScan1GiB(b *testing.B) {
	requireKVM(b)
	const (
		size      = 1 << 30
		dirtyBase = 16 << 20
	)
	s := testSpec(b, 1, size>>20, "ticker", "pace_ms=20 dirty_kib=65536 dirty_base_mib=16")
	m, out := newTestMachine(b, nil, 1, size>>20, func(c *Config) { c.Spec, c.Image = s, guestImage(b, "ticker") })
	chunk := make([]byte, 64<<20)
	src := make([]byte, 64<<20)
	for i := range src {
		src[i] = byte(i)
	}
	ref := timePer(2, func() {
		for range size / len(chunk) {
			copy(chunk, src)
		}
	})
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	out.waitFor(b, "tick 2\n", 20*time.Second)
	if err := m.EnableDirtyLog(); err != nil {
		b.Fatal(err)
	}
	// tick reads the number of the tick the guest is dirtying (or last
	// dirtied): it writes it first to the range's first page.
	// It fails nothing itself: it is checked inside Eventually's condition.
	tick := func() (uint64, error) {
		var word [8]byte
		err := m.ReadGuest(word[:], dirtyBase)
		return binary.LittleEndian.Uint64(word[:]), err
	}
	page := make([]byte, PageSize)
	pages := 0
	for b.Loop() {
		// Tick n+1 begins after this read, hence after the last scan;
		// once tick n+2 has begun, n+1 has dirtied every page.
		b.StopTimer()
		n, err := tick()
		if err != nil {
			b.Fatal(err)
		}
		require.Eventually(b, func() bool {
			now, err := tick()
			return err == nil && now >= n+2
		}, 20*time.Second, time.Millisecond, "the guest is stuck at tick %d", n)
		b.StartTimer()
		for i := range 16 {
			if err := m.WriteGuest(page, 512<<20+uint64(i)<<20); err != nil {
				b.Fatal(err)
			}
		}
		d, err := m.CollectDirty()
		if err != nil {
			b.Fatal(err)
		}
		pages += d[0].Count()
	}
	b.ReportMetric(float64(pages)/float64(b.N), "dirty-pages/op")
	b.ReportMetric(float64(ref.Nanoseconds()), "ref-ns/op")
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(ref), "x-ref")
}
