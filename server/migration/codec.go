package migration

import (
	"encoding/binary"
	"fmt"
)

// enc builds a payload.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) bytes(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}
func (e *enc) str(s string) { e.bytes([]byte(s)) }

// dec reads a payload, remembering the first error; every length is checked
// against what is left, so no input makes it allocate more than the payload.
type dec struct {
	b   []byte
	err error
	msg Type
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrFrame, d.msg, fmt.Sprintf(format, args...))
	}
}

func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("%s: need %d bytes, %d left", what, n, len(d.b))
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) u8(what string) uint8 {
	if p := d.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *dec) u32(what string) uint32 {
	if p := d.take(4, what); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *dec) u64(what string) uint64 {
	if p := d.take(8, what); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *dec) bytes(what string, max int) []byte {
	n := d.u32(what + " length")
	if d.err == nil && int(n) > max {
		d.fail("%s: %d bytes, at most %d", what, n, max)
		return nil
	}
	return d.take(int(n), what)
}

func (d *dec) str(what string, max int) string { return string(d.bytes(what, max)) }

// count reads a list length, refusing more entries than the bytes left
// could hold at minSize bytes each.
func (d *dec) count(what string, minSize, max int) int {
	n := int(d.u32(what + " count"))
	if d.err == nil && (n > max || n*minSize > len(d.b)) {
		d.fail("%s: %d entries is too many", what, n)
		return 0
	}
	return n
}

// done fails if bytes are left over.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}
