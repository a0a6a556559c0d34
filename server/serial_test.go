package server

import (
	"fmt"
	"testing"

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
