package loopbench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMeasureCarriesExactlyTheBytes: the receiver reads every byte and no
// more, also when the total is not a multiple of the write size, and the
// rate is the bytes over the time taken.
func TestMeasureCarriesExactlyTheBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const total = 64<<20 + 123
	r, err := Measure(ctx, Config{Bytes: total, WriteSize: 1 << 20, ReadSize: 1 << 20})
	require.NoError(t, err)
	require.Equal(t, int64(total), r.Bytes)
	require.Positive(t, r.Elapsed)
	require.InDelta(t, float64(total)/r.Elapsed.Seconds(), r.BytesPerSecond(), 1)

	// Writes and reads of other sizes: smaller than, and not dividing, each other.
	r, err = Measure(ctx, Config{Bytes: 1<<20 + 1, WriteSize: 4096, ReadSize: 1000})
	require.NoError(t, err)
	require.Equal(t, int64(1<<20+1), r.Bytes)

	r, err = Measure(ctx, Config{Bytes: 1, WriteSize: 1 << 20, ReadSize: 1 << 20})
	require.NoError(t, err)
	require.Equal(t, int64(1), r.Bytes)
}

// TestMeasureRefusesBadConfig: each bad field is named, nothing is sent.
func TestMeasureRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{Bytes: 0, WriteSize: 1, ReadSize: 1}, "Bytes"},
		{Config{Bytes: -5, WriteSize: 1, ReadSize: 1}, "Bytes"},
		{Config{Bytes: 1, WriteSize: 0, ReadSize: 1}, "WriteSize"},
		{Config{Bytes: 1, WriteSize: 1, ReadSize: -1}, "ReadSize"},
	} {
		_, err := Measure(ctx, c.cfg)
		require.ErrorContains(t, err, c.field, "%+v", c.cfg)
	}
}

// TestMeasureEndsWithItsContext: a measurement far too large for its
// context's time ends with an error when the context does, not when the
// bytes are through.
func TestMeasureEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Measure(ctx, Config{Bytes: 1 << 50, WriteSize: 1 << 20, ReadSize: 1 << 20})
	require.Error(t, err)
	require.Less(t, time.Since(start), 10*time.Second)

	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	_, err = Measure(done, Config{Bytes: 1 << 20, WriteSize: 1 << 20, ReadSize: 1 << 20})
	require.Error(t, err, "a context already ended measures nothing")
}

func TestBytesPerSecondOfNoTime(t *testing.T) {
	require.Zero(t, Result{Bytes: 10}.BytesPerSecond())
	require.Equal(t, 2e9, Result{Bytes: 2e9, Elapsed: time.Second}.BytesPerSecond())
}
