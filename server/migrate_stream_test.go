package server

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/vmm"
)

// TestStreamIdleTimeout: a wait for a silent peer ends after the idle
// timeout; a slow peer that keeps sending is not silent, however long the
// whole read takes; the hard deadline ends even a trickle.
func TestStreamIdleTimeout(t *testing.T) {
	// The trickle's step is far below the idle limit, so that a loaded
	// machine delaying a step does not make the peer look silent.
	const idle, step = time.Second, 20 * time.Millisecond
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	sc := newStreamConn(a, idle)

	read := make(chan error, 1)
	go func() {
		_, err := sc.Read(make([]byte, 1))
		read <- err
	}()
	select {
	case err := <-read:
		require.ErrorIs(t, err, errSilentPeer)
		require.Contains(t, err.Error(), "sent nothing for 1s")
	case <-time.After(10 * time.Second):
		t.Fatal("a read from a silent peer did not time out")
	}
	var err error

	// A byte every step: never idle for the limit.
	trickle := func(n int) {
		tick := time.NewTicker(step)
		defer tick.Stop()
		for range n {
			<-tick.C
			if _, err := b.Write([]byte{1}); err != nil {
				return
			}
		}
	}
	go trickle(20)
	_, err = io.ReadFull(sc, make([]byte, 20))
	require.NoError(t, err)

	// With an overall deadline, a trickle that would take longer (200
	// steps, 4 s) is cut at the deadline (2 s) although it is never idle.
	sc.setLimits(idle, time.Now().Add(2*idle))
	go trickle(200)
	_, err = io.ReadFull(sc, make([]byte, 200))
	require.ErrorIs(t, err, errSilentPeer)
	require.Contains(t, err.Error(), "took too long")
}

// TestStreamStop: stop ends a blocked read and a blocked write at once,
// with its cause, and every later wait; lastWords lets one more frame out.
func TestStreamStop(t *testing.T) {
	cause := errors.New("stop was requested")
	for _, write := range []bool{false, true} {
		a, b := net.Pipe()
		sc := newStreamConn(a, time.Minute)
		done := make(chan error, 1)
		go func() {
			var err error
			if write {
				_, err = sc.Write(make([]byte, 1<<20)) // nobody reads b
			} else {
				_, err = sc.Read(make([]byte, 1))
			}
			done <- err
		}()
		sc.stop(cause)
		select {
		case err := <-done:
			require.ErrorIs(t, err, cause)
		case <-time.After(10 * time.Second):
			t.Fatal("stop did not end the wait")
		}
		_, err := sc.Read(make([]byte, 1))
		require.ErrorIs(t, err, cause, "a stopped stream stays stopped")
		_, err = sc.Write([]byte{1})
		require.ErrorIs(t, err, cause)

		sc.lastWords(time.Second)
		go func() { _, _ = io.ReadFull(b, make([]byte, 3)) }()
		_, err = sc.Write([]byte{1, 2, 3})
		require.NoError(t, err, "the last words get out")
		a.Close()
		b.Close()
	}
}

// TestSanitize: a peer's text is shown as printable ASCII, cut short.
func TestSanitize(t *testing.T) {
	require.Equal(t, "a?b?c", sanitize("a\x00b\nc", 100))
	require.Equal(t, "??", sanitize("é", 100))
	require.Equal(t, "abcdefg...", sanitize("abcdefghijklmnop", 10))
	require.Equal(t, "plain words", sanitize("plain words", 100))
}

// TestSetRuns: runs of set pages come out in order, as GPA and length,
// split at max, across word boundaries, with the region's base added.
func TestSetRuns(t *testing.T) {
	r := vmm.Region{GPA: 1 << 32, Size: 200 * vmm.PageSize}
	bm := vmm.DirtyBitmap{Region: r, Bits: make([]uint64, 4)}
	for _, p := range []uint64{0, 1, 2, 62, 63, 64, 65, 130, 199} {
		bm.Bits[p/64] |= 1 << (p % 64)
	}
	type run struct{ gpa, n uint64 }
	collect := func(max uint64) []run {
		var out []run
		for gpa, n := range setRuns(bm, max) {
			out = append(out, run{(gpa - r.GPA) / vmm.PageSize, n})
		}
		return out
	}
	require.Equal(t, []run{{0, 3}, {62, 4}, {130, 1}, {199, 1}}, collect(r.Pages()))
	require.Equal(t, []run{{0, 2}, {2, 1}, {62, 2}, {64, 2}, {130, 1}, {199, 1}}, collect(2))
	require.Empty(t, func() []run { bm.Bits = make([]uint64, 4); return collect(8) }())
}
