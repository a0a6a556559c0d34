package server

import (
	"encoding/binary"
	"fmt"
	"maps"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm/devices"
)

// The serial console's history moves with a migrated VM as device payloads
// of their own kind, although no device of the VMM holds them: the
// server's console log does. The target lists the kind among the device
// state versions of its Hello; the source sends the history only to a
// target that lists it (a released v0.1.0 target does not, and its history
// starts empty). A target that gets none (a released source sends none)
// starts its history empty.
//
// The history goes in two pieces, so that its bulk costs the pause
// nothing: the head, what the guest printed up to the start of the
// pre-copy, sent while the VM runs (after Ready, before the first RAM
// frame); and the tail, what it printed after the head, sent once the VM
// is paused (after the devices' payloads, before Machine). The target
// joins them: the tail follows the head, or, when it begins past the
// head's end (more than the bound printed during the pre-copy), replaces
// it.
//
// Offsets continue: each piece carries the source's end offset (how many
// bytes the guest had ever printed there) and the bytes just before it, and
// the target's history goes on from the tail's end offset. A reader's
// from_start offset, taken at the source, means the same byte at the
// target.
//
// The source takes the tail after the VM paused and its state was
// exported. Output the guest wrote in the instant before the pause may
// still be on its way from the UART's output buffer to the history (it is
// drained off the vCPU thread): such bytes stay behind.

// Serial history payload identity and limits.
const (
	// serialHistoryKind is the payload's kind in Hello and Device frames.
	serialHistoryKind = "serial_history"
	// serialHistoryV1 is its first encoding: the end offset (u64), the
	// length of the bytes that follow (u32), then those bytes, the last
	// ones the guest printed before the end offset; little-endian, as the
	// devices' payloads are.
	serialHistoryV1 uint32 = 1
	// serialHistoryKey and serialHistoryTailKey are the keys of the head's
	// and the tail's Device frames: no spec component can have them (no
	// spec key has an @), so they are never a device's. The console is
	// the instance's, on COM1.
	serialHistoryKey     = "@console"
	serialHistoryTailKey = "@console-tail"
	// serialHistoryHeader is the size of the end offset and the length.
	serialHistoryHeader = 8 + 4
	// maxSerialHistory bounds the bytes carried: the last MiB of output
	// less the header, so that the payload fits one Device frame's data
	// (migration.MaxDeviceState). Older bytes stay behind.
	maxSerialHistory = migration.MaxDeviceState - serialHistoryHeader
	// maxSerialOffset bounds the end offset: far beyond what any guest
	// prints (2^62 bytes), and room for offsets, signed 64-bit numbers in
	// the API, to grow after the migration.
	maxSerialOffset = 1 << 62
)

// serialHistoryVersions are the versions of the serial history payload this
// build reads and writes, oldest first.
var serialHistoryVersions = []uint32{serialHistoryV1}

// importableStateVersions is what a target offers in its Hello: the
// devices' payload versions and the serial history's.
func importableStateVersions() map[string][]uint32 {
	vs := maps.Clone(devices.ImportableVersions())
	vs[serialHistoryKind] = serialHistoryVersions
	return vs
}

// serialHistoryState is the serial history a migration carries: Data is
// output [End-len(Data), End) of everything the guest printed.
type serialHistoryState struct {
	End  uint64
	Data []byte
}

// encode returns the payload in version 1.
func (h serialHistoryState) encode() devices.Payload {
	b := make([]byte, 0, serialHistoryHeader+len(h.Data))
	b = binary.LittleEndian.AppendUint64(b, h.End)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.Data)))
	b = append(b, h.Data...)
	return devices.Payload{Kind: serialHistoryKind, Version: serialHistoryV1, Data: b}
}

// decodeSerialHistory checks and parses a serial history payload from a
// peer. It refuses another kind or version, a payload over the bound, a
// truncated one, one with bytes left over, and one that carries more bytes
// than its end offset says were ever printed. The Data returned is part of
// p.Data.
func decodeSerialHistory(p devices.Payload) (serialHistoryState, error) {
	fail := func(err error, format string, args ...any) (serialHistoryState, error) {
		return serialHistoryState{}, &devices.StateError{Op: "restore", Kind: p.Kind, Version: p.Version,
			Err: fmt.Errorf("%w: %s", err, fmt.Sprintf(format, args...))}
	}
	switch {
	case p.Kind != serialHistoryKind:
		return fail(devices.ErrUnknownKind, "want %q", serialHistoryKind)
	case p.Version != serialHistoryV1:
		return fail(devices.ErrUnknownVersion, "this build reads version %d", serialHistoryV1)
	case len(p.Data) > serialHistoryHeader+maxSerialHistory:
		return fail(devices.ErrTooLarge, "%d bytes, at most %d", len(p.Data), serialHistoryHeader+maxSerialHistory)
	case len(p.Data) < serialHistoryHeader:
		return fail(devices.ErrMalformed, "%d bytes: the end offset and the length alone take %d", len(p.Data), serialHistoryHeader)
	}
	end := binary.LittleEndian.Uint64(p.Data)
	n := binary.LittleEndian.Uint32(p.Data[8:])
	rest := p.Data[serialHistoryHeader:]
	switch {
	case end > maxSerialOffset:
		return fail(devices.ErrMalformed, "end offset %d is over %d", end, uint64(maxSerialOffset))
	case n > maxSerialHistory:
		return fail(devices.ErrTooLarge, "length %d, at most %d", n, maxSerialHistory)
	case int(n) != len(rest):
		return fail(devices.ErrMalformed, "length %d, but %d bytes follow", n, len(rest))
	case uint64(n) > end:
		return fail(devices.ErrMalformed, "length %d is over the end offset %d: more bytes than were ever printed", n, end)
	}
	return serialHistoryState{End: end, Data: rest}, nil
}

// snapshot returns the end offset of everything written and the bytes
// written from offset from on (all that is kept, from 0), at most max of
// them, the last.
func (l *serialLog) snapshot(from uint64, max int) serialHistoryState {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.kept()
	n := min(len(kept), max)
	if since := l.total - min(from, l.total); uint64(n) > since {
		n = int(since)
	}
	return serialHistoryState{End: l.total, Data: append([]byte(nil), kept[len(kept)-n:]...)}
}

// joinSerialHistory returns the history of head followed by tail: the
// bytes of head before tail's first, then tail's (a tail that begins past
// head's end, or before its start, is the whole history). A tail that ends
// before head does is refused. The result keeps at most maxSerialHistory
// bytes, the last. It is built in head.Data's array, in place when its
// capacity allows (no copy of the head in the pause): head is used up;
// the result never shares tail's bytes.
func joinSerialHistory(head, tail serialHistoryState) (serialHistoryState, error) {
	if tail.End < head.End {
		return serialHistoryState{}, fmt.Errorf("the serial history's tail ends at offset %d, before its head, at %d", tail.End, head.End)
	}
	headStart, tailStart := head.End-uint64(len(head.Data)), tail.End-uint64(len(tail.Data))
	var keep uint64 // bytes of the head before the tail's first
	if tailStart > headStart && tailStart <= head.End {
		keep = tailStart - headStart
	}
	data := append(head.Data[:keep], tail.Data...)
	return serialHistoryState{End: tail.End, Data: data[len(data)-min(len(data), maxSerialHistory):]}, nil
}

// restore makes h the history of a log nothing was written to yet (a
// migration target's, before its VM starts), so that offsets go on from
// h.End; consoles attached already get the bytes as those attached later
// will. It keeps what the log keeps of them, in h.Data's array, which the
// log takes (no copy in the pause; the log's output is appended to it).
func (l *serialLog) restore(h serialHistoryState) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total != 0 {
		return fmt.Errorf("restore the serial history: the console has %d bytes of its own already", l.total)
	}
	data := h.Data[len(h.Data)-min(len(h.Data), l.keep):]
	l.buf, l.total = data, h.End
	if len(data) == 0 {
		return nil
	}
	for s := range l.subs {
		select {
		case s.out <- append([]byte(nil), data...):
		default:
			l.dropLocked(s, ConsoleEnd{Behind: true, Reason: consoleBehind})
		}
	}
	return nil
}
