package migration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Type identifies a message.
type Type uint8

// The message types. Values are never reused.
const (
	TypeHello Type = iota + 1
	TypeWelcome
	TypePreamble
	TypeReady
	TypeRAM
	TypeZero
	TypeRoundEnd
	TypeDevice
	TypeMachine
	TypeStateDone
	TypeImported
	TypeCommit
	TypeAbort
	TypeRoundAck
	TypeProof
	TypePlan
)

var typeNames = map[Type]string{
	TypeHello: "Hello", TypeWelcome: "Welcome", TypePreamble: "Preamble", TypeReady: "Ready",
	TypeRAM: "RAM", TypeZero: "Zero", TypeRoundEnd: "RoundEnd", TypeDevice: "Device",
	TypeMachine: "Machine", TypeStateDone: "StateDone", TypeImported: "Imported",
	TypeCommit: "Commit", TypeAbort: "Abort", TypeRoundAck: "RoundAck", TypeProof: "Proof",
	TypePlan: "Plan",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// HeaderSize is the size of a frame header.
const HeaderSize = 8

// MaxPayload bounds a frame's payload: a RAM frame carries at most 256
// pages (1 MiB) plus its header; machine state of many vCPUs fits too.
const MaxPayload = 4 << 20

// ErrFrame marks a malformed frame: unknown type, bad header, oversized or
// truncated payload.
var ErrFrame = errors.New("malformed frame")

// Frame is one message on the wire.
type Frame struct {
	Type    Type
	Payload []byte
}

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, t Type, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("write %s frame: payload of %d bytes is over the %d limit", t, len(payload), MaxPayload)
	}
	var hdr [HeaderSize]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	if _, err := w.Write(payload); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	return nil
}

// ReadFrame reads one frame, reusing buf for the payload when it is large
// enough. It rejects unknown types, non-zero reserved bytes and lengths over
// MaxPayload before reading the payload.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	t, n, err := ReadHeader(r)
	if err != nil {
		return Frame{}, err
	}
	return ReadPayload(r, t, n, buf)
}

// ReadPayload reads the n-byte payload of a frame of type t whose header
// ReadHeader read, reusing buf when it is large enough.
func ReadPayload(r io.Reader, t Type, n uint32, buf []byte) (Frame, error) {
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%w: %s payload of %d bytes is over the %d limit", ErrFrame, t, n, MaxPayload)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return Frame{}, Truncated(t, err)
	}
	return Frame{Type: t, Payload: buf}, nil
}

// ReadHeader reads a frame's header and returns its type and payload
// length, checked as ReadFrame checks them; the payload follows in r.
func ReadHeader(r io.Reader) (Type, uint32, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, fmt.Errorf("%w: truncated header", ErrFrame)
		}
		return 0, 0, err
	}
	t := Type(hdr[0])
	if _, ok := typeNames[t]; !ok {
		return 0, 0, fmt.Errorf("%w: unknown type %d", ErrFrame, hdr[0])
	}
	if hdr[1]|hdr[2]|hdr[3] != 0 {
		return 0, 0, fmt.Errorf("%w: reserved header bytes are not zero", ErrFrame)
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if n > MaxPayload {
		return 0, 0, fmt.Errorf("%w: %s payload of %d bytes is over the %d limit", ErrFrame, t, n, MaxPayload)
	}
	return t, n, nil
}

// Truncated is the error of a payload of type t that ended early with err.
func Truncated(t Type, err error) error {
	return fmt.Errorf("%w: %s payload truncated: %w", ErrFrame, t, err)
}
