package serialhistory

import (
	"encoding/binary"
	"fmt"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm/devices"
)

// Payload identity and limits.
const (
	// Kind is the payload's kind in Hello and Device frames.
	Kind = "serial_history"
	// V1 is the first encoding (see the package doc).
	V1 uint32 = 1
	// HeadKey and TailKey are the keys of the head's and the tail's
	// Device frames: no spec component can have them (no spec key has an
	// @), so they are never a device's. The console is the instance's, on
	// COM1.
	HeadKey = "@console"
	TailKey = "@console-tail"
	// HeaderSize is the size of the end offset and the length.
	HeaderSize = 8 + 4
	// MaxData bounds the bytes carried: the last MiB of output less the
	// header, so that the payload fits one Device frame's data
	// (migration.MaxDeviceState). Older bytes stay behind.
	MaxData = migration.MaxDeviceState - HeaderSize
	// MaxOffset bounds the end offset: far beyond what any guest prints
	// (2^62 bytes), with room for offsets, signed 64-bit numbers in the
	// API, to grow after the migration.
	MaxOffset = 1 << 62
)

// Versions returns the versions of the payload this build reads and
// writes, oldest first.
func Versions() []uint32 { return []uint32{V1} }

// State is the serial history a migration carries: Data is output
// [End-len(Data), End) of everything the guest printed.
type State struct {
	End  uint64
	Data []byte
}

// Encode returns the payload in version 1. It does not check h: Decode
// refuses what breaks the bounds.
func (h State) Encode() devices.Payload {
	b := make([]byte, 0, HeaderSize+len(h.Data))
	b = binary.LittleEndian.AppendUint64(b, h.End)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.Data)))
	b = append(b, h.Data...)
	return devices.Payload{Kind: Kind, Version: V1, Data: b}
}

// Decode checks and parses a serial history payload from a peer. It
// refuses another kind or version, a payload over the bound, a truncated
// one, one with bytes left over, and one that carries more bytes than its
// end offset says were ever printed; the error is a *devices.StateError
// wrapping devices.ErrUnknownKind, ErrUnknownVersion, ErrTooLarge or
// ErrMalformed. The Data returned is part of p.Data.
func Decode(p devices.Payload) (State, error) {
	fail := func(err error, format string, args ...any) (State, error) {
		return State{}, &devices.StateError{Op: "restore", Kind: p.Kind, Version: p.Version,
			Err: fmt.Errorf("%w: %s", err, fmt.Sprintf(format, args...))}
	}
	switch {
	case p.Kind != Kind:
		return fail(devices.ErrUnknownKind, "want %q", Kind)
	case p.Version != V1:
		return fail(devices.ErrUnknownVersion, "this build reads version %d", V1)
	case len(p.Data) > HeaderSize+MaxData:
		return fail(devices.ErrTooLarge, "%d bytes, at most %d", len(p.Data), HeaderSize+MaxData)
	case len(p.Data) < HeaderSize:
		return fail(devices.ErrMalformed, "%d bytes: the end offset and the length alone take %d", len(p.Data), HeaderSize)
	}
	end := binary.LittleEndian.Uint64(p.Data)
	n := binary.LittleEndian.Uint32(p.Data[8:])
	rest := p.Data[HeaderSize:]
	switch {
	case end > MaxOffset:
		return fail(devices.ErrMalformed, "end offset %d is over %d", end, uint64(MaxOffset))
	case n > MaxData:
		return fail(devices.ErrTooLarge, "length %d, at most %d", n, MaxData)
	case int(n) != len(rest):
		return fail(devices.ErrMalformed, "length %d, but %d bytes follow", n, len(rest))
	case uint64(n) > end:
		return fail(devices.ErrMalformed, "length %d is over the end offset %d: more bytes than were ever printed", n, end)
	}
	return State{End: end, Data: rest}, nil
}
