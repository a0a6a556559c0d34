package migration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	h := Hello{MigrationID: [16]byte{1, 2, 3}, Nonce: NewNonce(), Protocols: []uint32{1, 7}, SpecVersions: []string{"vmm-server/v1"},
		Devices: []DeviceVersions{{Kind: "uart16550a", Versions: []uint32{1}}}}
	require.NoError(t, WriteFrame(&buf, TypeHello, h.Encode()))
	ram := RAM{GPA: 0x1000, Data: bytes.Repeat([]byte{7}, 2*PageSize)}
	require.NoError(t, WriteFrame(&buf, TypeRAM, ram.Encode()))
	require.NoError(t, WriteFrame(&buf, TypeCommit, Commit{PausedFor: 1234}.Encode()))

	f, err := ReadFrame(&buf, nil)
	require.NoError(t, err)
	require.Equal(t, TypeHello, f.Type)
	h2, err := DecodeHello(f.Payload)
	require.NoError(t, err)
	require.Equal(t, h, h2)

	f, err = ReadFrame(&buf, nil)
	require.NoError(t, err)
	r2, err := DecodeRAM(f.Payload)
	require.NoError(t, err)
	require.Equal(t, ram, r2)

	f, err = ReadFrame(&buf, nil)
	require.NoError(t, err)
	require.Equal(t, TypeCommit, f.Type)
	c, err := DecodeCommit(f.Payload)
	require.NoError(t, err)
	require.Equal(t, 1234*time.Nanosecond, c.PausedFor)

	_, err = ReadFrame(&buf, nil)
	require.ErrorIs(t, err, io.EOF)
}

func TestRAMFrameHeaderMatchesWriteFrame(t *testing.T) {
	data := bytes.Repeat([]byte{9}, 3*PageSize)
	var want bytes.Buffer
	require.NoError(t, WriteFrame(&want, TypeRAM, RAM{GPA: 0x7000, Data: data}.Encode()))
	got := append(AppendRAMFrameHeader(nil, 0x7000, len(data)), data...)
	require.Equal(t, want.Bytes(), got)
}

func TestBadFrames(t *testing.T) {
	cases := map[string][]byte{
		"truncated header":  {1, 0, 0},
		"unknown type":      {99, 0, 0, 0, 0, 0, 0, 0},
		"reserved bytes":    {1, 1, 0, 0, 0, 0, 0, 0},
		"oversized length":  {5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
		"truncated payload": {5, 0, 0, 0, 0, 0, 0, 9, 1, 2},
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(data), nil)
			require.True(t, errors.Is(err, ErrFrame), "got %v", err)
		})
	}
}

func TestBadPayloads(t *testing.T) {
	misaligned := RAM{GPA: 0x1001, Data: make([]byte, PageSize)}.Encode()
	partial := RAM{GPA: 0x1000, Data: make([]byte, 100)}.Encode()
	overflow := Zero{GPA: 0xffff_ffff_ffff_f000, Pages: 2}.Encode()
	hugeList := []byte{0: 0, 48: 0xff, 49: 0xff, 50: 0xff, 51: 0xff}
	_, err := DecodeRAM(misaligned)
	require.ErrorIs(t, err, ErrFrame)
	_, err = DecodeRAM(partial)
	require.ErrorIs(t, err, ErrFrame)
	_, err = DecodeZero(overflow)
	require.ErrorIs(t, err, ErrFrame)
	_, err = DecodeHello(hugeList)
	require.ErrorIs(t, err, ErrFrame)
	_, err = DecodeRoundEnd([]byte{0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	require.ErrorIs(t, err, ErrFrame)
	require.ErrorIs(t, DecodeEmpty(TypeReady, []byte{1}), ErrFrame)
}

func TestChoose(t *testing.T) {
	p, ok := Choose([]uint32{9, 1, 3})
	require.True(t, ok)
	require.Equal(t, ProtocolV1, p)
	_, ok = Choose([]uint32{9})
	require.False(t, ok)
	p, ok = Choose([]uint32{1, 2})
	require.True(t, ok)
	require.Equal(t, ProtocolV2, p, "the newest both speak")
	p, _ = Choose([]uint32{2, 1})
	require.Equal(t, ProtocolV2, p, "whatever the order")
}

// TestPlan: a plan encodes and decodes to itself; a malformed one is
// refused naming what is wrong.
func TestPlan(t *testing.T) {
	p := Plan{Ranges: []PlanRange{{GPA: 0, Pages: 1}, {GPA: 0x10000, Pages: 256}, {GPA: 0x110000, Pages: 3}, {GPA: 1 << 32, Pages: 1 << 18}}}
	got, err := DecodePlan(p.Encode())
	require.NoError(t, err)
	require.Equal(t, p, got)
	empty, err := DecodePlan(Plan{}.Encode())
	require.NoError(t, err)
	require.Empty(t, empty.Ranges)

	bad := map[string]struct {
		plan Plan
		want string
	}{
		"unaligned":      {Plan{Ranges: []PlanRange{{GPA: 1, Pages: 1}}}, "not page aligned"},
		"empty range":    {Plan{Ranges: []PlanRange{{GPA: 0, Pages: 0}}}, "0 pages"},
		"overflow":       {Plan{Ranges: []PlanRange{{GPA: ^uint64(0) &^ (PageSize - 1), Pages: 2}}}, "overflows"},
		"overlap":        {Plan{Ranges: []PlanRange{{GPA: 0, Pages: 4}, {GPA: 3 * PageSize, Pages: 1}}}, "begins before the end"},
		"descending":     {Plan{Ranges: []PlanRange{{GPA: 0x10000, Pages: 1}, {GPA: 0, Pages: 1}}}, "begins before the end"},
		"too many pages": {Plan{Ranges: []PlanRange{{GPA: 0, Pages: 1<<40 + 1}}}, "pages"},
	}
	for name, c := range bad {
		_, err := DecodePlan(c.plan.Encode())
		require.ErrorIs(t, err, ErrFrame, name)
		require.ErrorContains(t, err, c.want, name)
	}
	_, err = DecodePlan(append(p.Encode(), 0))
	require.ErrorContains(t, err, "trailing")
	_, err = DecodePlan([]byte{0, 0, 0xff, 0xff})
	require.ErrorContains(t, err, "too many")
}

// FuzzDecode feeds arbitrary bytes to the frame reader and every payload
// decoder: none may panic or allocate beyond its limits, and whatever
// decodes re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	seeds := []struct {
		t Type
		p []byte
	}{
		{TypeHello, Hello{Protocols: []uint32{1}, SpecVersions: []string{"vmm-server/v1"}}.Encode()},
		{TypeWelcome, Welcome{Protocol: 1, Nonce: [NonceSize]byte{1}, Proof: [ProofSize]byte{2}}.Encode()},
		{TypeProof, Proof{Proof: [ProofSize]byte{3}}.Encode()},
		{TypePreamble, Preamble{Envelope: []byte(`{"spec_version":"vmm-server/v1","spec":{}}`)}.Encode()},
		{TypeReady, nil},
		{TypeRAM, RAM{GPA: 4096, Data: make([]byte, PageSize)}.Encode()},
		{TypeZero, Zero{GPA: 0, Pages: 3}.Encode()},
		{TypeRoundEnd, RoundEnd{Round: 2, Final: true, PagesSent: 5}.Encode()},
		{TypeDevice, Device{Key: "com1", Kind: "uart16550a", Version: 1, Data: []byte{1, 2}}.Encode()},
		{TypeMachine, Machine{Version: 1, Data: []byte{9}}.Encode()},
		{TypeStateDone, nil},
		{TypeImported, nil},
		{TypeCommit, Commit{PausedFor: 5}.Encode()},
		{TypeAbort, Abort{Code: AbortFailed, Reason: "no"}.Encode()},
		{TypeRoundAck, RoundAck{Round: 3}.Encode()},
		{TypePlan, Plan{Ranges: []PlanRange{{GPA: 0x1000, Pages: 2}, {GPA: 0x10000, Pages: 7}}}.Encode()},
	}
	for _, s := range seeds {
		var buf bytes.Buffer
		_ = WriteFrame(&buf, s.t, s.p)
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ReadFrame(bytes.NewReader(data), nil)
		if err != nil {
			return
		}
		p := fr.Payload
		var again []byte
		switch fr.Type {
		case TypeHello:
			v, err := DecodeHello(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeWelcome:
			v, err := DecodeWelcome(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeProof:
			v, err := DecodeProof(p)
			if err == nil {
				again = v.Encode()
			}
		case TypePreamble:
			v, err := DecodePreamble(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeRAM:
			v, err := DecodeRAM(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeZero:
			v, err := DecodeZero(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeRoundEnd:
			v, err := DecodeRoundEnd(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeDevice:
			v, err := DecodeDevice(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeMachine:
			v, err := DecodeMachine(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeAbort:
			v, err := DecodeAbort(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeRoundAck:
			v, err := DecodeRoundAck(p)
			if err == nil {
				again = v.Encode()
			}
		case TypePlan:
			v, err := DecodePlan(p)
			if err == nil {
				again = v.Encode()
			}
		case TypeCommit:
			v, err := DecodeCommit(p)
			if err == nil {
				again = v.Encode()
			}
		default:
			if DecodeEmpty(fr.Type, p) == nil {
				again = []byte{}
			}
		}
		if again != nil {
			require.Equal(t, len(p), len(again))
			require.True(t, bytes.Equal(p, again) || len(p) == 0, "decode/encode changed the payload")
		}
	})
}

// FuzzReadRAMHead: the streaming reader of a RAM payload's head, which lets
// a target read page data straight into guest memory, accepts exactly the
// payloads DecodeRAM accepts, with the same GPA and data length, and leaves
// exactly the data in the reader. A frame length other than the payload's
// never yields data of another length than the frame leaves.
func FuzzReadRAMHead(f *testing.F) {
	f.Add(RAM{GPA: 4096, Data: make([]byte, PageSize)}.Encode(), uint32(0))
	f.Add(RAM{GPA: 1 << 40, Data: make([]byte, 2*PageSize)}.Encode(), uint32(PageSize))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0}, uint32(7))
	f.Fuzz(func(t *testing.T, p []byte, skew uint32) {
		r := bytes.NewReader(p)
		gpa, n, err := ReadRAMHead(r, uint32(len(p)))
		ram, derr := DecodeRAM(p)
		require.Equal(t, derr == nil, err == nil, "ReadRAMHead: %v; DecodeRAM: %v", err, derr)
		if err == nil {
			require.Equal(t, ram.GPA, gpa)
			require.Equal(t, len(ram.Data), n)
			require.Equal(t, n, r.Len(), "the data is left to read")
		} else {
			require.ErrorIs(t, err, ErrFrame)
		}

		frameLen := uint32(len(p)) + skew%(2*RAMHeadSize) - RAMHeadSize
		_, n, err = ReadRAMHead(bytes.NewReader(p), frameLen)
		if err == nil {
			require.Equal(t, uint64(frameLen)-RAMHeadSize, uint64(n), "data of the length the frame leaves")
		}
	})
}

// TestFrameLimits takes each bound of the stream's frames at its limit and
// refuses it one past, so that a bound moved by one (a > become >=) fails
// here rather than between two builds that disagree on it.
func TestFrameLimits(t *testing.T) {
	t.Run("payload", func(t *testing.T) {
		full := make([]byte, MaxPayload)
		var buf bytes.Buffer
		require.NoError(t, WriteFrame(&buf, TypeRAM, full), "a payload of MaxPayload bytes is written")
		f, err := ReadFrame(&buf, nil)
		require.NoError(t, err, "and read")
		require.Len(t, f.Payload, MaxPayload)
		require.Error(t, WriteFrame(io.Discard, TypeRAM, make([]byte, MaxPayload+1)))

		over := []byte{byte(TypeRAM), 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(over[4:], MaxPayload+1)
		_, _, err = ReadHeader(bytes.NewReader(over))
		require.ErrorIs(t, err, ErrFrame, "a header announcing one byte more")
		_, err = ReadPayload(bytes.NewReader(make([]byte, MaxPayload+1)), TypeRAM, MaxPayload+1, nil)
		require.ErrorIs(t, err, ErrFrame, "a payload of one byte more, read alone")
	})
	t.Run("ram", func(t *testing.T) {
		most := RAM{GPA: 0x10000, Data: make([]byte, MaxPagesPerFrame*PageSize)}
		r, err := DecodeRAM(most.Encode())
		require.NoError(t, err, "MaxPagesPerFrame pages")
		require.Len(t, r.Data, MaxPagesPerFrame*PageSize)
		p := most.Encode()
		gpa, n, err := ReadRAMHead(bytes.NewReader(p), uint32(len(p)))
		require.NoError(t, err)
		require.Equal(t, uint64(0x10000), gpa)
		require.Equal(t, MaxPagesPerFrame*PageSize, n)

		tooMany := RAM{GPA: 0x10000, Data: make([]byte, (MaxPagesPerFrame+1)*PageSize)}.Encode()
		_, err = DecodeRAM(tooMany)
		require.ErrorIs(t, err, ErrFrame, "a page more")
		_, _, err = ReadRAMHead(bytes.NewReader(tooMany), uint32(len(tooMany)))
		require.ErrorIs(t, err, ErrFrame, "a page more, read head first")

		one := RAM{GPA: 0, Data: make([]byte, PageSize)}.Encode()
		_, _, err = ReadRAMHead(bytes.NewReader(one), uint32(len(one)))
		require.NoError(t, err, "one page at GPA 0")
		empty := RAM{GPA: 0}.Encode()
		require.Len(t, empty, RAMHeadSize)
		_, _, err = ReadRAMHead(bytes.NewReader(empty), RAMHeadSize)
		require.ErrorIs(t, err, ErrFrame, "a head with no page")
		_, _, err = ReadRAMHead(bytes.NewReader(empty), RAMHeadSize-1)
		require.ErrorIs(t, err, ErrFrame, "a payload shorter than the head")
		// A range must end at an address that can be written: the page
		// before the last of the address space is the last taken.
		_, err = DecodeRAM(RAM{GPA: 1<<64 - 2*PageSize, Data: make([]byte, PageSize)}.Encode())
		require.NoError(t, err)
		_, err = DecodeRAM(RAM{GPA: 1<<64 - PageSize, Data: make([]byte, PageSize)}.Encode())
		require.ErrorIs(t, err, ErrFrame)
	})
	t.Run("zero", func(t *testing.T) {
		_, err := DecodeZero(Zero{GPA: 0, Pages: 1 << 40}.Encode())
		require.NoError(t, err)
		_, err = DecodeZero(Zero{GPA: 0, Pages: 1<<40 + 1}.Encode())
		require.ErrorIs(t, err, ErrFrame)
		_, err = DecodeZero(Zero{GPA: 1<<64 - 2*PageSize, Pages: 1}.Encode())
		require.NoError(t, err)
		_, err = DecodeZero(Zero{GPA: 1<<64 - PageSize, Pages: 1}.Encode())
		require.ErrorIs(t, err, ErrFrame)
	})
	t.Run("plan", func(t *testing.T) {
		ranges := make([]PlanRange, MaxPlanRanges)
		for i := range ranges {
			ranges[i] = PlanRange{GPA: uint64(i) * PageSize, Pages: 1} // each starts where the one before ends
		}
		p, err := DecodePlan(Plan{Ranges: ranges}.Encode())
		require.NoError(t, err, "MaxPlanRanges ranges, each touching the next")
		require.Len(t, p.Ranges, MaxPlanRanges)
		more := append(ranges, PlanRange{GPA: MaxPlanRanges * PageSize, Pages: 1})
		_, err = DecodePlan(Plan{Ranges: more}.Encode())
		require.ErrorIs(t, err, ErrFrame, "a range more")
		_, err = DecodePlan(Plan{Ranges: []PlanRange{{GPA: 0, Pages: 1 << 40}}}.Encode())
		require.NoError(t, err)
		_, err = DecodePlan(Plan{Ranges: []PlanRange{{GPA: 0, Pages: 1<<40 + 1}}}.Encode())
		require.ErrorIs(t, err, ErrFrame)
		_, err = DecodePlan(Plan{Ranges: []PlanRange{{GPA: 0, Pages: 2}, {GPA: PageSize, Pages: 1}}}.Encode())
		require.ErrorIs(t, err, ErrFrame, "ranges that overlap")
	})
	t.Run("hello lists", func(t *testing.T) {
		h := Hello{Protocols: make([]uint32, maxListLen), SpecVersions: []string{"vmm-server/v1"}}
		_, err := DecodeHello(h.Encode())
		require.NoError(t, err, "maxListLen protocols")
		h.Protocols = make([]uint32, maxListLen+1)
		_, err = DecodeHello(h.Encode())
		require.ErrorIs(t, err, ErrFrame, "a protocol more")
	})
	t.Run("abort reason", func(t *testing.T) {
		long := strings.Repeat("r", MaxReason)
		a, err := DecodeAbort(Abort{Code: AbortFailed, Reason: long}.Encode())
		require.NoError(t, err)
		require.Equal(t, long, a.Reason, "a reason of MaxReason bytes goes whole")
		a, err = DecodeAbort(Abort{Code: AbortFailed, Reason: long + "s"}.Encode())
		require.NoError(t, err)
		require.Equal(t, long, a.Reason, "a longer one is cut to MaxReason")
	})
	t.Run("commit", func(t *testing.T) {
		c, err := DecodeCommit(Commit{}.Encode())
		require.NoError(t, err, "no pause at all")
		require.Zero(t, c.PausedFor)
		_, err = DecodeCommit(binary.BigEndian.AppendUint64(nil, 1<<63))
		require.ErrorIs(t, err, ErrFrame, "a pause that reads negative")
	})
	t.Run("secret", func(t *testing.T) {
		require.NoError(t, CheckSecret(strings.Repeat("z", MinSecretLen)))
		require.NoError(t, CheckSecret(strings.Repeat("Z", MaxSecretLen)))
		require.NoError(t, CheckSecret(strings.Repeat("9", MinSecretLen)))
		for _, c := range "{`[@:/" {
			err := CheckSecret(strings.Repeat("a", MinSecretLen-1) + string(c))
			require.ErrorIs(t, err, ErrBadSecret, "%q", c)
			require.ErrorContains(t, err, fmt.Sprintf("character %d ", MinSecretLen))
		}
	})
}
