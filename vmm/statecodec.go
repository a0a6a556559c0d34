package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/wagglevm/waggle/vmm/devices"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// Payload kinds of the machine's own state; each is at version 1.
const (
	KindVCPU    = "kvm_vcpu_x86_64"
	KindIrqchip = "kvm_irqchip"
	KindPIT     = "kvm_pit2"
	KindClock   = "kvm_clock"

	stateVersion = 1
	// StateVersion is the version of State's binary encoding
	// (MarshalBinary); UnmarshalState reads it.
	StateVersion = stateVersion
)

// Limits the decoders enforce.
const (
	// MaxStateSize bounds an encoded State.
	MaxStateSize = 64 << 20
	maxCPUID     = 256
	maxMSRs      = 1024
	maxXsave     = 64 << 10
	maxEntries   = 1024
)

// ErrMalformedState is wrapped by every decoding error.
var ErrMalformedState = errors.New("malformed machine state")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedState, fmt.Sprintf(format, args...))
}

// vCPU payload sections, in the order they are written.
const (
	secID = iota + 1
	secCPUID
	secRegs
	secSregs
	secFPU
	secXsave
	secXcrs
	secMSRs
	secLapic
	secDebugRegs
	secMPState
	secEvents
	secTSCKHz
	secEnd
)

// Payload encodes s as a KindVCPU payload: a sequence of sections, each a
// u16 tag, a u32 length and the kernel structure's bytes (little-endian).
func (s *VCPUState) Payload() devices.Payload {
	var b []byte
	sec := func(tag uint16, v any) {
		n := rawSize(v)
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint32(b, uint32(n))
		b = rawAppend(b, v)
	}
	sec(secID, &s.ID)
	sec(secCPUID, s.CPUID)
	sec(secRegs, &s.Regs)
	sec(secSregs, &s.Sregs)
	if len(s.Xsave) > 0 {
		sec(secXsave, s.Xsave)
	} else {
		sec(secFPU, &s.FPU)
	}
	sec(secXcrs, &s.Xcrs)
	sec(secMSRs, s.MSRs)
	sec(secLapic, &s.Lapic)
	sec(secDebugRegs, &s.DebugRegs)
	sec(secMPState, &s.MPState)
	sec(secEvents, &s.Events)
	sec(secTSCKHz, &s.TSCKHz)
	return devices.Payload{Kind: KindVCPU, Version: stateVersion, Data: b}
}

// DecodeVCPUState decodes a KindVCPU payload. Sections must come in order,
// once each, with their exact sizes; either FPU or XSAVE is present.
func DecodeVCPUState(p devices.Payload) (*VCPUState, error) {
	if p.Kind != KindVCPU || p.Version != stateVersion {
		return nil, malformed("payload %s version %d, want %s version %d", p.Kind, p.Version, KindVCPU, stateVersion)
	}
	s := &VCPUState{}
	b := p.Data
	last := 0
	seen := map[int]bool{}
	for len(b) > 0 {
		if len(b) < 6 {
			return nil, malformed("vCPU: truncated section header")
		}
		tag, n := int(binary.LittleEndian.Uint16(b)), binary.LittleEndian.Uint32(b[2:])
		b = b[6:]
		if uint64(n) > uint64(len(b)) {
			return nil, malformed("vCPU: section %d of %d bytes, %d left", tag, n, len(b))
		}
		if tag <= last || tag >= secEnd {
			return nil, malformed("vCPU: section %d out of order or unknown", tag)
		}
		last = tag
		seen[tag] = true
		data := b[:n]
		b = b[n:]
		fixed := func(v any) error {
			if want := rawSize(v); int(n) != want {
				return malformed("vCPU: section %d has %d bytes, want %d", tag, n, want)
			}
			return rawDecode(data, v)
		}
		var err error
		switch tag {
		case secID:
			err = fixed(&s.ID)
		case secCPUID:
			const sz = 40
			if n%sz != 0 || n/sz > maxCPUID {
				return nil, malformed("vCPU: CPUID section of %d bytes", n)
			}
			s.CPUID = make([]kvm.CPUIDEntry2, n/sz)
			err = rawDecode(data, s.CPUID)
		case secRegs:
			err = fixed(&s.Regs)
		case secSregs:
			err = fixed(&s.Sregs)
		case secFPU:
			err = fixed(&s.FPU)
		case secXsave:
			if n < 4096 || n > maxXsave {
				return nil, malformed("vCPU: XSAVE area of %d bytes", n)
			}
			s.Xsave = bytes.Clone(data)
		case secXcrs:
			err = fixed(&s.Xcrs)
			if err == nil && s.Xcrs.NrXcrs > uint32(len(s.Xcrs.Xcrs)) {
				return nil, malformed("vCPU: %d XCRs", s.Xcrs.NrXcrs)
			}
		case secMSRs:
			const sz = 16
			if n%sz != 0 || n/sz > maxMSRs {
				return nil, malformed("vCPU: MSR section of %d bytes", n)
			}
			s.MSRs = make([]kvm.MsrEntry, n/sz)
			err = rawDecode(data, s.MSRs)
		case secLapic:
			err = fixed(&s.Lapic)
		case secDebugRegs:
			err = fixed(&s.DebugRegs)
		case secMPState:
			err = fixed(&s.MPState)
			if err == nil && s.MPState.MPState > kvm.KVM_MP_STATE_SIPI_RECEIVED {
				return nil, malformed("vCPU: MP state %d", s.MPState.MPState)
			}
		case secEvents:
			err = fixed(&s.Events)
		case secTSCKHz:
			err = fixed(&s.TSCKHz)
		}
		if err != nil {
			return nil, malformed("vCPU: section %d: %v", tag, err)
		}
	}
	for _, tag := range []int{secID, secCPUID, secRegs, secSregs, secXcrs, secMSRs, secLapic, secDebugRegs, secMPState, secEvents, secTSCKHz} {
		if !seen[tag] {
			return nil, malformed("vCPU: section %d missing", tag)
		}
	}
	if seen[secFPU] == seen[secXsave] {
		return nil, malformed("vCPU: want exactly one of FPU and XSAVE")
	}
	return s, nil
}

// fixedPayload encodes a fixed-size kernel structure.
func fixedPayload(kind string, v any) devices.Payload {
	return devices.Payload{Kind: kind, Version: stateVersion, Data: rawAppend(nil, v)}
}

func decodeFixed(p devices.Payload, kind string, v any) error {
	if p.Kind != kind || p.Version != stateVersion {
		return malformed("payload %s version %d, want %s version %d", p.Kind, p.Version, kind, stateVersion)
	}
	if want := rawSize(v); len(p.Data) != want {
		return malformed("%s: %d bytes, want %d", kind, len(p.Data), want)
	}
	return rawDecode(p.Data, v)
}

// castagnoli is the CRC-32C table of the State checksum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stateMagic starts an encoded State.
var stateMagic = []byte("WGGLSTAT")

// Entry names in an encoded State.
const (
	entryVCPU    = "vcpu/"
	entryIrqchip = "irqchip"
	entryPIT     = "pit"
	entryClock   = "clock"
	entryDevice  = "device/"
)

// MarshalBinary encodes s: a magic, a format version, then one named,
// tagged payload per vCPU, the irqchip, the PIT, the clock and each device,
// and a CRC-32C of everything before it.
func (s *State) MarshalBinary() ([]byte, error) {
	b := append([]byte(nil), stateMagic...)
	le := binary.LittleEndian
	b = le.AppendUint32(b, stateVersion)
	n := len(s.VCPUs) + 3 + len(s.Devices)
	b = le.AppendUint32(b, uint32(n))
	put := func(name string, p devices.Payload) {
		b = le.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		b = le.AppendUint16(b, uint16(len(p.Kind)))
		b = append(b, p.Kind...)
		b = le.AppendUint32(b, p.Version)
		b = le.AppendUint32(b, uint32(len(p.Data)))
		b = append(b, p.Data...)
	}
	for i, v := range s.VCPUs {
		put(entryVCPU+strconv.Itoa(i), v.Payload())
	}
	put(entryIrqchip, fixedPayload(KindIrqchip, &s.Irqchip))
	put(entryPIT, fixedPayload(KindPIT, &s.PIT))
	put(entryClock, fixedPayload(KindClock, &s.Clock))
	for _, d := range s.Devices {
		if len(d.Key) > 255 || len(d.Payload.Kind) > 255 {
			return nil, fmt.Errorf("encode state: device %.40q: key or kind too long", d.Key)
		}
		put(entryDevice+d.Key, d.Payload)
	}
	b = le.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("encode state: %d bytes, more than %d", len(b), MaxStateSize)
	}
	return b, nil
}

// UnmarshalState decodes what State.MarshalBinary wrote. It checks the
// size cap, magic, version and checksum, then every payload; device
// payloads are checked by the devices when imported.
func UnmarshalState(b []byte) (*State, error) {
	le := binary.LittleEndian
	if len(b) > MaxStateSize {
		return nil, malformed("%d bytes, more than %d", len(b), MaxStateSize)
	}
	if len(b) < len(stateMagic)+12 || !bytes.Equal(b[:len(stateMagic)], stateMagic) {
		return nil, malformed("no state magic")
	}
	body, sum := b[:len(b)-4], le.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, malformed("checksum mismatch")
	}
	r := body[len(stateMagic):]
	if v := le.Uint32(r); v != stateVersion {
		return nil, malformed("format version %d, want %d", v, stateVersion)
	}
	count := le.Uint32(r[4:])
	r = r[8:]
	if count > maxEntries {
		return nil, malformed("%d entries", count)
	}
	take := func(n int) ([]byte, error) {
		if n > len(r) {
			return nil, malformed("truncated")
		}
		p := r[:n]
		r = r[n:]
		return p, nil
	}
	str := func() (string, error) {
		p, err := take(2)
		if err != nil {
			return "", err
		}
		p, err = take(int(le.Uint16(p)))
		return string(p), err
	}
	s := &State{}
	seen := map[string]bool{}
	for i := uint32(0); i < count; i++ {
		name, err := str()
		if err != nil {
			return nil, err
		}
		kind, err := str()
		if err != nil {
			return nil, err
		}
		hdr, err := take(8)
		if err != nil {
			return nil, err
		}
		data, err := take(int(le.Uint32(hdr[4:])))
		if err != nil {
			return nil, err
		}
		p := devices.Payload{Kind: kind, Version: le.Uint32(hdr), Data: bytes.Clone(data)}
		if seen[name] {
			return nil, malformed("entry %q twice", name)
		}
		seen[name] = true
		switch {
		case strings.HasPrefix(name, entryVCPU):
			if name != entryVCPU+strconv.Itoa(len(s.VCPUs)) {
				return nil, malformed("entry %q out of order", name)
			}
			v, err := DecodeVCPUState(p)
			if err != nil {
				return nil, err
			}
			s.VCPUs = append(s.VCPUs, v)
		case name == entryIrqchip:
			if err := decodeFixed(p, KindIrqchip, &s.Irqchip); err != nil {
				return nil, err
			}
			for i, c := range s.Irqchip {
				if c.ChipID != uint32(i) {
					return nil, malformed("irqchip %d has id %d", i, c.ChipID)
				}
			}
		case name == entryPIT:
			if err := decodeFixed(p, KindPIT, &s.PIT); err != nil {
				return nil, err
			}
		case name == entryClock:
			if err := decodeFixed(p, KindClock, &s.Clock); err != nil {
				return nil, err
			}
		case strings.HasPrefix(name, entryDevice) && len(name) > len(entryDevice):
			s.Devices = append(s.Devices, DeviceState{Key: name[len(entryDevice):], Payload: p})
		default:
			return nil, malformed("unknown entry %q", name)
		}
	}
	if len(r) != 0 {
		return nil, malformed("%d bytes after the last entry", len(r))
	}
	for _, name := range []string{entryIrqchip, entryPIT, entryClock} {
		if !seen[name] {
			return nil, malformed("entry %q missing", name)
		}
	}
	if len(s.VCPUs) == 0 {
		return nil, malformed("no vCPUs")
	}
	return s, nil
}
