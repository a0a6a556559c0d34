package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Errors a Save or Restore may wrap in a *StateError. Callers test for them
// with errors.Is.
var (
	// ErrUnknownKind means a payload is for another kind of device.
	ErrUnknownKind = errors.New("unknown device state kind")
	// ErrUnknownVersion means a payload's encoding version is not one this
	// device reads or writes.
	ErrUnknownVersion = errors.New("unknown device state version")
	// ErrMalformed means a payload is truncated, has bytes left over, or
	// holds values the device cannot be in.
	ErrMalformed = errors.New("malformed device state")
	// ErrTooLarge means a payload is larger than any state the device saves.
	ErrTooLarge = errors.New("device state too large")
	// ErrIncompatible means a payload is well formed but describes a device
	// this one cannot become (another disk size, for example).
	ErrIncompatible = errors.New("device state incompatible with this device")
)

// StateError is the error of saving or restoring one device's state.
type StateError struct {
	// Op is "save" or "restore".
	Op string
	// Kind and Version are those of the payload (or, for save, requested).
	Kind    string
	Version uint32
	// Err is what went wrong; it wraps one of the Err* values above.
	Err error
}

// Error says what was being done to which state and what went wrong.
func (e *StateError) Error() string {
	return fmt.Sprintf("%s %s state version %d: %v", e.Op, e.Kind, e.Version, e.Err)
}

// Unwrap returns e.Err.
func (e *StateError) Unwrap() error { return e.Err }

// stateVersion is one encoding version a device reads, with the size of
// its largest payload in that version.
type stateVersion struct {
	version uint32
	maxSize int
}

// checkPayload checks a payload's kind, version and size before decoding.
// reads lists the versions the device reads.
func checkPayload(p Payload, kind string, reads ...stateVersion) error {
	fail := func(err error) error {
		return &StateError{Op: "restore", Kind: p.Kind, Version: p.Version, Err: err}
	}
	if p.Kind != kind {
		return fail(fmt.Errorf("%w: want %q", ErrUnknownKind, kind))
	}
	i := slices.IndexFunc(reads, func(r stateVersion) bool { return r.version == p.Version })
	if i < 0 {
		vs := make([]uint32, len(reads))
		for j, r := range reads {
			vs[j] = r.version
		}
		return fail(fmt.Errorf("%w: this device reads %s", ErrUnknownVersion, versionList(vs)))
	}
	if limit := reads[i].maxSize; len(p.Data) > limit {
		return fail(fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(p.Data), limit))
	}
	return nil
}

// checkSaveVersion resolves the version a Save was asked for: one of
// writes (oldest first), or 0 for the newest, the last of them.
func checkSaveVersion(kind string, version uint32, writes ...uint32) (uint32, error) {
	if version == 0 {
		return writes[len(writes)-1], nil
	}
	if !slices.Contains(writes, version) {
		return 0, &StateError{Op: "save", Kind: kind, Version: version,
			Err: fmt.Errorf("%w: this device writes %s", ErrUnknownVersion, versionList(writes))}
	}
	return version, nil
}

// versionList says "version 1" or "versions 1, 2".
func versionList(vs []uint32) string {
	if len(vs) == 1 {
		return fmt.Sprintf("version %d", vs[0])
	}
	s := "versions "
	for i, v := range vs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprint(v)
	}
	return s
}

// stateEncoder appends little-endian fields to a buffer.
type stateEncoder struct {
	b []byte
}

func (e *stateEncoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *stateEncoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *stateEncoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *stateEncoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *stateEncoder) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// stateDecoder reads little-endian fields. The first failure sticks: later
// reads return zero values, and err reports the first failure.
type stateDecoder struct {
	b   []byte
	off int
	err error
}

func (d *stateDecoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = fmt.Errorf("%w: truncated at byte %d reading %s", ErrMalformed, d.off, what)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *stateDecoder) u8(what string) uint8 {
	if p := d.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *stateDecoder) u16(what string) uint16 {
	if p := d.take(2, what); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *stateDecoder) u32(what string) uint32 {
	if p := d.take(4, what); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *stateDecoder) u64(what string) uint64 {
	if p := d.take(8, what); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (d *stateDecoder) bool(what string) bool {
	v := d.u8(what)
	if v > 1 {
		d.fail("%s is %d, want 0 or 1", what, v)
	}
	return v == 1
}

// fail records a malformed-value failure unless one is already recorded.
func (d *stateDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

// finish reports the first failure, or bytes left over after the last field.
func (d *stateDecoder) finish() error {
	if d.err == nil && d.off != len(d.b) {
		d.err = fmt.Errorf("%w: %d bytes left over after the last field", ErrMalformed, len(d.b)-d.off)
	}
	return d.err
}

// ImportableVersions lists, per device state kind, the payload versions
// this build's devices restore, oldest first: each kind's newest version
// and, once a kind has more than one, the one before it. A migration target
// sends it to the source, whose exporter then writes the newest version both
// sides know (a target that lists only an older version gets that one).
func ImportableVersions() map[string][]uint32 {
	return map[string][]uint32{
		UARTStateKind:      {uartStateV1, uartStateV2},
		VirtioBlkStateKind: {virtioMMIOStateVersion},
	}
}
