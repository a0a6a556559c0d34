package spec

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func validBuilder() *Builder {
	return NewBuilder().
		SetBoard(Board{CPUs: 2, MemoryMiB: 256, Chipset: ChipsetI440FX}).
		SetBoot(Boot{Image: "ticker", Cmdline: "pace_ms=100"}).
		Add(MustKey("com1"), SerialPort{Num: COM1}).
		Add(MustKey("disk0"), VirtioDisk{Backend: MustKey("disk0-be"), Slot: 0}).
		Add(MustKey("disk0-be"), FileStorageBackend{Path: "vm1/disk0.img", BlockSize: 512})
}

func TestBuildValid(t *testing.T) {
	s, err := validBuilder().Build()
	require.NoError(t, err)
	require.Equal(t, 3, s.Len())
	entries := s.Components()
	require.Equal(t, []string{"com1", "disk0", "disk0-be"}, []string{entries[0].Key.String(), entries[1].Key.String(), entries[2].Key.String()})
	again, err := s.ToBuilder().Build()
	require.NoError(t, err)
	require.True(t, s.Equal(again))
}

// TestBuildRules breaks each rule once and checks that Build names the field
// and the rule.
func TestBuildRules(t *testing.T) {
	cases := []struct {
		name string
		edit func(b *Builder)
		path string
		rule Rule
	}{
		{"no cpus", func(b *Builder) { b.board.CPUs = 0 }, "board.cpus", RuleRange},
		{"too many cpus", func(b *Builder) { b.board.CPUs = MaxCPUs + 1 }, "board.cpus", RuleRange},
		{"too little memory", func(b *Builder) { b.board.MemoryMiB = MinMemoryMiB - 1 }, "board.memory_mb", RuleRange},
		{"too much memory", func(b *Builder) { b.board.MemoryMiB = MaxMemoryMiB + 1 }, "board.memory_mb", RuleRange},
		{"unknown chipset", func(b *Builder) { b.board.Chipset = 9 }, "board.chipset", RuleInvalid},
		{"empty image", func(b *Builder) { b.boot.Image = "" }, "boot.image", RuleInvalid},
		{"image with slash", func(b *Builder) { b.boot.Image = "../etc" }, "boot.image", RuleInvalid},
		{"long cmdline", func(b *Builder) { b.boot.Cmdline = string(make([]byte, MaxCmdlineLen+1)) }, "boot.cmdline", RuleRange},
		{"control byte in cmdline", func(b *Builder) { b.boot.Cmdline = "a\nb" }, "boot.cmdline", RuleInvalid},
		{"duplicate key", func(b *Builder) { b.Add(MustKey("com1"), SerialPort{Num: COM2}) }, "components.com1", RuleDuplicateKey},
		{"nil component", func(b *Builder) { b.Add(MustKey("x"), nil) }, "components.x", RuleRequired},
		{"zero key", func(b *Builder) { b.Add(Key{}, SerialPort{Num: COM2}) }, "components", RuleRequired},
		{"bad com port", func(b *Builder) { b.components[MustKey("com5")] = SerialPort{Num: 5} }, "components.com5.num", RuleInvalid},
		{"two serial ports on com1", func(b *Builder) { b.Add(MustKey("com1b"), SerialPort{Num: COM1}) }, "components.com1b.num", RuleSerialConflict},
		{"two serial ports on com4", func(b *Builder) {
			b.Add(MustKey("com4"), SerialPort{Num: COM4}).Add(MustKey("com4b"), SerialPort{Num: COM4})
		}, "components.com4b.num", RuleSerialConflict},
		{"dangling backend", func(b *Builder) {
			b.Add(MustKey("disk1"), VirtioDisk{Backend: MustKey("nothing"), Slot: 1})
		}, "components.disk1.backend", RuleDanglingRef},
		{"missing backend", func(b *Builder) { b.Add(MustKey("disk1"), VirtioDisk{Slot: 1}) }, "components.disk1.backend", RuleRequired},
		{"backend is a device", func(b *Builder) {
			b.Add(MustKey("disk1"), VirtioDisk{Backend: MustKey("com1"), Slot: 1})
		}, "components.disk1.backend", RuleWrongKind},
		{"unused backend", func(b *Builder) {
			b.Add(MustKey("spare"), FileStorageBackend{Path: "spare.img", BlockSize: 512})
		}, "components.spare", RuleUnusedBackend},
		{"two devices on one backend", func(b *Builder) {
			b.Add(MustKey("disk1"), VirtioDisk{Backend: MustKey("disk0-be"), Slot: 1})
		}, "components.disk0-be", RuleSharedBackend},
		{"slot out of range", func(b *Builder) {
			b.components[MustKey("disk0")] = VirtioDisk{Backend: MustKey("disk0-be"), Slot: MaxVirtioSlots}
		}, "components.disk0.slot", RuleRange},
		{"two devices in one slot", func(b *Builder) {
			b.Add(MustKey("disk1"), VirtioDisk{Backend: MustKey("be1"), Slot: 0})
			b.Add(MustKey("be1"), FileStorageBackend{Path: "be1.img", BlockSize: 512})
		}, "components.disk1.slot", RuleSlotConflict},
		{"empty path", func(b *Builder) { b.components[MustKey("disk0-be")] = FileStorageBackend{BlockSize: 512} }, "components.disk0-be.path", RuleRequired},
		{"absolute path", func(b *Builder) {
			b.components[MustKey("disk0-be")] = FileStorageBackend{Path: "/etc/shadow", BlockSize: 512}
		}, "components.disk0-be.path", RuleInvalid},
		{"dot-dot path", func(b *Builder) {
			b.components[MustKey("disk0-be")] = FileStorageBackend{Path: "a/../../disk.img", BlockSize: 512}
		}, "components.disk0-be.path", RuleInvalid},
		{"long path", func(b *Builder) {
			b.components[MustKey("disk0-be")] = FileStorageBackend{Path: strings.Repeat("a", MaxStoragePathLen+1), BlockSize: 512}
		}, "components.disk0-be.path", RuleRange},
		{"block size not a power of two", func(b *Builder) {
			b.components[MustKey("disk0-be")] = FileStorageBackend{Path: "d.img", BlockSize: 1000}
		}, "components.disk0-be.block_size", RuleInvalid},
		{"block size too small", func(b *Builder) {
			b.components[MustKey("disk0-be")] = FileStorageBackend{Path: "d.img", BlockSize: 256}
		}, "components.disk0-be.block_size", RuleInvalid},
		{"too many components", func(b *Builder) {
			for i := range MaxComponents {
				b.Add(KeyFromUUID([16]byte{byte(i), 1}), SerialPort{Num: 0})
			}
		}, "components", RuleTooMany},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := validBuilder()
			c.edit(b)
			_, err := b.Build()
			var ve *ValidationError
			require.True(t, errors.As(err, &ve), "want a *ValidationError, got %v", err)
			require.True(t, ve.Has(c.path, c.rule), "want %s at %s, got %v", c.rule, c.path, ve)
			require.Contains(t, err.Error(), c.path)
		})
	}
}

func TestBuildReportsEveryProblem(t *testing.T) {
	b := validBuilder().SetBoard(Board{})
	b.Add(MustKey("com1b"), SerialPort{Num: COM1})
	_, err := b.Build()
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.True(t, ve.Has("board.cpus", RuleRange))
	require.True(t, ve.Has("board.memory_mb", RuleRange))
	require.True(t, ve.Has("components.com1b.num", RuleSerialConflict))
}

func TestReplace(t *testing.T) {
	s, err := validBuilder().Build()
	require.NoError(t, err)
	b := s.ToBuilder()
	require.NoError(t, b.Replace(MustKey("disk0-be"), FileStorageBackend{Path: "other/disk0.img", BlockSize: 512}))
	require.ErrorContains(t, b.Replace(MustKey("disk0-be"), SerialPort{Num: COM2}), "cannot replace")
	require.ErrorContains(t, b.Replace(MustKey("nope"), SerialPort{Num: COM2}), "no such component")
	s2, err := b.Build()
	require.NoError(t, err)
	require.False(t, s.Equal(s2))
	c, ok := s2.Component(MustKey("disk0-be"))
	require.True(t, ok)
	require.Equal(t, "other/disk0.img", c.(FileStorageBackend).Path)
	// The original spec is untouched.
	c, _ = s.Component(MustKey("disk0-be"))
	require.Equal(t, "vm1/disk0.img", c.(FileStorageBackend).Path)
}

func TestCheckComponent(t *testing.T) {
	require.NoError(t, CheckComponent(MustKey("be"), FileStorageBackend{Path: "d.img", BlockSize: 4096}))
	err := CheckComponent(MustKey("be"), FileStorageBackend{Path: "/d.img", BlockSize: 3})
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.True(t, ve.Has("components.be.path", RuleInvalid))
	require.True(t, ve.Has("components.be.block_size", RuleInvalid))
	require.ErrorContains(t, CheckComponent(MustKey("c"), SerialPort{Num: 9}), "components.c.num")
	require.ErrorContains(t, CheckComponent(MustKey("d"), VirtioDisk{Slot: 8}), "components.d.slot")
}

// TestBuildErrorOrderIsStable builds one spec with many problems 50 times,
// adding its components in a different order each time (as callers that
// add from a map do), and requires the same error every time.
func TestBuildErrorOrderIsStable(t *testing.T) {
	type add struct {
		k Key
		c Component
	}
	adds := []add{
		{MustKey("com1"), SerialPort{Num: COM1}},
		{MustKey("com1b"), SerialPort{Num: COM1}},
		{MustKey("com9"), SerialPort{Num: 9}},
		{MustKey("disk0"), VirtioDisk{Backend: MustKey("disk0-be"), Slot: 0}},
		{MustKey("disk1"), VirtioDisk{Backend: MustKey("nothing"), Slot: 0}},
		{MustKey("disk2"), VirtioDisk{Backend: MustKey("com1"), Slot: 9}},
		{MustKey("disk3"), VirtioDisk{Backend: MustKey("disk0-be"), Slot: 3}},
		{MustKey("disk0-be"), FileStorageBackend{Path: "/etc/shadow", BlockSize: 100}},
		{MustKey("spare"), FileStorageBackend{Path: "a/../b", BlockSize: 512}},
		{MustKey("spare2"), FileStorageBackend{BlockSize: 512}},
		// One key twice, with different components.
		{MustKey("twice"), SerialPort{Num: COM2}},
		{MustKey("twice"), FileStorageBackend{Path: "twice.img", BlockSize: 512}},
		{MustKey("x"), nil},
		{MustKey("y"), nil},
		{Key{}, SerialPort{Num: COM3}},
		{MustKey("9b2f0c1e-0000-4000-8000-000000000001"), VirtioDisk{Slot: 1}},
	}
	build := func(order []int) error {
		b := NewBuilder().SetBoard(Board{CPUs: 0, MemoryMiB: 1, Chipset: 7}).SetBoot(Boot{Image: "../x", Cmdline: "a\nb"})
		for _, i := range order {
			b.Add(adds[i].k, adds[i].c)
		}
		_, err := b.Build()
		return err
	}
	order := make([]int, len(adds))
	for i := range order {
		order[i] = i
	}
	first := build(order)
	require.Error(t, first)
	var ve *ValidationError
	require.ErrorAs(t, first, &ve)
	require.Greater(t, len(ve.Problems), 15, "the spec breaks many rules: %v", first)
	for i := range 50 {
		// A different permutation each time (reversed, rotated, swapped).
		perm := make([]int, len(order))
		for j := range perm {
			perm[j] = order[(j*7+i)%len(order)]
		}
		if i%2 == 1 {
			for l, r := 0, len(perm)-1; l < r; l, r = l+1, r-1 {
				perm[l], perm[r] = perm[r], perm[l]
			}
		}
		got := build(perm)
		require.Equal(t, first.Error(), got.Error(), "run %d, order %v", i, perm)
	}
}

// TestSMBIOSAndPVPanicRules: an explicit SMBIOS table's strings are
// bounded printable ASCII, each problem naming its field; a VM has one
// pvpanic device; the table survives ToBuilder and counts in Equal.
func TestSMBIOSAndPVPanicRules(t *testing.T) {
	base := func() *Builder {
		return NewBuilder().SetBoard(Board{CPUs: 1, MemoryMiB: 64, Chipset: ChipsetI440FX}).SetBoot(Boot{Image: "smbios"})
	}
	table := SMBIOS{Manufacturer: "Acme", Product: "Rocket", Version: "1", SerialNumber: "RS-1", SKU: "r1", Family: "rockets"}
	s, err := base().SetSMBIOS(table).Add(MustKey("panic"), PVPanic{}).Build()
	require.NoError(t, err)
	got, ok := s.SMBIOS()
	require.True(t, ok)
	require.Equal(t, table, got)
	again, err := s.ToBuilder().Build()
	require.NoError(t, err)
	require.True(t, s.Equal(again))
	derived, err := s.ToBuilder().ClearSMBIOS().Build()
	require.NoError(t, err)
	_, ok = derived.SMBIOS()
	require.False(t, ok)
	require.False(t, s.Equal(derived), "an explicit table is part of the spec")
	empty, err := base().SetSMBIOS(SMBIOS{}).Build()
	require.NoError(t, err)
	_, ok = empty.SMBIOS()
	require.True(t, ok, "an explicit table of empty strings is still explicit")
	require.False(t, empty.Equal(base().mustBuild(t)), "an empty explicit table is not the derived one")

	_, err = base().SetSMBIOS(SMBIOS{Product: strings.Repeat("p", MaxSMBIOSStringLen+1), Family: "tab\there"}).Build()
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.True(t, ve.Has("smbios.product", RuleRange), "%v", err)
	require.True(t, ve.Has("smbios.family", RuleInvalid), "%v", err)

	_, err = base().Add(MustKey("p1"), PVPanic{}).Add(MustKey("p2"), PVPanic{}).Build()
	require.ErrorAs(t, err, &ve)
	require.True(t, ve.Has("components.p2", RulePVPanicConflict), "%v", err)
}

func (b *Builder) mustBuild(t *testing.T) Spec {
	s, err := b.Build()
	require.NoError(t, err)
	return s
}

// TestBuildAcceptsEveryLimit puts each bounded field exactly at its limit
// and checks that Build takes it, and just past it that Build names the
// field: TestBuildRules breaks the rules from far off, so a bound moved by
// one (a < become <=) would pass it.
func TestBuildAcceptsEveryLimit(t *testing.T) {
	be := func(path string, bs uint32) FileStorageBackend { return FileStorageBackend{Path: path, BlockSize: bs} }
	setBackend := func(c FileStorageBackend) func(b *Builder) {
		return func(b *Builder) { b.components[MustKey("disk0-be")] = c }
	}
	// A path of exactly MaxStoragePathLen bytes, each segment at most
	// MaxStorageSegmentLen.
	seg := strings.Repeat("s", MaxStorageSegmentLen)
	longPath := strings.Repeat(seg+"/", MaxStoragePathLen/(MaxStorageSegmentLen+1))
	longPath += strings.Repeat("t", MaxStoragePathLen-len(longPath))
	require.Len(t, longPath, MaxStoragePathLen)
	printable := func(n int) string {
		var sb strings.Builder
		for i := range n {
			sb.WriteByte(byte(0x20 + i%(0x7f-0x20))) // every byte from 0x20 to 0x7e
		}
		return sb.String()
	}
	cases := []struct {
		name       string
		at, past   func(b *Builder)
		path       string
		rule       Rule
		atProblems bool // at the limit other rules break (only the bound's own must not)
	}{
		{"fewest cpus", func(b *Builder) { b.board.CPUs = 1 }, func(b *Builder) { b.board.CPUs = 0 }, "board.cpus", RuleRange, false},
		{"most cpus", func(b *Builder) { b.board.CPUs = MaxCPUs }, func(b *Builder) { b.board.CPUs = MaxCPUs + 1 }, "board.cpus", RuleRange, false},
		{"least memory", func(b *Builder) { b.board.MemoryMiB = MinMemoryMiB }, func(b *Builder) { b.board.MemoryMiB = MinMemoryMiB - 1 },
			"board.memory_mb", RuleRange, false},
		{"most memory", func(b *Builder) { b.board.MemoryMiB = MaxMemoryMiB }, func(b *Builder) { b.board.MemoryMiB = MaxMemoryMiB + 1 },
			"board.memory_mb", RuleRange, false},
		{"longest cmdline", func(b *Builder) { b.boot.Cmdline = printable(MaxCmdlineLen) },
			func(b *Builder) { b.boot.Cmdline = printable(MaxCmdlineLen + 1) }, "boot.cmdline", RuleRange, false},
		{"lowest cmdline byte", func(b *Builder) { b.boot.Cmdline = "a b" }, func(b *Builder) { b.boot.Cmdline = "a\x1fb" },
			"boot.cmdline", RuleInvalid, false},
		{"highest cmdline byte", func(b *Builder) { b.boot.Cmdline = "a~b" }, func(b *Builder) { b.boot.Cmdline = "a\x7fb" },
			"boot.cmdline", RuleInvalid, false},
		{"longest smbios string", func(b *Builder) { b.SetSMBIOS(SMBIOS{Product: printable(MaxSMBIOSStringLen)}) },
			func(b *Builder) { b.SetSMBIOS(SMBIOS{Product: printable(MaxSMBIOSStringLen + 1)}) }, "smbios.product", RuleRange, false},
		{"smbios bytes at both ends", func(b *Builder) { b.SetSMBIOS(SMBIOS{SKU: " ~"}) }, func(b *Builder) { b.SetSMBIOS(SMBIOS{SKU: " \x7f"}) },
			"smbios.sku", RuleInvalid, false},
		{"smbios byte below space", func(b *Builder) { b.SetSMBIOS(SMBIOS{SKU: " "}) }, func(b *Builder) { b.SetSMBIOS(SMBIOS{SKU: "\x1f"}) },
			"smbios.sku", RuleInvalid, false},
		{"com1", func(b *Builder) { b.components[MustKey("com1")] = SerialPort{Num: COM1} },
			func(b *Builder) { b.components[MustKey("com1")] = SerialPort{Num: COM1 - 1} }, "components.com1.num", RuleInvalid, false},
		{"com4", func(b *Builder) { b.components[MustKey("com1")] = SerialPort{Num: COM4} },
			func(b *Builder) { b.components[MustKey("com1")] = SerialPort{Num: COM4 + 1} }, "components.com1.num", RuleInvalid, false},
		{"last slot", func(b *Builder) {
			b.components[MustKey("disk0")] = VirtioDisk{Backend: MustKey("disk0-be"), Slot: MaxVirtioSlots - 1}
		},
			func(b *Builder) {
				b.components[MustKey("disk0")] = VirtioDisk{Backend: MustKey("disk0-be"), Slot: MaxVirtioSlots}
			},
			"components.disk0.slot", RuleRange, false},
		{"smallest block", setBackend(be("d.img", MinBlockSize)), setBackend(be("d.img", MinBlockSize/2)), "components.disk0-be.block_size", RuleInvalid, false},
		{"largest block", setBackend(be("d.img", MaxBlockSize)), setBackend(be("d.img", MaxBlockSize*2)), "components.disk0-be.block_size", RuleInvalid, false},
		{"longest path", setBackend(be(longPath, 512)), setBackend(be(longPath+"t", 512)), "components.disk0-be.path", RuleRange, false},
		{"most components", func(b *Builder) {
			for i := range MaxComponents - len(b.components) {
				b.Add(KeyFromUUID([16]byte{byte(i), 1}), SerialPort{Num: 0})
			}
		}, func(b *Builder) {
			for i := range MaxComponents + 1 - len(b.components) {
				b.Add(KeyFromUUID([16]byte{byte(i), 1}), SerialPort{Num: 0})
			}
		}, "components", RuleTooMany, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := validBuilder()
			c.at(b)
			_, err := b.Build()
			if c.atProblems {
				var ve *ValidationError
				require.ErrorAs(t, err, &ve)
				require.False(t, ve.Has(c.path, c.rule), "at the limit: %v", err)
			} else {
				require.NoError(t, err, "at the limit")
			}
			b = validBuilder()
			c.past(b)
			_, err = b.Build()
			var ve *ValidationError
			require.ErrorAs(t, err, &ve, "past the limit")
			require.True(t, ve.Has(c.path, c.rule), "past the limit: want %s at %s, got %v", c.rule, c.path, err)
		})
	}
}

// TestNamesAtTheEdges: the names and messages that print a bound print the
// right one.
func TestNamesAtTheEdges(t *testing.T) {
	require.Equal(t, "com1", COM1.String())
	require.Equal(t, "com4", COM4.String())
	require.Equal(t, "SerialPortNumber(0)", SerialPortNumber(0).String())
	require.Equal(t, "SerialPortNumber(5)", (COM4 + 1).String())

	b := validBuilder()
	b.components[MustKey("disk0")] = VirtioDisk{Backend: MustKey("disk0-be"), Slot: MaxVirtioSlots}
	_, err := b.Build()
	require.ErrorContains(t, err, fmt.Sprintf("must be from 0 to %d, is %d", MaxVirtioSlots-1, MaxVirtioSlots))
}

// TestDuplicateKeyKeepsTheFirstBySyntax: of two components under one key,
// the one whose Go syntax sorts first is kept and checked, whichever was
// added first, so what Build reports does not follow the order of Add.
func TestDuplicateKeyKeepsTheFirstBySyntax(t *testing.T) {
	k := MustKey("port")
	good, bad := SerialPort{Num: COM2}, SerialPort{Num: 7} // "{Num:0x2}" sorts before "{Num:0x7}"
	for _, order := range [][2]Component{{good, bad}, {bad, good}} {
		b := validBuilder().Add(k, order[0]).Add(k, order[1])
		_, err := b.Build()
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		require.True(t, ve.Has("components.port", RuleDuplicateKey), "%v", err)
		require.False(t, ve.Has("components.port.num", RuleInvalid), "the bad port was kept: %v", err)
		require.Equal(t, good, b.components[k])
	}
}
