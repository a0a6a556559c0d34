package devices

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// parsedSMBIOS is what the test's own parser finds in built tables.
type parsedSMBIOS struct {
	major, minor uint8
	tableAddr    uint32
	structs      []parsedStruct
}

type parsedStruct struct {
	typ       uint8
	handle    uint16
	formatted []byte
	strs      []string
}

// str returns the string that the byte at off of the formatted area points at.
func (s parsedStruct) str(off int) (string, error) {
	n := int(s.formatted[off])
	if n == 0 {
		return "", nil
	}
	if n > len(s.strs) {
		return "", fmt.Errorf("type %d: string %d of %d", s.typ, n, len(s.strs))
	}
	return s.strs[n-1], nil
}

func sum8(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// parseSMBIOS checks and parses a 32-bit entry point and its table, written
// from DSP0134 independently of the builder.
func parseSMBIOS(ep, table []byte) (*parsedSMBIOS, error) {
	if len(ep) < 0x1F || string(ep[:4]) != "_SM_" {
		return nil, fmt.Errorf("no _SM_ anchor")
	}
	epLen := int(ep[5])
	if epLen != 0x1F || len(ep) != epLen {
		return nil, fmt.Errorf("entry point length %d", epLen)
	}
	if sum8(ep) != 0 {
		return nil, fmt.Errorf("entry point checksum")
	}
	if string(ep[0x10:0x15]) != "_DMI_" {
		return nil, fmt.Errorf("no _DMI_ anchor")
	}
	if sum8(ep[0x10:0x1F]) != 0 {
		return nil, fmt.Errorf("intermediate checksum")
	}
	p := &parsedSMBIOS{major: ep[6], minor: ep[7]}
	maxSize := int(binary.LittleEndian.Uint16(ep[8:]))
	tlen := int(binary.LittleEndian.Uint16(ep[0x16:]))
	p.tableAddr = binary.LittleEndian.Uint32(ep[0x18:])
	count := int(binary.LittleEndian.Uint16(ep[0x1C:]))
	if ep[0x1E] != p.major<<4|p.minor {
		return nil, fmt.Errorf("BCD revision %#x", ep[0x1E])
	}
	if tlen != len(table) {
		return nil, fmt.Errorf("table length %d, have %d", tlen, len(table))
	}
	rest := table
	seenMax := 0
	for len(rest) > 0 {
		if len(rest) < 4 || int(rest[1]) < 4 || int(rest[1]) > len(rest) {
			return nil, fmt.Errorf("bad structure header")
		}
		s := parsedStruct{typ: rest[0], handle: binary.LittleEndian.Uint16(rest[2:]), formatted: rest[:rest[1]]}
		strArea := rest[rest[1]:]
		end := bytes.Index(strArea, []byte{0, 0})
		if end < 0 {
			return nil, fmt.Errorf("type %d: unterminated strings", s.typ)
		}
		if end > 0 {
			s.strs = strings.Split(string(strArea[:end]), "\x00")
		}
		size := int(rest[1]) + end + 2
		seenMax = max(seenMax, size)
		rest = rest[size:]
		p.structs = append(p.structs, s)
		if s.typ == 127 {
			break
		}
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after type 127", len(rest))
	}
	if len(p.structs) != count || seenMax != maxSize {
		return nil, fmt.Errorf("count %d/%d, max size %d/%d", len(p.structs), count, seenMax, maxSize)
	}
	return p, nil
}

func (p *parsedSMBIOS) byType(typ uint8) *parsedStruct {
	for i := range p.structs {
		if p.structs[i].typ == typ {
			return &p.structs[i]
		}
	}
	return nil
}

var testSystemInfo = SystemInfo{
	BIOSVersion:     "0.1.0",
	BIOSReleaseDate: "11/21/2026",
	Manufacturer:    "waggle",
	Product:         "waggle VM",
	Version:         "v3",
	SerialNumber:    "inst-0042",
	UUID:            [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef},
	SKU:             "sku",
	Family:          "fam",
}

func TestBuildSMBIOS(t *testing.T) {
	tabs, err := BuildSMBIOS(testSystemInfo, SMBIOSRegionStart)
	require.NoError(t, err)
	require.Equal(t, uint64(SMBIOSRegionStart), tabs.EntryPointAddr)
	require.Zero(t, tabs.TableAddr%16)
	require.GreaterOrEqual(t, tabs.TableAddr, tabs.EntryPointAddr+uint64(len(tabs.EntryPoint)))

	p, err := parseSMBIOS(tabs.EntryPoint, tabs.Table)
	require.NoError(t, err)
	require.Equal(t, uint8(2), p.major)
	require.Equal(t, uint8(8), p.minor)
	require.Equal(t, uint32(tabs.TableAddr), p.tableAddr)
	var types []uint8
	handles := map[uint16]bool{}
	for _, s := range p.structs {
		types = append(types, s.typ)
		require.False(t, handles[s.handle], "duplicate handle")
		handles[s.handle] = true
	}
	require.Equal(t, []uint8{0, 1, 32, 127}, types)

	bios := p.byType(0)
	require.Len(t, bios.formatted, 0x18)
	for off, want := range map[int]string{4: "waggle", 5: "0.1.0", 8: "11/21/2026"} {
		got, err := bios.str(off)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	require.Equal(t, byte(1<<4), bios.formatted[0x13], "virtual machine bit")

	sys := p.byType(1)
	require.Len(t, sys.formatted, 0x1B)
	for off, want := range map[int]string{4: "waggle", 5: "waggle VM", 6: "v3", 7: "inst-0042", 0x19: "sku", 0x1A: "fam"} {
		got, err := sys.str(off)
		require.NoError(t, err)
		require.Equal(t, want, got, "offset %#x", off)
	}
	require.Equal(t, []byte{0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef},
		sys.formatted[8:0x18], "UUID with its first three fields little-endian")
	require.Equal(t, byte(SMBIOSWakeUpPowerSwitch), sys.formatted[0x18])

	boot := p.byType(32)
	require.Len(t, boot.formatted, 0x0B)
	require.Empty(t, boot.strs)
	require.Len(t, p.byType(127).formatted, 4)

	mem := newFakeMem(SMBIOSRegionEnd)
	require.NoError(t, tabs.WriteTo(mem))
	require.Equal(t, tabs.EntryPoint, mem.ram[tabs.EntryPointAddr:tabs.EntryPointAddr+SMBIOSEntryPointLen])
	require.Equal(t, tabs.Table, mem.ram[tabs.TableAddr:tabs.TableAddr+uint64(len(tabs.Table))])
	require.Error(t, tabs.WriteTo(newFakeMem(0x1000)))
}

func TestBuildSMBIOSEmptyStrings(t *testing.T) {
	tabs, err := BuildSMBIOS(SystemInfo{}, 0xFFF00)
	require.NoError(t, err)
	p, err := parseSMBIOS(tabs.EntryPoint, tabs.Table)
	require.NoError(t, err)
	sys := p.byType(1)
	require.Empty(t, sys.strs, "no string of type 1 is set")
	for _, off := range []int{4, 5, 6, 7, 0x19, 0x1A} {
		require.Zero(t, sys.formatted[off], "an empty string is string number 0 (offset %#x)", off)
	}
	require.Equal(t, []string{SMBIOSVendor}, p.byType(0).strs, "the BIOS vendor is always there")

	// Some set, some not: the set ones are numbered in table order.
	tabs, err = BuildSMBIOS(SystemInfo{Product: "rocket", SerialNumber: "abc", Family: "fam"}, SMBIOSRegionStart)
	require.NoError(t, err)
	p, err = parseSMBIOS(tabs.EntryPoint, tabs.Table)
	require.NoError(t, err)
	sys = p.byType(1)
	require.Equal(t, []string{"rocket", "abc", "fam"}, sys.strs)
	require.Equal(t, []byte{0, 1, 0, 2}, sys.formatted[4:8])
	require.Equal(t, []byte{0, 3}, sys.formatted[0x19:0x1B])
}

func TestBuildSMBIOSRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		info SystemInfo
		addr uint64
	}{
		{"below the region", testSystemInfo, 0xEFFF0},
		{"past the region", testSystemInfo, 0x100000},
		{"unaligned", testSystemInfo, 0xF0008},
		{"does not fit", testSystemInfo, 0xFFFF0},
		{"NUL", SystemInfo{SerialNumber: "a\x00b"}, SMBIOSRegionStart},
		{"control", SystemInfo{Version: "a\nb"}, SMBIOSRegionStart},
		{"manufacturer", SystemInfo{Manufacturer: "a\x7fb"}, SMBIOSRegionStart},
		{"product", SystemInfo{Product: strings.Repeat("p", SMBIOSMaxStringLen+1)}, SMBIOSRegionStart},
		{"non-ASCII", SystemInfo{Family: "caf\xc3\xa9"}, SMBIOSRegionStart},
		{"too long", SystemInfo{SKU: strings.Repeat("x", SMBIOSMaxStringLen+1)}, SMBIOSRegionStart},
		{"date", SystemInfo{BIOSReleaseDate: "2026-11-21"}, SMBIOSRegionStart},
		{"month", SystemInfo{BIOSReleaseDate: "13/01/2026"}, SMBIOSRegionStart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildSMBIOS(tc.info, tc.addr)
			require.ErrorIs(t, err, ErrSMBIOS)
		})
	}
	_, err := BuildSMBIOS(SystemInfo{SKU: strings.Repeat("x", SMBIOSMaxStringLen)}, SMBIOSRegionStart)
	require.NoError(t, err)
}

func FuzzBuildSMBIOS(f *testing.F) {
	f.Add("0.1.0", "11/21/2026", "v1", "serial", "sku", "family", []byte("0123456789abcdef"), uint16(0))
	f.Add("", "", "", "", "", "", []byte{}, uint16(0xFFF))
	f.Add("\x00", "1/1/1", " ", "\xff", strings.Repeat("y", 64), "\t", []byte{1}, uint16(0xFF0))
	f.Fuzz(func(t *testing.T, bv, date, ver, serial, sku, fam string, uuid []byte, para uint16) {
		// The fuzzed strings serve twice, so the seed corpus keeps its
		// shape: manufacturer and product take the SKU's and family's.
		info := SystemInfo{BIOSVersion: bv, BIOSReleaseDate: date, Manufacturer: sku, Product: fam, Version: ver,
			SerialNumber: serial, SKU: sku, Family: fam}
		copy(info.UUID[:], uuid)
		addr := SMBIOSRegionStart + uint64(para%0x1000)*16
		tabs, err := BuildSMBIOS(info, addr)
		if err != nil {
			require.ErrorIs(t, err, ErrSMBIOS)
			return
		}
		require.LessOrEqual(t, tabs.TableAddr+uint64(len(tabs.Table)), uint64(SMBIOSRegionEnd))
		p, err := parseSMBIOS(tabs.EntryPoint, tabs.Table)
		require.NoError(t, err)
		sys := p.byType(1)
		for off, want := range map[int]string{4: sku, 5: fam, 6: ver, 7: serial, 0x19: sku, 0x1A: fam} {
			got, err := sys.str(off)
			require.NoError(t, err)
			require.Equal(t, want, got)
		}
		bios := p.byType(0)
		for off, want := range map[int]string{5: bv, 8: date} {
			got, err := bios.str(off)
			require.NoError(t, err)
			require.Equal(t, want, got)
		}
	})
}
