package serialhistory

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm/devices"
)

// TestRoundTrip: every history within the bounds decodes to itself, the
// largest fills a Device frame's data exactly, and one byte more than the
// bound is refused as too large. (server's serial_state_test.go checks
// every refusal.)
func TestRoundTrip(t *testing.T) {
	largest := State{End: MaxOffset, Data: bytes.Repeat([]byte{'x'}, MaxData)}
	for _, h := range []State{{}, {End: 3, Data: []byte("abc")}, {End: 1 << 40, Data: []byte("tick\n")}, largest} {
		p := h.Encode()
		require.Equal(t, Kind, p.Kind)
		require.Equal(t, V1, p.Version)
		got, err := Decode(p)
		require.NoError(t, err)
		require.Equal(t, h.End, got.End)
		require.Equal(t, string(h.Data), string(got.Data))
	}
	require.Len(t, largest.Encode().Data, migration.MaxDeviceState)
	over := State{End: MaxOffset, Data: make([]byte, MaxData+1)}
	_, err := Decode(over.Encode())
	require.ErrorIs(t, err, devices.ErrTooLarge)
	require.Equal(t, []uint32{V1}, Versions())
}
