package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
)

// Where the SMBIOS tables may live in guest-physical memory (the legacy BIOS
// area the 32-bit entry point is searched in, on paragraph boundaries).
const (
	SMBIOSRegionStart = 0xF0000
	SMBIOSRegionEnd   = 0x100000 // exclusive
)

// SMBIOS structure types this package writes, as DSP0134 names them.
const (
	SMBIOSTypeBIOSInformation   = 0
	SMBIOSTypeSystemInformation = 1
	SMBIOSTypeSystemBoot        = 32
	SMBIOSTypeEndOfTable        = 127
)

// SMBIOS entry point layout (32-bit, version 2.8).
const (
	SMBIOSEntryPointLen = 0x1F
	smbiosMajor         = 2
	smbiosMinor         = 8
	smbiosBCDRevision   = 0x28
	smbiosAnchor        = "_SM_"
	smbiosDMIAnchor     = "_DMI_"
	smbiosDMIOffset     = 0x10 // where the intermediate entry point starts
)

// SMBIOSWakeUpPowerSwitch is the system wake-up type "power switch".
const SMBIOSWakeUpPowerSwitch = 0x06

// SMBIOSMaxStringLen bounds every string in the tables.
const SMBIOSMaxStringLen = 64

// Fixed strings: the type 0 vendor always; the type 1 manufacturer and
// product of a table the VMM derives (a spec may set its own).
const (
	SMBIOSVendor       = "waggle"
	SMBIOSManufacturer = "waggle"
	SMBIOSProduct      = "waggle VM"
)

// SystemInfo is what varies between VMs in their SMBIOS tables. Strings are
// printable ASCII of at most SMBIOSMaxStringLen bytes; empty ones are left
// out of the tables.
type SystemInfo struct {
	// BIOSVersion is the type 0 BIOS version, such as the VMM's version.
	BIOSVersion string
	// BIOSReleaseDate is the type 0 release date, "MM/DD/YYYY" or empty.
	BIOSReleaseDate string
	// Manufacturer and Product are the type 1 manufacturer and product
	// name.
	Manufacturer string
	Product      string
	// Version is the type 1 system version.
	Version string
	// SerialNumber is the type 1 serial number.
	SerialNumber string
	// UUID is the type 1 system UUID in RFC 4122 byte order; the table
	// stores its first three fields little-endian, as SMBIOS 2.6+ says.
	UUID [16]byte
	// SKU and Family are the type 1 SKU number and family.
	SKU    string
	Family string
}

// SMBIOSTables is a built entry point and structure table with their
// guest-physical addresses.
type SMBIOSTables struct {
	EntryPointAddr uint64
	EntryPoint     []byte
	TableAddr      uint64
	Table          []byte
}

// WriteTo copies the entry point and table into guest memory.
func (t *SMBIOSTables) WriteTo(mem GuestMemory) error {
	if err := mem.WriteAt(t.EntryPoint, t.EntryPointAddr); err != nil {
		return fmt.Errorf("write SMBIOS entry point at %#x: %w", t.EntryPointAddr, err)
	}
	if err := mem.WriteAt(t.Table, t.TableAddr); err != nil {
		return fmt.Errorf("write SMBIOS table at %#x: %w", t.TableAddr, err)
	}
	return nil
}

// ErrSMBIOS is wrapped by every error BuildSMBIOS returns.
var ErrSMBIOS = errors.New("invalid SMBIOS input")

var smbiosDate = regexp.MustCompile(`^(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01])/[0-9]{4}$`)

// BuildSMBIOS builds SMBIOS 2.8 tables for info: a 32-bit entry point at addr
// (paragraph-aligned, within SMBIOSRegionStart..SMBIOSRegionEnd) and, right
// after it on the next paragraph, a structure table with types 0, 1, 32 and
// 127. The whole must fit below SMBIOSRegionEnd.
func BuildSMBIOS(info SystemInfo, addr uint64) (*SMBIOSTables, error) {
	if addr%16 != 0 || addr < SMBIOSRegionStart || addr >= SMBIOSRegionEnd {
		return nil, fmt.Errorf("%w: entry point address %#x is not a paragraph in %#x..%#x",
			ErrSMBIOS, addr, SMBIOSRegionStart, SMBIOSRegionEnd-1)
	}
	for _, f := range []struct{ name, v string }{
		{"BIOS version", info.BIOSVersion}, {"BIOS release date", info.BIOSReleaseDate},
		{"manufacturer", info.Manufacturer}, {"product", info.Product}, {"version", info.Version}, {"serial number", info.SerialNumber},
		{"SKU", info.SKU}, {"family", info.Family},
	} {
		if err := checkSMBIOSString(f.v); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrSMBIOS, f.name, err)
		}
	}
	if info.BIOSReleaseDate != "" && !smbiosDate.MatchString(info.BIOSReleaseDate) {
		return nil, fmt.Errorf("%w: BIOS release date %q is not MM/DD/YYYY", ErrSMBIOS, info.BIOSReleaseDate)
	}

	var tb smbiosTableBuilder
	tb.biosInformation(info)
	tb.systemInformation(info)
	tb.systemBoot()
	tb.endOfTable()

	tableAddr := addr + 0x20 // the entry point, rounded up to a paragraph
	if end := tableAddr + uint64(len(tb.b)); end > SMBIOSRegionEnd {
		return nil, fmt.Errorf("%w: tables at %#x end at %#x, past %#x", ErrSMBIOS, addr, end, SMBIOSRegionEnd)
	}
	if len(tb.b) > 0xffff {
		return nil, fmt.Errorf("%w: table of %d bytes is too long", ErrSMBIOS, len(tb.b))
	}

	ep := make([]byte, SMBIOSEntryPointLen)
	copy(ep[0:], smbiosAnchor)
	ep[0x05] = SMBIOSEntryPointLen
	ep[0x06] = smbiosMajor
	ep[0x07] = smbiosMinor
	binary.LittleEndian.PutUint16(ep[0x08:], uint16(tb.maxSize))
	ep[0x0A] = 0 // entry point revision: 2.1 style
	// 0x0B..0x0F: formatted area, zero.
	copy(ep[smbiosDMIOffset:], smbiosDMIAnchor)
	binary.LittleEndian.PutUint16(ep[0x16:], uint16(len(tb.b)))
	binary.LittleEndian.PutUint32(ep[0x18:], uint32(tableAddr))
	binary.LittleEndian.PutUint16(ep[0x1C:], uint16(tb.count))
	ep[0x1E] = smbiosBCDRevision
	ep[0x15] = smbiosChecksum(ep[smbiosDMIOffset:])
	ep[0x04] = smbiosChecksum(ep)

	return &SMBIOSTables{EntryPointAddr: addr, EntryPoint: ep, TableAddr: tableAddr, Table: tb.b}, nil
}

// checkSMBIOSString accepts printable ASCII up to SMBIOSMaxStringLen bytes.
func checkSMBIOSString(s string) error {
	if len(s) > SMBIOSMaxStringLen {
		return fmt.Errorf("%d bytes, at most %d", len(s), SMBIOSMaxStringLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("byte %d is %#x, not printable ASCII", i, c)
		}
	}
	return nil
}

// smbiosChecksum returns the byte that makes the sum of b (whose checksum
// byte is still zero) zero.
func smbiosChecksum(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}

// smbiosTableBuilder appends structures to a structure table.
type smbiosTableBuilder struct {
	b       []byte
	count   int
	maxSize int
	handle  uint16
}

// smbiosStrings collects a structure's string set.
type smbiosStrings struct {
	list []string
}

// add returns the string number of s (1-based), or 0 for an empty s.
func (ss *smbiosStrings) add(s string) byte {
	if s == "" {
		return 0
	}
	ss.list = append(ss.list, s)
	return byte(len(ss.list))
}

// add appends one structure: its formatted area (type, length and handle are
// filled in here) and its string set.
func (tb *smbiosTableBuilder) add(typ byte, formatted []byte, ss smbiosStrings) {
	start := len(tb.b)
	formatted[0] = typ
	formatted[1] = byte(len(formatted))
	binary.LittleEndian.PutUint16(formatted[2:], tb.handle)
	tb.handle++
	tb.b = append(tb.b, formatted...)
	if len(ss.list) == 0 {
		tb.b = append(tb.b, 0, 0)
	} else {
		for _, s := range ss.list {
			tb.b = append(tb.b, s...)
			tb.b = append(tb.b, 0)
		}
		tb.b = append(tb.b, 0)
	}
	tb.count++
	tb.maxSize = max(tb.maxSize, len(tb.b)-start)
}

func (tb *smbiosTableBuilder) biosInformation(info SystemInfo) {
	var ss smbiosStrings
	f := make([]byte, 0x18)
	f[0x04] = ss.add(SMBIOSVendor)
	f[0x05] = ss.add(info.BIOSVersion)
	binary.LittleEndian.PutUint16(f[0x06:], 0xE800) // BIOS starting address segment
	f[0x08] = ss.add(info.BIOSReleaseDate)
	f[0x09] = 0 // ROM size: 64 KiB
	// Characteristics: bit 3, "BIOS characteristics not supported".
	binary.LittleEndian.PutUint64(f[0x0A:], 1<<3)
	f[0x12] = 0
	f[0x13] = 1 << 4 // extension byte 2: the tables describe a virtual machine
	f[0x14] = 0      // system BIOS major release
	f[0x15] = 0      // system BIOS minor release
	f[0x16] = 0xFF   // no embedded controller firmware
	f[0x17] = 0xFF
	tb.add(SMBIOSTypeBIOSInformation, f, ss)
}

func (tb *smbiosTableBuilder) systemInformation(info SystemInfo) {
	var ss smbiosStrings
	f := make([]byte, 0x1B)
	f[0x04] = ss.add(info.Manufacturer)
	f[0x05] = ss.add(info.Product)
	f[0x06] = ss.add(info.Version)
	f[0x07] = ss.add(info.SerialNumber)
	u := info.UUID
	binary.LittleEndian.PutUint32(f[0x08:], binary.BigEndian.Uint32(u[0:4]))
	binary.LittleEndian.PutUint16(f[0x0C:], binary.BigEndian.Uint16(u[4:6]))
	binary.LittleEndian.PutUint16(f[0x0E:], binary.BigEndian.Uint16(u[6:8]))
	copy(f[0x10:0x18], u[8:16])
	f[0x18] = SMBIOSWakeUpPowerSwitch
	f[0x19] = ss.add(info.SKU)
	f[0x1A] = ss.add(info.Family)
	tb.add(SMBIOSTypeSystemInformation, f, ss)
}

func (tb *smbiosTableBuilder) systemBoot() {
	f := make([]byte, 0x0B)
	// 0x04..0x09 reserved; 0x0A boot status 0: no errors detected.
	tb.add(SMBIOSTypeSystemBoot, f, smbiosStrings{})
}

func (tb *smbiosTableBuilder) endOfTable() {
	tb.add(SMBIOSTypeEndOfTable, make([]byte, 4), smbiosStrings{})
}
