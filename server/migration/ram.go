package migration

import (
	"encoding/binary"
	"fmt"
	"io"
)

// PageSize is the size of a guest page on the wire.
const PageSize = 4096

// MaxPagesPerFrame bounds the pages of one RAM frame (1 MiB of data).
const MaxPagesPerFrame = 256

// RAM carries the contents of consecutive guest pages from GPA on.
type RAM struct {
	GPA  uint64
	Data []byte // a whole number of pages, at most MaxPagesPerFrame
}

// Encode returns the payload.
func (r RAM) Encode() []byte {
	e := enc{b: make([]byte, 0, 12+len(r.Data))}
	e.u64(r.GPA)
	e.bytes(r.Data)
	return e.b
}

// AppendRAMFrameHeader appends what precedes the page data of a whole RAM
// frame (the frame header, the GPA and the data length), so that a sender
// can write the data straight from guest memory instead of copying it into
// a payload first. The bytes are exactly those WriteFrame writes for
// RAM{gpa, data}, up to the data.
func AppendRAMFrameHeader(b []byte, gpa uint64, dataLen int) []byte {
	b = append(b, byte(TypeRAM), 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(12+dataLen))
	b = binary.BigEndian.AppendUint64(b, gpa)
	return binary.BigEndian.AppendUint32(b, uint32(dataLen))
}

// DecodeRAM parses a RAM payload; Data aliases p.
func DecodeRAM(p []byte) (RAM, error) {
	d := dec{b: p, msg: TypeRAM}
	r := RAM{GPA: d.u64("gpa")}
	r.Data = d.bytes("data", MaxPagesPerFrame*PageSize)
	if d.err == nil {
		d.checkRAM(r.GPA, len(r.Data))
	}
	return r, d.done()
}

// RAMHeadSize is the size of a RAM payload before its page data.
const RAMHeadSize = 12

// ReadRAMHead reads what precedes the page data of a RAM payload of n bytes
// (the length its frame header gave) and returns the GPA and the data's
// length, checked as DecodeRAM checks them: a payload ReadRAMHead accepts
// DecodeRAM accepts too. The data follows in r, so that a receiver can read
// it straight into guest memory.
func ReadRAMHead(r io.Reader, n uint32) (gpa uint64, dataLen int, err error) {
	var head [RAMHeadSize]byte
	if n < RAMHeadSize {
		return 0, 0, fmt.Errorf("%w: %s: payload of %d bytes is shorter than its %d-byte head", ErrFrame, TypeRAM, n, RAMHeadSize)
	}
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, 0, Truncated(TypeRAM, err)
	}
	gpa = binary.BigEndian.Uint64(head[:])
	l := binary.BigEndian.Uint32(head[8:])
	d := dec{msg: TypeRAM}
	switch {
	case uint64(l) != uint64(n)-RAMHeadSize:
		d.fail("data: %d bytes in a payload that leaves %d", l, n-RAMHeadSize)
	case l > MaxPagesPerFrame*PageSize:
		d.fail("data: %d bytes, at most %d", l, MaxPagesPerFrame*PageSize)
	default:
		d.checkRAM(gpa, int(l))
	}
	return gpa, int(l), d.err
}

// checkRAM fails d unless dataLen bytes at gpa are whole pages of a
// page-aligned range that does not overflow.
func (d *dec) checkRAM(gpa uint64, dataLen int) {
	switch {
	case gpa%PageSize != 0:
		d.fail("gpa %#x is not page aligned", gpa)
	case dataLen == 0 || dataLen%PageSize != 0:
		d.fail("data of %d bytes is not a whole number of pages", dataLen)
	case gpa+uint64(dataLen) < gpa:
		d.fail("gpa %#x + %d bytes overflows", gpa, dataLen)
	}
}

// Zero says that Pages pages from GPA on are all zero.
type Zero struct {
	GPA   uint64
	Pages uint64
}

// Encode returns the payload.
func (z Zero) Encode() []byte {
	var e enc
	e.u64(z.GPA)
	e.u64(z.Pages)
	return e.b
}

// DecodeZero parses a Zero payload.
func DecodeZero(p []byte) (Zero, error) {
	d := dec{b: p, msg: TypeZero}
	z := Zero{GPA: d.u64("gpa"), Pages: d.u64("pages")}
	if d.err == nil {
		switch {
		case z.GPA%PageSize != 0:
			d.fail("gpa %#x is not page aligned", z.GPA)
		case z.Pages == 0 || z.Pages > 1<<40:
			d.fail("%d pages", z.Pages)
		case z.GPA+z.Pages*PageSize < z.GPA:
			d.fail("gpa %#x + %d pages overflows", z.GPA, z.Pages)
		}
	}
	return z, d.done()
}

// RoundEnd closes one round of RAM copying.
type RoundEnd struct {
	Round uint32
	// Final is set on the round sent while the VM is paused.
	Final bool
	// PagesSent and PagesLeft are the round's pages and the pages already
	// dirty again when it ended.
	PagesSent, PagesLeft uint64
}

// Encode returns the payload.
func (r RoundEnd) Encode() []byte {
	var e enc
	e.u32(r.Round)
	if r.Final {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.u64(r.PagesSent)
	e.u64(r.PagesLeft)
	return e.b
}

// DecodeRoundEnd parses a RoundEnd payload.
func DecodeRoundEnd(p []byte) (RoundEnd, error) {
	d := dec{b: p, msg: TypeRoundEnd}
	r := RoundEnd{Round: d.u32("round")}
	switch d.u8("final") {
	case 0:
	case 1:
		r.Final = true
	default:
		d.fail("final is neither 0 nor 1")
	}
	r.PagesSent, r.PagesLeft = d.u64("pages sent"), d.u64("pages left")
	return r, d.done()
}

// RoundAck is the target's word that it has applied every page of a
// pre-copy round. The source waits for it before deciding whether to pause,
// so that the pause never waits behind pages still in flight.
type RoundAck struct {
	Round uint32
}

// Encode returns the payload.
func (a RoundAck) Encode() []byte {
	var e enc
	e.u32(a.Round)
	return e.b
}

// DecodeRoundAck parses a RoundAck payload.
func DecodeRoundAck(p []byte) (RoundAck, error) {
	d := dec{b: p, msg: TypeRoundAck}
	a := RoundAck{Round: d.u32("round")}
	return a, d.done()
}
