package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Multiboot v1 header constants.
const (
	// MultibootMagic is the header magic a loader searches for.
	MultibootMagic = 0x1BADB002
	// MultibootBootloaderMagic is the value in EAX when the image is entered.
	MultibootBootloaderMagic = 0x2BADB002
	// MultibootSearchLimit is how far into the file the header may start.
	MultibootSearchLimit = 8192

	// MultibootFlagPageAlign asks for modules aligned to 4 KiB.
	MultibootFlagPageAlign = 1 << 0
	// MultibootFlagMemInfo asks for mem_lower/mem_upper (and the memory map).
	MultibootFlagMemInfo = 1 << 1
	// MultibootFlagVideo asks for a video mode.
	MultibootFlagVideo = 1 << 2
	// MultibootFlagAOut says the header carries the load addresses (the
	// "a.out kludge"); waggle images always set it.
	MultibootFlagAOut = 1 << 16

	multibootHeaderSize = 32 // magic .. entry_addr
)

// ErrNoMultiboot is returned (wrapped) when no Multiboot header is found.
var ErrNoMultiboot = errors.New("multiboot header not found")

// MultibootHeader is a validated Multiboot v1 header with the a.out kludge
// fields, plus where the loaded bytes are in the file.
type MultibootHeader struct {
	Flags       uint32
	HeaderAddr  uint32 // guest-physical address the header is loaded at
	LoadAddr    uint32 // guest-physical address of the first loaded byte
	LoadEndAddr uint32 // end of the loaded bytes, as in the header (0: to end of file)
	BSSEndAddr  uint32 // end of the zero-filled area, as in the header (0: none)
	EntryAddr   uint32 // where execution starts

	HeaderOffset int // file offset of the header
	LoadOffset   int // file offset of the byte loaded at LoadAddr
	LoadSize     int // number of bytes to load from LoadOffset
}

// LoadEnd is the guest-physical end of the loaded bytes, resolving a zero
// LoadEndAddr.
func (h MultibootHeader) LoadEnd() uint64 { return uint64(h.LoadAddr) + uint64(h.LoadSize) }

// BSSEnd is the guest-physical end of the image in memory including the
// zero-filled area, resolving a zero BSSEndAddr.
func (h MultibootHeader) BSSEnd() uint64 {
	if h.BSSEndAddr == 0 {
		return h.LoadEnd()
	}
	return uint64(h.BSSEndAddr)
}

// ParseMultiboot finds and validates the Multiboot v1 header of img. It
// accepts only images a waggle VMM can load: the a.out kludge (flag bit 16)
// with consistent addresses, and no required feature besides page-aligned
// modules and memory information. It never panics on untrusted input.
func ParseMultiboot(img []byte) (MultibootHeader, error) {
	var h MultibootHeader
	limit := min(len(img), MultibootSearchLimit)
	off, sawMagic := -1, -1
	for o := 0; o+12 <= limit; o += 4 {
		if binary.LittleEndian.Uint32(img[o:]) != MultibootMagic {
			continue
		}
		if sawMagic < 0 {
			sawMagic = o
		}
		flags := binary.LittleEndian.Uint32(img[o+4:])
		sum := binary.LittleEndian.Uint32(img[o+8:])
		if MultibootMagic+flags+sum == 0 {
			off = o
			break
		}
	}
	if off < 0 {
		if sawMagic >= 0 {
			return h, fmt.Errorf("%w: magic at offset %#x has a bad checksum (magic+flags+checksum must be 0 mod 2^32)", ErrNoMultiboot, sawMagic)
		}
		return h, fmt.Errorf("%w in the first %d bytes (of %d)", ErrNoMultiboot, MultibootSearchLimit, len(img))
	}
	h.HeaderOffset = off
	h.Flags = binary.LittleEndian.Uint32(img[off+4:])

	if h.Flags&MultibootFlagAOut == 0 {
		return h, fmt.Errorf("multiboot header at %#x: flags %#x lack bit 16 (load addresses in the header); ELF loading is not supported", off, h.Flags)
	}
	if req := h.Flags & 0xffff &^ (MultibootFlagPageAlign | MultibootFlagMemInfo); req != 0 {
		return h, fmt.Errorf("multiboot header at %#x: unsupported required flags %#x (only bits 0 and 1 are supported)", off, req)
	}
	if off+multibootHeaderSize > len(img) {
		return h, fmt.Errorf("multiboot header at %#x: truncated, need %d bytes but the file has %d", off, multibootHeaderSize, len(img)-off)
	}
	f := func(i int) uint32 { return binary.LittleEndian.Uint32(img[off+12+4*i:]) }
	h.HeaderAddr, h.LoadAddr, h.LoadEndAddr, h.BSSEndAddr, h.EntryAddr = f(0), f(1), f(2), f(3), f(4)

	if h.LoadAddr > h.HeaderAddr {
		return h, fmt.Errorf("multiboot header at %#x: load_addr %#x is above header_addr %#x", off, h.LoadAddr, h.HeaderAddr)
	}
	delta := uint64(h.HeaderAddr - h.LoadAddr)
	if delta > uint64(off) {
		return h, fmt.Errorf("multiboot header at %#x: header_addr %#x - load_addr %#x = %#x puts the load start before the file start", off, h.HeaderAddr, h.LoadAddr, delta)
	}
	h.LoadOffset = off - int(delta)
	avail := uint64(len(img) - h.LoadOffset)
	if h.LoadEndAddr == 0 {
		h.LoadSize = int(avail)
	} else {
		if h.LoadEndAddr <= h.LoadAddr {
			return h, fmt.Errorf("multiboot header at %#x: load_end_addr %#x is not above load_addr %#x", off, h.LoadEndAddr, h.LoadAddr)
		}
		size := uint64(h.LoadEndAddr - h.LoadAddr)
		if size > avail {
			return h, fmt.Errorf("multiboot header at %#x: load_end_addr %#x is beyond the file: %d bytes to load from offset %#x but only %d there", off, h.LoadEndAddr, size, h.LoadOffset, avail)
		}
		h.LoadSize = int(size)
	}
	if uint64(h.HeaderAddr)+multibootHeaderSize > h.LoadEnd() {
		return h, fmt.Errorf("multiboot header at %#x: the header itself is not within the loaded range [%#x, %#x)", off, h.LoadAddr, h.LoadEnd())
	}
	if h.LoadEnd() > 1<<32 {
		return h, fmt.Errorf("multiboot header at %#x: loaded range [%#x, %#x) goes beyond 4 GiB", off, h.LoadAddr, h.LoadEnd())
	}
	if h.BSSEndAddr != 0 && uint64(h.BSSEndAddr) < h.LoadEnd() {
		return h, fmt.Errorf("multiboot header at %#x: bss_end_addr %#x is below the end of the loaded range %#x", off, h.BSSEndAddr, h.LoadEnd())
	}
	if uint64(h.EntryAddr) < uint64(h.LoadAddr) || uint64(h.EntryAddr) >= h.LoadEnd() {
		return h, fmt.Errorf("multiboot header at %#x: entry_addr %#x is outside the loaded range [%#x, %#x)", off, h.EntryAddr, h.LoadAddr, h.LoadEnd())
	}
	return h, nil
}
