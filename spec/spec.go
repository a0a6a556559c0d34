package spec

import (
	"maps"
	"slices"
)

// Chipset is the machine's chipset.
type Chipset uint8

// The chipsets.
const (
	ChipsetI440FX Chipset = iota + 1
)

// String returns the chipset's name as the contracts spell it.
func (c Chipset) String() string {
	if c == ChipsetI440FX {
		return "i440fx"
	}
	return "Chipset(?)"
}

// Board limits.
const (
	MaxCPUs      = 64
	MinMemoryMiB = 16
	MaxMemoryMiB = 1 << 20 // 1 TiB
)

// Board is the machine's processors, memory and chipset.
type Board struct {
	CPUs      uint32
	MemoryMiB uint64
	Chipset   Chipset
}

// MaxCmdlineLen bounds Boot.Cmdline.
const MaxCmdlineLen = 1024

// Boot says what the VM runs when it starts.
type Boot struct {
	// Image names the guest image (see vmm/guest for the ones we ship). It is
	// a name here; whether such an image exists is the VMM's concern.
	Image string
	// Cmdline is passed to the image as its Multiboot command line.
	Cmdline string
}

// Spec describes a VM completely: everything needed to recreate it
// identically on another host. The zero Spec is empty and invalid; valid
// specs come from Builder.Build and are never changed afterwards.
type Spec struct {
	board      Board
	boot       Boot
	smbios     SMBIOS
	hasSMBIOS  bool
	components map[Key]Component
}

// Entry is one component with its key.
type Entry struct {
	Key       Key
	Component Component
}

// Board returns the board.
func (s Spec) Board() Board { return s.board }

// Boot returns the boot settings.
func (s Spec) Boot() Boot { return s.boot }

// SMBIOS returns the spec's explicit SMBIOS type 1 table, and false when
// it sets none (the VMM then derives one from the instance).
func (s Spec) SMBIOS() (SMBIOS, bool) { return s.smbios, s.hasSMBIOS }

// Len returns the number of components.
func (s Spec) Len() int { return len(s.components) }

// Component returns the component with key k.
func (s Spec) Component(k Key) (Component, bool) {
	c, ok := s.components[k]
	return c, ok
}

// Components returns every component, ordered by key.
func (s Spec) Components() []Entry {
	keys := slices.SortedFunc(maps.Keys(s.components), Key.Compare)
	out := make([]Entry, len(keys))
	for i, k := range keys {
		out[i] = Entry{Key: k, Component: s.components[k]}
	}
	return out
}

// Equal reports whether s and o describe the same VM.
func (s Spec) Equal(o Spec) bool {
	return s.board == o.board && s.boot == o.boot && s.hasSMBIOS == o.hasSMBIOS && s.smbios == o.smbios &&
		maps.Equal(s.components, o.components)
}

// ToBuilder returns a Builder preloaded with s, to derive an amended spec
// (for example a migration target replacing a host-local backend).
func (s Spec) ToBuilder() *Builder {
	b := NewBuilder()
	b.board, b.boot, b.smbios, b.hasSMBIOS = s.board, s.boot, s.smbios, s.hasSMBIOS
	maps.Copy(b.components, s.components)
	return b
}
