package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/devices"
)

// historyPayload builds a version 1 serial history payload by hand: end,
// the length field n, then data (which need not be n bytes long).
func historyPayload(end uint64, n uint32, data []byte) devices.Payload {
	b := binary.LittleEndian.AppendUint64(nil, end)
	b = binary.LittleEndian.AppendUint32(b, n)
	return devices.Payload{Kind: serialHistoryKind, Version: serialHistoryV1, Data: append(b, data...)}
}

// TestSerialHistoryPayloadRoundTrip: what a source encodes, a target
// decodes to the same history, and the biggest history a source sends fits
// one Device frame.
func TestSerialHistoryPayloadRoundTrip(t *testing.T) {
	for _, h := range []serialHistoryState{
		{End: 0, Data: []byte{}},
		{End: 12345, Data: []byte{}},
		{End: 5, Data: []byte("hello")},
		{End: 1 << 40, Data: []byte("tick 7\n")},
		{End: maxSerialOffset, Data: bytes.Repeat([]byte{'x'}, maxSerialHistory)},
	} {
		p := h.Encode()
		require.Equal(t, serialHistoryKind, p.Kind)
		require.Equal(t, serialHistoryV1, p.Version)
		require.LessOrEqual(t, len(p.Data), migration.MaxDeviceState, "the payload fits a Device frame")
		got, err := decodeSerialHistory(p)
		require.NoError(t, err)
		require.Equal(t, h.End, got.End)
		require.Equal(t, string(h.Data), string(got.Data))
		_, err = migration.DecodeDevice(migration.Device{Key: serialHistoryKey, Kind: p.Kind, Version: p.Version, Data: p.Data}.Encode())
		require.NoError(t, err, "a Device frame carries it")
	}
}

// TestSerialHistoryPayloadRefusesBadInput: every malformed or oversized
// payload is refused with an error that says what is wrong, of the kind
// the devices' payloads use.
func TestSerialHistoryPayloadRefusesBadInput(t *testing.T) {
	cases := []struct {
		name string
		p    devices.Payload
		is   error
		says string
	}{
		{"another kind", devices.Payload{Kind: devices.UARTStateKind, Version: 1, Data: historyPayload(1, 1, []byte("x")).Data},
			devices.ErrUnknownKind, `want "serial_history"`},
		{"another version", devices.Payload{Kind: serialHistoryKind, Version: 2, Data: historyPayload(1, 1, []byte("x")).Data},
			devices.ErrUnknownVersion, "reads version 1"},
		{"empty", devices.Payload{Kind: serialHistoryKind, Version: serialHistoryV1}, devices.ErrMalformed, "the end offset and the length"},
		{"no length", devices.Payload{Kind: serialHistoryKind, Version: serialHistoryV1, Data: historyPayload(9, 0, nil).Data[:8]}, devices.ErrMalformed, "the end offset and the length"},
		{"length over the bytes", historyPayload(9, 4, []byte("abc")), devices.ErrMalformed, "length 4, but 3 bytes follow"},
		{"bytes over the length", historyPayload(9, 2, []byte("abc")), devices.ErrMalformed, "length 2, but 3 bytes follow"},
		{"more bytes than were printed", historyPayload(2, 3, []byte("abc")), devices.ErrMalformed, "over the end offset 2"},
		{"end offset over the bound", historyPayload(maxSerialOffset+1, 0, nil), devices.ErrMalformed, "end offset"},
		{"end offset at the top", historyPayload(^uint64(0), 1, []byte("a")), devices.ErrMalformed, "end offset"},
		{"length over the bound", historyPayload(1<<30, maxSerialHistory+1, []byte("a")), devices.ErrTooLarge,
			fmt.Sprintf("length %d, at most %d", maxSerialHistory+1, maxSerialHistory)},
		{"length at the top", historyPayload(1<<30, ^uint32(0), nil), devices.ErrTooLarge, "length"},
		{"payload over the bound", historyPayload(1<<30, maxSerialHistory+1, make([]byte, maxSerialHistory+1)), devices.ErrTooLarge,
			fmt.Sprintf("at most %d", migration.MaxDeviceState)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeSerialHistory(c.p)
			require.Error(t, err)
			require.ErrorIs(t, err, c.is)
			require.Contains(t, err.Error(), c.says)
			require.Contains(t, err.Error(), "restore "+c.p.Kind, "the error names the payload")
			var se *devices.StateError
			require.True(t, errors.As(err, &se))
		})
	}
}

// TestSerialLogSnapshotAndRestore: a snapshot is the end offset and the
// last bytes (no more than asked, nor than kept); restored into a new log,
// the history reads as at the source, offsets and all, what the new log
// keeps of it, and new output follows at the source's end offset.
// Consoles attached before the restore get the bytes too.
func TestSerialLogSnapshotAndRestore(t *testing.T) {
	var out strings.Builder
	src := newSerialLog(64)
	for i := range 40 {
		line := fmt.Sprintf("line %d\n", i)
		out.WriteString(line)
		_, err := src.Write([]byte(line))
		require.NoError(t, err)
	}
	all := out.String()
	total := uint64(len(all))

	h := src.snapshot(0, 1<<20)
	require.Equal(t, total, h.End)
	require.Equal(t, all[len(all)-64:], string(h.Data), "what is kept, no more")
	small := src.snapshot(0, 10)
	require.Equal(t, total, small.End)
	require.Equal(t, all[len(all)-10:], string(small.Data), "no more than asked")
	for _, c := range []struct {
		from uint64
		want string
	}{
		{total - 7, all[len(all)-7:]},
		{total - 64, all[len(all)-64:]},
		{total - 65, all[len(all)-64:]},
		{total, ""},
		{total + 10, ""},
	} {
		since := src.snapshot(c.from, 1<<20)
		require.Equal(t, total, since.End)
		require.Equal(t, c.want, string(since.Data), "the bytes from %d on, as far as kept", c.from)
	}

	for _, keep := range []int{64, 1 << 20, 16} {
		t.Run(fmt.Sprintf("keep=%d", keep), func(t *testing.T) {
			dst := newSerialLog(keep)
			early := dst.attach()
			require.NoError(t, dst.restore(serialHistoryState{End: h.End, Data: slices.Clone(h.Data)}))
			got := dst.history(SerialQuery{FromStart: u64(0), MaxBytes: 1 << 20})
			kept := min(keep, 64)
			require.Equal(t, total, got.End, "offsets go on from the source's")
			require.Equal(t, total-uint64(kept), got.Start)
			require.Equal(t, all[len(all)-kept:], string(got.Data))
			require.Equal(t, all[len(all)-kept:], string(<-early.Output()), "a console attached before gets the history")
			late := dst.attach()
			require.Equal(t, all[len(all)-kept:], string(<-late.Output()), "a console attached after gets it")

			_, err := dst.Write([]byte("next\n"))
			require.NoError(t, err)
			next := dst.history(SerialQuery{FromStart: u64(total), MaxBytes: 1 << 20})
			require.Equal(t, "next\n", string(next.Data), "new output is at the source's end offset")
			require.Equal(t, total, next.Start)
			require.Equal(t, total+5, next.End)
			require.Equal(t, "next\n", string(<-early.Output()))

			require.Error(t, dst.restore(h), "a log with output of its own is not overwritten")
			require.Equal(t, total+5, dst.history(SerialQuery{MostRecent: u64(0), MaxBytes: 1}).End, "its own output stays")
		})
	}

	empty := newSerialLog(64)
	require.NoError(t, empty.restore(serialHistoryState{End: 99}))
	got := empty.history(SerialQuery{MaxBytes: 100})
	require.Equal(t, uint64(99), got.Start, "an empty history at offset 99 reads empty at 99")
	require.Equal(t, uint64(99), got.End)
	require.Empty(t, got.Data)
}

// TestJoinSerialHistory: the tail follows the head, replaces it when it
// begins past the head's end or covers it, wins where they overlap, and is
// refused when it ends before the head.
func TestJoinSerialHistory(t *testing.T) {
	// head is offsets 10..20, with room for a tail.
	head := func() serialHistoryState {
		return serialHistoryState{End: 20, Data: append(make([]byte, 0, 100), "0123456789"...)}
	}
	cases := []struct {
		name string
		tail serialHistoryState
		want serialHistoryState
	}{
		{"empty tail", serialHistoryState{End: 20}, head()},
		{"follows", serialHistoryState{End: 23, Data: []byte("abc")}, serialHistoryState{End: 23, Data: []byte("0123456789abc")}},
		{"overlaps", serialHistoryState{End: 22, Data: []byte("xyzw")}, serialHistoryState{End: 22, Data: []byte("01234567xyzw")}},
		{"covers", serialHistoryState{End: 21, Data: []byte("ABCDEFGHIJK")}, serialHistoryState{End: 21, Data: []byte("ABCDEFGHIJK")}},
		{"past the head", serialHistoryState{End: 40, Data: []byte("late")}, serialHistoryState{End: 40, Data: []byte("late")}},
	}
	for _, c := range cases {
		h := head()
		tail := slices.Clone(c.tail.Data)
		got, err := joinSerialHistory(h, c.tail)
		require.NoError(t, err, c.name)
		require.Equal(t, c.want.End, got.End, c.name)
		require.Equal(t, string(c.want.Data), string(got.Data), c.name)
		require.Equal(t, &h.Data[:1][0], &got.Data[:1][0], "%s: built in the head's room, not copied", c.name)
		require.Equal(t, tail, c.tail.Data, "%s: the tail is not written over", c.name)
	}
	_, err := joinSerialHistory(head(), serialHistoryState{End: 19})
	require.ErrorContains(t, err, "tail ends at offset 19, before its head, at 20")

	big := serialHistoryState{End: maxSerialHistory, Data: bytes.Repeat([]byte{'h'}, maxSerialHistory)}
	got, err := joinSerialHistory(big, serialHistoryState{End: maxSerialHistory + 3, Data: []byte("new")})
	require.NoError(t, err)
	require.Len(t, got.Data, maxSerialHistory, "the join keeps the bound")
	require.True(t, bytes.HasSuffix(got.Data, []byte("hhnew")))
}

// FuzzDecodeSerialHistory: no payload makes the decoder panic or accept
// what the bounds refuse; what it accepts is exactly what the encoder
// writes for the history it returns, and restores into a console whose
// offsets agree with it.
func FuzzDecodeSerialHistory(f *testing.F) {
	f.Add(serialHistoryState{End: 0, Data: nil}.Encode().Data)
	f.Add(serialHistoryState{End: 3, Data: []byte("abc")}.Encode().Data)
	f.Add(serialHistoryState{End: 1 << 33, Data: []byte("tick 1\ntick 2\n")}.Encode().Data)
	f.Add(historyPayload(2, 3, []byte("abc")).Data)
	f.Add(historyPayload(9, 4, []byte("abc")).Data)
	f.Add(historyPayload(maxSerialOffset+1, 0, nil).Data)
	f.Add(historyPayload(9, ^uint32(0), []byte("abc")).Data)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := decodeSerialHistory(devices.Payload{Kind: serialHistoryKind, Version: serialHistoryV1, Data: data})
		if err != nil {
			if !errors.Is(err, devices.ErrMalformed) && !errors.Is(err, devices.ErrTooLarge) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		if len(h.Data) > maxSerialHistory || uint64(len(h.Data)) > h.End || h.End > maxSerialOffset {
			t.Fatalf("accepted out of bounds: end %d, %d bytes", h.End, len(h.Data))
		}
		if again := h.Encode().Data; !bytes.Equal(again, data) {
			t.Fatalf("accepted a payload the encoder does not write: %x", data)
		}
		for _, head := range []serialHistoryState{{}, {End: 5, Data: append(make([]byte, 0, 9), "abcde"...)}, {End: 1 << 40, Data: []byte("x")}} {
			if j, err := joinSerialHistory(head, h); err == nil && (j.End != h.End || len(j.Data) > maxSerialHistory) {
				t.Fatalf("joined to %d..%d, %d bytes: end %d, %d bytes", head.End-uint64(len(head.Data)), head.End, len(head.Data), j.End, len(j.Data))
			}
		}
		l := newSerialLog(64)
		if err := l.restore(h); err != nil {
			t.Fatal(err)
		}
		got := l.history(SerialQuery{FromStart: u64(0), MaxBytes: 1 << 20})
		if got.End != h.End || got.End-got.Start != uint64(len(got.Data)) || !bytes.HasSuffix(h.Data, got.Data) {
			t.Fatalf("restored history %d..%d (%d bytes) does not match end %d", got.Start, got.End, len(got.Data), h.End)
		}
	})
}

// TestSerialHistoryKeyIsNoComponentKey: no spec component can have the
// history's key, so a device's payload and the history never share one
// (the target refuses a key sent twice).
func TestSerialHistoryKeyIsNoComponentKey(t *testing.T) {
	_, err := spec.ParseKey(serialHistoryKey)
	require.Error(t, err)
}
