package vmm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/kvmtest"
	"github.com/wagglevm/waggle/spec"
)

// requireKVM skips the test, saying why, when /dev/kvm cannot be used.
func requireKVM(tb testing.TB) {
	tb.Helper()
	kvmtest.Require(tb)
}

// Hand-assembled 32-bit test programs, linked at 0x100020 (right after the
// Multiboot header testImage puts in front). Sources in comments; built
// with `as --32` and `ld -m elf_i386 -Ttext=0x100020 --oformat binary`.
var (
	// hello: mov $0x3f8,%dx; out 'h','i','\n'; mov $0xf4,%dx; mov $7,%al;
	// out %al,%dx; 1: hlt; jmp 1b
	codeHello = mustHex("66baf803b068eeb069eeb00aee66baf400b007eef4ebfd")
	// triple: lidt idtr (limit 0); ud2; jmp .; idtr: .word 0; .long 0
	codeTriple = mustHex("0f011d2c0010000f0bebfe90000000000000")
	// int3: lidt idtr (limit 0); int3; jmp .; idtr: .word 0; .long 0. On
	// hardware this triple-faults; KVM's instruction emulator (all CPL0
	// code on hosts without VT-x/AMD-V) cannot deliver it and reports an
	// emulation failure.
	codeInt3 = mustHex("0f011d2c001000ccebfe6690000000000000")
	// sleeper: movl $0,0x7000; 1: incl 0x7000; mov $0x500,%dx;
	// mov $10000000,%eax; out %eax,%dx; jmp 1b
	codeSleeper = mustHex("c7050070000000000000ff050070000066ba0005b880969800efebee")
	// spinner: 1: incl 0x7000; jmp 1b
	codeSpinner = mustHex("ff0500700000ebf8")
	// resetter: out 'R' to 0x3f8; mov $0x64,%dx; mov $0xfe,%al; out; jmp .
	codeResetter = mustHex("66baf803b052ee66ba6400b0feeeebfe")
	// echo: poll LSR (0x3fd) bit 0; echo RBR to THR; on '!' out 0x21 to
	// 0xf4 (4 bytes); between polls, sleep 1 ms on port 0x500.
	codeEcho = mustHex("66bafd03eca801741066baf803ecee3c21741666bafd03ebeb66ba0005b8e8030000ef66bafd03ebdb66baf400b821000000efebfe")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// testImage wraps code in a Multiboot a.out-kludge image loaded at 1 MiB,
// entry right after the 32-byte header.
func testImage(code []byte) []byte {
	const magic, flags, load = 0x1BADB002, 0x00010002, 0x100000
	h := make([]byte, 32)
	le := binary.LittleEndian
	le.PutUint32(h[0:], magic)
	le.PutUint32(h[4:], flags)
	le.PutUint32(h[8:], uint32(-(magic+flags)&0xffffffff))
	le.PutUint32(h[12:], load) // header_addr
	le.PutUint32(h[16:], load) // load_addr
	le.PutUint32(h[20:], 0)    // load_end_addr: the whole file
	le.PutUint32(h[24:], 0)    // bss_end_addr: none
	le.PutUint32(h[28:], load+32)
	return append(h, code...)
}

// testSpec is a small spec: cpus vCPUs, memMiB of RAM, COM1.
func testSpec(t testing.TB, cpus uint32, memMiB uint64, image, cmdline string, extra ...func(*spec.Builder)) spec.Spec {
	t.Helper()
	b := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: cpus, MemoryMiB: memMiB, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: image, Cmdline: cmdline}).
		Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1})
	for _, f := range extra {
		f(b)
	}
	s, err := b.Build()
	require.NoError(t, err)
	return s
}

// serialBuffer collects serial output for tests, and wakes those who wait
// for it at each write.
type serialBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	// grew, when not nil, is closed by the next Write. Guarded by mu.
	grew chan struct{}
}

func (s *serialBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if s.grew != nil {
		close(s.grew)
		s.grew = nil
	}
	return n, err
}

func (s *serialBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// snapshot returns the output so far and a channel that the next write
// closes.
func (s *serialBuffer) snapshot() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grew == nil {
		s.grew = make(chan struct{})
	}
	return s.b.String(), s.grew
}

// await waits until ok holds for the output, looking again at each write,
// and returns the output; it fails the test, saying it waited for what,
// after timeout.
func (s *serialBuffer) await(t testing.TB, timeout time.Duration, what string, ok func(out string) bool) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		out, grew := s.snapshot()
		if ok(out) {
			return out
		}
		select {
		case <-grew:
		case <-timer.C:
			t.Fatalf("serial output lacks %s after %v; have %q", what, timeout, s.String())
		}
	}
}

// waitFor waits until the output contains want, failing after timeout.
func (s *serialBuffer) waitFor(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	s.await(t, timeout, fmt.Sprintf("%q", want), func(out string) bool { return strings.Contains(out, want) })
}

// newTestMachine builds a machine for a test-made image with COM1 going to
// the returned buffer; Close is registered as cleanup.
func newTestMachine(t testing.TB, code []byte, cpus uint32, memMiB uint64, mod ...func(*Config)) (*Machine, *serialBuffer) {
	t.Helper()
	requireKVM(t)
	out := &serialBuffer{}
	cfg := Config{
		Spec:       testSpec(t, cpus, memMiB, "test", ""),
		Properties: Properties{ID: [16]byte{1, 2, 3, 4}, Name: "test-vm"},
		Version:    "test",
		Serial:     map[spec.SerialPortNumber]io.Writer{spec.COM1: out},
		Image:      testImage(code),
	}
	for _, f := range mod {
		f(&cfg)
	}
	m, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, out
}

// TestSerialBufferAwait: await wakes at the write that completes what it
// waits for, whenever it comes, and returns the output.
func TestSerialBufferAwait(t *testing.T) {
	s := &serialBuffer{}
	go func() {
		for _, part := range []string{"tick", " 1\n", "tick 2", "\n"} {
			_, _ = s.Write([]byte(part))
		}
	}()
	out := s.await(t, 10*time.Second, "two ticks", func(out string) bool { return strings.Count(out, "\n") == 2 })
	require.Equal(t, "tick 1\ntick 2\n", out)
	s.waitFor(t, "tick 2\n", time.Second)
}
