package kvm

// The kernel's x86-64 structures. Every padding field is spelled out, so
// that each type has the kernel's size with no implicit padding and can be
// encoded with encoding/binary as well as passed to an ioctl.

// Regs is struct kvm_regs: the general-purpose registers.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment: a segment register with its hidden
// descriptor cache.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	Padding  uint8
}

// DTable is struct kvm_dtable: a descriptor table register (GDTR, IDTR).
type DTable struct {
	Base    uint64
	Limit   uint16
	Padding [3]uint16
}

// Sregs is struct kvm_sregs: segment, control and system registers.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [(KVM_NR_INTERRUPTS + 63) / 64]uint64
}

// FPU is struct kvm_fpu: the legacy x87/SSE state.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	Pad1       uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	Pad2       uint32
}

// Xcr is one entry of struct kvm_xcrs.
type Xcr struct {
	XCR      uint32
	Reserved uint32
	Value    uint64
}

// Xcrs is struct kvm_xcrs: the extended control registers (XCR0).
type Xcrs struct {
	NrXcrs  uint32
	Flags   uint32
	Xcrs    [16]Xcr
	Padding [16]uint64
}

// MsrEntry is struct kvm_msr_entry.
type MsrEntry struct {
	Index    uint32
	Reserved uint32
	Data     uint64
}

// LapicState is struct kvm_lapic_state: the local APIC's register page.
type LapicState struct {
	Regs [1024]byte
}

// MPState is struct kvm_mp_state.
type MPState struct {
	MPState uint32
}

// VCPUEvents is struct kvm_vcpu_events: pending and injected exceptions,
// interrupts, NMIs and SMIs.
type VCPUEvents struct {
	Exception struct {
		Injected     uint8
		Nr           uint8
		HasErrorCode uint8
		Pending      uint8
		ErrorCode    uint32
	}
	Interrupt struct {
		Injected uint8
		Nr       uint8
		Soft     uint8
		Shadow   uint8
	}
	NMI struct {
		Injected uint8
		Pending  uint8
		Masked   uint8
		Pad      uint8
	}
	SIPIVector uint32
	Flags      uint32
	SMI        struct {
		SMM          uint8
		Pending      uint8
		SMMInsideNMI uint8
		LatchedInit  uint8
	}
	TripleFault struct {
		Pending uint8
	}
	Reserved            [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// DebugRegs is struct kvm_debugregs.
type DebugRegs struct {
	DB       [4]uint64
	DR6      uint64
	DR7      uint64
	Flags    uint64
	Reserved [9]uint64
}

// Irqchip is struct kvm_irqchip: one of the in-kernel PICs or the IOAPIC.
// The chip's state is kept as the kernel's opaque bytes.
type Irqchip struct {
	ChipID uint32
	Pad    uint32
	Chip   [512]byte
}

// PitChannelState is struct kvm_pit_channel_state.
type PitChannelState struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PitState2 is struct kvm_pit_state2.
type PitState2 struct {
	Channels [3]PitChannelState
	Flags    uint32
	Reserved [9]uint32
}

// PitConfig is struct kvm_pit_config.
type PitConfig struct {
	Flags uint32
	Pad   [15]uint32
}

// ClockData is struct kvm_clock_data: the VM's kvmclock.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	Pad0     uint32
	Realtime uint64
	HostTSC  uint64
	Pad      [4]uint32
}

// CPUIDEntry2 is struct kvm_cpuid_entry2.
type CPUIDEntry2 struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	Padding  [3]uint32
}

// KVM_CPUID_FLAG_SIGNIFCANT_INDEX marks a CPUID entry whose Index matters.
const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1

// UserspaceMemoryRegion is struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// IrqLevel is struct kvm_irq_level.
type IrqLevel struct {
	IRQ   uint32
	Level uint32
}

// DeviceAttr is struct kvm_device_attr.
type DeviceAttr struct {
	Flags uint32
	Group uint32
	Attr  uint64
	Addr  uint64
}

// EnableCap is struct kvm_enable_cap.
type EnableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	Pad   [64]uint8
}
