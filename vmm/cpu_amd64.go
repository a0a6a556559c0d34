package vmm

import (
	"slices"

	"github.com/wagglevm/waggle/vmm/kvm"
)

// cpuidFor returns the supported CPUID table with vCPU id's APIC id filled
// in where the leaves carry one.
func cpuidFor(supported []kvm.CPUIDEntry2, id uint32) []kvm.CPUIDEntry2 {
	c := slices.Clone(supported)
	for i := range c {
		e := &c[i]
		switch e.Function {
		case 1:
			// EBX[31:24]: initial APIC id.
			e.EBX = e.EBX&0x00ffffff | id<<24
		case 0xb, 0x1f:
			// EDX: x2APIC id of this logical processor.
			e.EDX = id
		}
	}
	return c
}

// Multiboot segment selectors for the flat boot GDT layout the loader
// implies (the guest loads its own GDT before reloading segments).
const (
	bootCodeSelector = 0x10
	bootDataSelector = 0x18
)

// multibootSregs turns s (a vCPU's power-on special registers) into the
// Multiboot machine state: 32-bit protected mode, paging off, flat 4 GiB
// code and data segments with complete descriptor caches.
func multibootSregs(s *kvm.Sregs) {
	code := kvm.Segment{
		Base: 0, Limit: 0xffffffff, Selector: bootCodeSelector,
		Type:    0xb, // execute/read, accessed
		Present: 1, DPL: 0, DB: 1, S: 1, L: 0, G: 1,
	}
	data := kvm.Segment{
		Base: 0, Limit: 0xffffffff, Selector: bootDataSelector,
		Type:    0x3, // read/write, accessed
		Present: 1, DPL: 0, DB: 1, S: 1, L: 0, G: 1,
	}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = kvm.Segment{Limit: 0xffff, Type: 0xb, Present: 1} // busy 32-bit TSS
	s.LDT = kvm.Segment{Limit: 0xffff, Type: 0x2, Present: 1}
	s.GDT = kvm.DTable{}
	s.IDT = kvm.DTable{}
	const (
		cr0PE = 1 << 0
		cr0ET = 1 << 4
	)
	s.CR0 = cr0PE | cr0ET // caches on (CD, NW clear), paging off
	s.CR3, s.CR4, s.EFER = 0, 0, 0
}
