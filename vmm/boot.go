package vmm

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/wagglevm/waggle/vmm/devices"
	"github.com/wagglevm/waggle/vmm/guest"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// Multiboot information flags the VMM sets.
const (
	mbInfoMem     = 1 << 0
	mbInfoCmdline = 1 << 2
	mbInfoMmap    = 1 << 6
)

// Where the VMM puts the Multiboot information (below 0x10000, ABI.md).
const (
	mbInfoAddr    = 0x8000
	mbInfoSize    = 0x80
	mbCmdlineAddr = 0x8100
	mbCmdlineMax  = 0x0e00 // up to 0x8f00
	mbMmapAddr    = 0x9000
	smbiosAddr    = devices.SMBIOSRegionStart
)

// bootImage is a parsed Multiboot a.out-kludge image.
type bootImage struct {
	// data is what is copied to loadAddr.
	data     []byte
	loadAddr uint32
	// bssEnd is the end of the zero-filled area (0: none).
	bssEnd uint32
	entry  uint32
}

// parseImage parses a Multiboot image with guest.ParseMultiboot.
func parseImage(img []byte) (*bootImage, error) {
	h, err := guest.ParseMultiboot(img)
	if err != nil {
		return nil, err
	}
	bi := &bootImage{data: img[h.LoadOffset : h.LoadOffset+h.LoadSize], loadAddr: h.LoadAddr, entry: h.EntryAddr}
	if end := h.BSSEnd(); end > h.LoadEnd() {
		bi.bssEnd = uint32(end)
	}
	return bi, nil
}

// load copies the image and zeroes its bss.
func (bi *bootImage) load(mem *guestMemory) error {
	if err := mem.WriteAt(bi.data, uint64(bi.loadAddr)); err != nil {
		return fmt.Errorf("load image at %#x: %w", bi.loadAddr, err)
	}
	if end := uint64(bi.loadAddr) + uint64(len(bi.data)); bi.bssEnd != 0 && uint64(bi.bssEnd) > end {
		if err := mem.WriteAt(make([]byte, uint64(bi.bssEnd)-end), end); err != nil {
			return fmt.Errorf("zero bss at %#x: %w", end, err)
		}
	}
	return nil
}

// writeMultibootInfo writes the information structure, command line and
// memory map.
func writeMultibootInfo(mem *guestMemory, cmdline string, tscKHz uint32) error {
	if tscKHz != 0 {
		if cmdline != "" {
			cmdline += " "
		}
		cmdline += "tsc_khz=" + strconv.FormatUint(uint64(tscKHz), 10)
	}
	if len(cmdline)+1 > mbCmdlineMax {
		return fmt.Errorf("command line of %d bytes does not fit in %d", len(cmdline), mbCmdlineMax-1)
	}
	le := binary.LittleEndian
	var mmap []byte
	for _, r := range mem.regions {
		e := make([]byte, 24)
		le.PutUint32(e[0:], 20) // size of the entry after this field
		le.PutUint64(e[4:], r.GPA)
		le.PutUint64(e[12:], r.Size)
		le.PutUint32(e[20:], 1) // available RAM
		mmap = append(mmap, e...)
	}
	info := make([]byte, mbInfoSize)
	le.PutUint32(info[0:], mbInfoMem|mbInfoCmdline|mbInfoMmap)
	le.PutUint32(info[4:], 640)                                       // mem_lower, KiB
	le.PutUint32(info[8:], uint32((mem.regions[0].Size-(1<<20))>>10)) // mem_upper, KiB from 1 MiB
	le.PutUint32(info[16:], mbCmdlineAddr)
	le.PutUint32(info[44:], uint32(len(mmap)))
	le.PutUint32(info[48:], mbMmapAddr)
	for _, w := range []struct {
		b    []byte
		addr uint64
	}{{info, mbInfoAddr}, {append([]byte(cmdline), 0), mbCmdlineAddr}, {mmap, mbMmapAddr}} {
		if err := mem.WriteAt(w.b, w.addr); err != nil {
			return fmt.Errorf("write multiboot information: %w", err)
		}
	}
	return nil
}

// bootRegs sets the Multiboot entry registers.
func bootRegs(r *kvm.Regs, entry uint32) {
	*r = kvm.Regs{
		RAX:    guest.MultibootBootloaderMagic,
		RBX:    mbInfoAddr,
		RIP:    uint64(entry),
		RFLAGS: 0x2, // reserved bit; IF clear
	}
}
