package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func u64(v uint64) *uint64 { return &v }

func TestSerialLogHistory(t *testing.T) {
	l := newSerialLog(10)
	fmt.Fprint(l, "0123456789abcdef") // 16 bytes; only the last 10 are kept
	h := l.history(SerialQuery{MaxBytes: 100})
	require.Equal(t, "6789abcdef", string(h.Data))
	require.Equal(t, uint64(6), h.Start)
	require.Equal(t, uint64(16), h.End)

	h = l.history(SerialQuery{FromStart: u64(2), MaxBytes: 100})
	require.Equal(t, uint64(6), h.Start, "bytes no longer kept are skipped")
	h = l.history(SerialQuery{FromStart: u64(12), MaxBytes: 2})
	require.Equal(t, "cd", string(h.Data))
	h = l.history(SerialQuery{MostRecent: u64(3), MaxBytes: 100})
	require.Equal(t, "def", string(h.Data))
	h = l.history(SerialQuery{FromStart: u64(99), MaxBytes: 100})
	require.Empty(t, h.Data)
	require.Equal(t, uint64(16), h.Start)
}

func TestSerialSlowReaderIsCutOffNotWaitedFor(t *testing.T) {
	l := newSerialLog(1 << 20)
	fast, slow := l.attach(), l.attach()
	for i := range subscriberQueue * 2 {
		fmt.Fprintf(l, "line %d\n", i) // never blocks, though slow reads nothing
		require.Equal(t, fmt.Sprintf("line %d\n", i), string(<-fast.Output()))
	}
	n := 0
	for range slow.Output() {
		n++
	}
	require.Equal(t, subscriberQueue, n, "the slow reader got what fit, then its channel closed")
	require.Equal(t, 1, l.subscribers())
	fast.Close()
	require.Equal(t, 0, l.subscribers())
}

// TestSerialInputEndsWithItsConsole: input the guest does not take (its
// receive FIFO is full) waits, but not beyond the console: closing the
// console ends the write instead of leaving it blocked.
func TestSerialInputEndsWithItsConsole(t *testing.T) {
	l := newSerialLog(1 << 10)
	l.setInput(func(ctx context.Context, p []byte) error {
		<-ctx.Done() // a guest that never reads
		return ctx.Err()
	})
	c := l.attach()
	done := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("hello"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the write ended before the console closed: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	require.NoError(t, c.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("the write is still blocked after the console closed")
	}
}

// TestSerialAttachAfterTheVMIsGone: a console attached once the VM has
// ended gets what was kept and is then closed, rather than waiting forever;
// a new instance's consoles stay open again.
func TestSerialAttachAfterTheVMIsGone(t *testing.T) {
	l := newSerialLog(1 << 10)
	fmt.Fprint(l, "tick 1\n")
	l.closeAll(consoleVMStopped)
	c := l.attach()
	var got []byte
	for b := range c.Output() {
		got = append(got, b...)
	}
	require.Equal(t, "tick 1\n", string(got), "the history, then the end")
	_, err := c.Write([]byte("x"))
	require.ErrorIs(t, err, errNoSerialInput)

	l.reopen()
	c = l.attach()
	require.Equal(t, "tick 1\n", string(<-c.Output()))
	fmt.Fprint(l, "tick 2\n")
	require.Equal(t, "tick 2\n", string(<-c.Output()), "attached to the new instance's output")
	require.Equal(t, 1, l.subscribers())
}

// TestSerialLogKeepsTheMostRecentBytes writes byte by byte well past what is
// kept and checks that history and a new console see exactly the last keep
// bytes, at the right offsets.
func TestSerialLogKeepsTheMostRecentBytes(t *testing.T) {
	const keep = 100
	l := newSerialLog(keep)
	var all []byte
	for i := range 1000 {
		b := []byte{byte('a' + i%26)}
		all = append(all, b...)
		l.Write(b)
		h := l.history(SerialQuery{MaxBytes: 1 << 20})
		n := min(len(all), keep)
		require.Equal(t, string(all[len(all)-n:]), string(h.Data), "after %d bytes", len(all))
		require.Equal(t, uint64(len(all)-n), h.Start)
		require.Equal(t, uint64(len(all)), h.End)
		require.LessOrEqual(t, len(l.buf), 2*keep, "the buffer stays bounded")
	}
	c := l.attach()
	require.Equal(t, string(all[len(all)-keep:]), string(<-c.Output()))
}

// BenchmarkSerialLogWriteByte: a guest writes its console byte by byte.
// Once the 1 MiB log is full, a byte must cost about what it costs before
// (the reference, measured in the same run), not a 1 MiB copy.
func BenchmarkSerialLogWriteByte(b *testing.B) {
	perByte := func(l *serialLog, n int) time.Duration {
		p := []byte{'x'}
		start := time.Now()
		for range n {
			l.Write(p)
		}
		return time.Since(start) / time.Duration(n)
	}
	const n = 1 << 20
	ref := perByte(newSerialLog(DefaultSerialKeep), n) // filling an empty log
	full := newSerialLog(DefaultSerialKeep)
	full.Write(make([]byte, DefaultSerialKeep))
	var got time.Duration
	for b.Loop() {
		got = perByte(full, n)
	}
	b.ReportMetric(float64(got.Nanoseconds()), "ns/byte-full")
	b.ReportMetric(float64(ref.Nanoseconds()), "ref-ns/byte-filling")
}
