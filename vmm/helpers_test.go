package vmm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
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

// serialBuffer collects serial output for tests.
type serialBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *serialBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *serialBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the output contains want, failing after timeout.
func (s *serialBuffer) waitFor(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("serial output lacks %q after %v; have %q", want, timeout, s.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
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
