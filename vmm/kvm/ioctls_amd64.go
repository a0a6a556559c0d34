package kvm

// Struct sizes as the x86-64 kernel lays them out; types_amd64_test.go checks
// them against the Go types.
const (
	sizeofMsrList            = 4
	sizeofCPUID2             = 8
	sizeofDirtyLog           = 16
	sizeofUserspaceMemRegion = 32
	sizeofIrqLevel           = 8
	sizeofIrqchip            = 520
	sizeofPitConfig          = 64
	sizeofPitState2          = 112
	sizeofClockData          = 48
	sizeofClearDirtyLog      = 24
	sizeofEnableCap          = 104
	sizeofRegs               = 144
	sizeofSregs              = 312
	sizeofMsrs               = 8
	sizeofFPU                = 416
	sizeofLapicState         = 1024
	sizeofMPState            = 4
	sizeofVCPUEvents         = 64
	sizeofDebugRegs          = 128
	sizeofXsave              = 4096
	sizeofXcrs               = 392
	sizeofDeviceAttr         = 24
	sizeofU64                = 8
	sizeofRun                = 2352
	sizeofCPUIDEntry2        = 40
	sizeofMsrEntry           = 16
)

// The ioctl requests, named as linux/kvm.h names them.
var (
	// System ioctls, on the /dev/kvm descriptor.
	KVM_GET_API_VERSION     = io(0x00)
	KVM_CREATE_VM           = io(0x01)
	KVM_GET_MSR_INDEX_LIST  = iowr(0x02, sizeofMsrList)
	KVM_CHECK_EXTENSION     = io(0x03)
	KVM_GET_VCPU_MMAP_SIZE  = io(0x04)
	KVM_GET_SUPPORTED_CPUID = iowr(0x05, sizeofCPUID2)

	// VM ioctls.
	KVM_CREATE_VCPU            = io(0x41)
	KVM_GET_DIRTY_LOG          = iow(0x42, sizeofDirtyLog)
	KVM_SET_USER_MEMORY_REGION = iow(0x46, sizeofUserspaceMemRegion)
	KVM_SET_TSS_ADDR           = io(0x47)
	KVM_SET_IDENTITY_MAP_ADDR  = iow(0x48, sizeofU64)
	KVM_CREATE_IRQCHIP         = io(0x60)
	KVM_IRQ_LINE               = iow(0x61, sizeofIrqLevel)
	KVM_GET_IRQCHIP            = iowr(0x62, sizeofIrqchip)
	KVM_SET_IRQCHIP            = ior(0x63, sizeofIrqchip)
	KVM_CREATE_PIT2            = iow(0x77, sizeofPitConfig)
	KVM_SET_CLOCK              = iow(0x7b, sizeofClockData)
	KVM_GET_CLOCK              = ior(0x7c, sizeofClockData)
	KVM_GET_PIT2               = ior(0x9f, sizeofPitState2)
	KVM_SET_PIT2               = iow(0xa0, sizeofPitState2)
	KVM_ENABLE_CAP             = iow(0xa3, sizeofEnableCap)
	KVM_CLEAR_DIRTY_LOG        = iowr(0xc0, sizeofClearDirtyLog)

	// vCPU ioctls.
	KVM_RUN             = io(0x80)
	KVM_GET_REGS        = ior(0x81, sizeofRegs)
	KVM_SET_REGS        = iow(0x82, sizeofRegs)
	KVM_GET_SREGS       = ior(0x83, sizeofSregs)
	KVM_SET_SREGS       = iow(0x84, sizeofSregs)
	KVM_GET_MSRS        = iowr(0x88, sizeofMsrs)
	KVM_SET_MSRS        = iow(0x89, sizeofMsrs)
	KVM_GET_FPU         = ior(0x8c, sizeofFPU)
	KVM_SET_FPU         = iow(0x8d, sizeofFPU)
	KVM_GET_LAPIC       = ior(0x8e, sizeofLapicState)
	KVM_SET_LAPIC       = iow(0x8f, sizeofLapicState)
	KVM_SET_CPUID2      = iow(0x90, sizeofCPUID2)
	KVM_GET_CPUID2      = iowr(0x91, sizeofCPUID2)
	KVM_GET_MP_STATE    = ior(0x98, sizeofMPState)
	KVM_SET_MP_STATE    = iow(0x99, sizeofMPState)
	KVM_GET_VCPU_EVENTS = ior(0x9f, sizeofVCPUEvents)
	KVM_SET_VCPU_EVENTS = iow(0xa0, sizeofVCPUEvents)
	KVM_GET_DEBUGREGS   = ior(0xa1, sizeofDebugRegs)
	KVM_SET_DEBUGREGS   = iow(0xa2, sizeofDebugRegs)
	KVM_SET_TSC_KHZ     = io(0xa2)
	KVM_GET_TSC_KHZ     = io(0xa3)
	KVM_GET_XSAVE       = ior(0xa4, sizeofXsave)
	KVM_SET_XSAVE       = iow(0xa5, sizeofXsave)
	KVM_GET_XCRS        = ior(0xa6, sizeofXcrs)
	KVM_SET_XCRS        = iow(0xa7, sizeofXcrs)
	KVM_KVMCLOCK_CTRL   = io(0xad)
	KVM_GET_XSAVE2      = ior(0xcf, sizeofXsave)
	KVM_SET_DEVICE_ATTR = iow(0xe1, sizeofDeviceAttr)
	KVM_GET_DEVICE_ATTR = iow(0xe2, sizeofDeviceAttr)
	KVM_HAS_DEVICE_ATTR = iow(0xe3, sizeofDeviceAttr)
)

// KVM_API_VERSION is the only API version there has ever been.
const KVM_API_VERSION = 12

// Capabilities for KVM_CHECK_EXTENSION.
const (
	KVM_CAP_IRQCHIP                   = 0
	KVM_CAP_USER_MEMORY               = 3
	KVM_CAP_NR_VCPUS                  = 9
	KVM_CAP_NR_MEMSLOTS               = 10
	KVM_CAP_PIT2                      = 33
	KVM_CAP_SET_IDENTITY_MAP_ADDR     = 37
	KVM_CAP_ADJUST_CLOCK              = 39
	KVM_CAP_VCPU_EVENTS               = 41
	KVM_CAP_DEBUGREGS                 = 50
	KVM_CAP_XSAVE                     = 55
	KVM_CAP_XCRS                      = 56
	KVM_CAP_TSC_CONTROL               = 60
	KVM_CAP_GET_TSC_KHZ               = 61
	KVM_CAP_MAX_VCPUS                 = 66
	KVM_CAP_VCPU_ATTRIBUTES           = 127
	KVM_CAP_IMMEDIATE_EXIT            = 136
	KVM_CAP_EXCEPTION_PAYLOAD         = 164
	KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
	KVM_CAP_XSAVE2                    = 208
)

// Exit reasons in Run.ExitReason.
const (
	KVM_EXIT_UNKNOWN         = 0
	KVM_EXIT_EXCEPTION       = 1
	KVM_EXIT_IO              = 2
	KVM_EXIT_HYPERCALL       = 3
	KVM_EXIT_DEBUG           = 4
	KVM_EXIT_HLT             = 5
	KVM_EXIT_MMIO            = 6
	KVM_EXIT_IRQ_WINDOW_OPEN = 7
	KVM_EXIT_SHUTDOWN        = 8
	KVM_EXIT_FAIL_ENTRY      = 9
	KVM_EXIT_INTR            = 10
	KVM_EXIT_SET_TPR         = 11
	KVM_EXIT_TPR_ACCESS      = 12
	KVM_EXIT_NMI             = 16
	KVM_EXIT_INTERNAL_ERROR  = 17
	KVM_EXIT_SYSTEM_EVENT    = 24
)

// KVM_EXIT_IO directions.
const (
	KVM_EXIT_IO_IN  = 0
	KVM_EXIT_IO_OUT = 1
)

// KVM_EXIT_INTERNAL_ERROR suberrors.
const (
	KVM_INTERNAL_ERROR_EMULATION              = 1
	KVM_INTERNAL_ERROR_SIMUL_EX               = 2
	KVM_INTERNAL_ERROR_DELIVERY_EV            = 3
	KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4
)

// KVM_EXIT_SYSTEM_EVENT types.
const (
	KVM_SYSTEM_EVENT_SHUTDOWN = 1
	KVM_SYSTEM_EVENT_RESET    = 2
	KVM_SYSTEM_EVENT_CRASH    = 3
)

// Memory region flags.
const (
	KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
	KVM_MEM_READONLY        = 1 << 1
)

// MP states.
const (
	KVM_MP_STATE_RUNNABLE      = 0
	KVM_MP_STATE_UNINITIALIZED = 1
	KVM_MP_STATE_INIT_RECEIVED = 2
	KVM_MP_STATE_HALTED        = 3
	KVM_MP_STATE_SIPI_RECEIVED = 4
)

// Irqchip ids for KVM_GET_IRQCHIP.
const (
	KVM_IRQCHIP_PIC_MASTER = 0
	KVM_IRQCHIP_PIC_SLAVE  = 1
	KVM_IRQCHIP_IOAPIC     = 2
)

// KVM_PIT_SPEAKER_DUMMY makes the PIT's speaker port a dummy.
const KVM_PIT_SPEAKER_DUMMY = 1

// kvm_vcpu_events flags.
const (
	KVM_VCPUEVENT_VALID_NMI_PENDING  = 0x00000001
	KVM_VCPUEVENT_VALID_SIPI_VECTOR  = 0x00000002
	KVM_VCPUEVENT_VALID_SHADOW       = 0x00000004
	KVM_VCPUEVENT_VALID_SMM          = 0x00000008
	KVM_VCPUEVENT_VALID_PAYLOAD      = 0x00000010
	KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x00000020
)

// kvm_clock_data flags.
const (
	KVM_CLOCK_TSC_STABLE = 2
	KVM_CLOCK_REALTIME   = 1 << 2
	KVM_CLOCK_HOST_TSC   = 1 << 3
)

// vCPU device attributes.
const (
	KVM_VCPU_TSC_CTRL   = 0
	KVM_VCPU_TSC_OFFSET = 0
)

// Model-specific registers the VMM treats specially.
const (
	MSR_IA32_TSC         = 0x10
	MSR_IA32_APICBASE    = 0x1b
	MSR_IA32_TSC_ADJUST  = 0x3b
	MSR_IA32_TSCDEADLINE = 0x6e0
)

// KVM_NR_INTERRUPTS is the number of interrupt vectors.
const KVM_NR_INTERRUPTS = 256
