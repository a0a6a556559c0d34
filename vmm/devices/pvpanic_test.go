package devices

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// newTestPVPanic returns a device, its panic count and its log.
func newTestPVPanic() (*PVPanic, *atomic.Int32, *bytes.Buffer) {
	var panics atomic.Int32
	var log bytes.Buffer
	return NewPVPanic(func() { panics.Add(1) }, slog.New(slog.NewTextHandler(&log, nil))), &panics, &log
}

func TestPVPanicReadsItsEvents(t *testing.T) {
	p, panics, _ := newTestPVPanic()
	for _, n := range []int{1, 2, 4} {
		data := bytes.Repeat([]byte{0x5a}, n)
		p.PortRead(0x505, data)
		require.Equal(t, byte(PVPanicPanicked|PVPanicCrashLoaded), data[0], "%d bytes", n)
		require.Equal(t, byte(0x03), data[0], "the bits QEMU's guests test")
		for _, b := range data[1:] {
			require.Equal(t, byte(0xff), b, "bytes past the one port read as nothing there")
		}
	}
	p.PortRead(0x505, nil) // no panic on an empty access
	require.Zero(t, panics.Load(), "a read reports nothing")
}

// TestPVPanicWrites: every write with bit 0 set is a panic, whatever else
// is set; no other write is.
func TestPVPanicWrites(t *testing.T) {
	for v := 0; v < 256; v++ {
		for _, n := range []int{1, 2, 4} {
			p, panics, _ := newTestPVPanic()
			data := make([]byte, n)
			data[0] = byte(v)
			for i := 1; i < n; i++ {
				data[i] = 0x01 // a panicked bit in a byte that is not the register
			}
			p.PortWrite(0x505, data)
			want := int32(0)
			if v&1 != 0 {
				want = 1
			}
			require.Equal(t, want, panics.Load(), "write %#x of %d bytes", v, n)
		}
	}
	p, panics, _ := newTestPVPanic()
	p.PortWrite(0x505, nil)
	require.Zero(t, panics.Load())
}

// TestPVPanicCrashLoadedIsLoggedOnce: crash loaded is logged, once, and
// ends nothing; a panic after it still counts.
func TestPVPanicCrashLoadedIsLoggedOnce(t *testing.T) {
	p, panics, log := newTestPVPanic()
	for range 100 {
		p.PortWrite(0x505, []byte{PVPanicCrashLoaded})
	}
	require.Zero(t, panics.Load())
	require.Equal(t, 1, strings.Count(log.String(), "crash kernel"), log.String())
	p.PortWrite(0x505, []byte{PVPanicPanicked | PVPanicCrashLoaded})
	p.PortWrite(0x505, []byte{PVPanicPanicked})
	require.Equal(t, int32(2), panics.Load(), "each panicked write calls the handler")
	require.Contains(t, log.String(), "panic")
}

// TestPVPanicIsNotStateful: the device keeps no state, so a migration has
// nothing of it to carry.
func TestPVPanicIsNotStateful(t *testing.T) {
	var d any = NewPVPanic(func() {}, nil)
	_, stateful := d.(Stateful)
	require.False(t, stateful)
	_, port := d.(PortIO)
	require.True(t, port)
}
