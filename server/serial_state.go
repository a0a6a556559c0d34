package server

import (
	"fmt"
	"maps"

	"github.com/wagglevm/waggle/server/serialhistory"
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

// The payload's codec is package serialhistory's, shared with the
// compatibility corpus; these names keep this package's code short.
const (
	serialHistoryKind    = serialhistory.Kind
	serialHistoryV1      = serialhistory.V1
	serialHistoryKey     = serialhistory.HeadKey
	serialHistoryTailKey = serialhistory.TailKey
	maxSerialHistory     = serialhistory.MaxData
	maxSerialOffset      = serialhistory.MaxOffset
)

// serialHistoryVersions are the versions of the serial history payload this
// build reads and writes, oldest first.
var serialHistoryVersions = serialhistory.Versions()

// importableStateVersions is what a target offers in its Hello: the
// devices' payload versions and the serial history's.
func importableStateVersions() map[string][]uint32 {
	vs := maps.Clone(devices.ImportableVersions())
	vs[serialHistoryKind] = serialHistoryVersions
	return vs
}

// serialHistoryState is the serial history a migration carries.
type serialHistoryState = serialhistory.State

// decodeSerialHistory checks and parses a serial history payload from a
// peer (serialhistory.Decode).
func decodeSerialHistory(p devices.Payload) (serialHistoryState, error) {
	return serialhistory.Decode(p)
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
