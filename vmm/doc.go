// Package vmm runs virtual machines on Linux KVM (/dev/kvm), built from a
// spec.Spec.
//
// A Machine is one VM: guest RAM mapped outside the Go heap
// (MAP_ANONYMOUS|MAP_PRIVATE|MAP_NORESERVE) and registered with KVM, one vCPU
// per board CPU, each on its own goroutine locked to an OS thread, the
// in-kernel irqchip (PIC, IOAPIC, local APICs) and PIT, and the devices of
// the spec: a 16550 UART per serial port and a virtio-mmio block device per
// disk (package devices). The guest ABI (vmm/guest/ABI.md) fixes what the
// guest sees: the Multiboot entry state, the memory layout, the exit port
// 0xf4, the paravirtual sleep port 0x500, reset through 0x64 and 0xcf9, the
// virtio-mmio slots and the SMBIOS tables.
//
// # Use
//
//	m, err := vmm.New(vmm.Config{
//		Spec:       s,                                   // from spec.Builder
//		Properties: vmm.Properties{ID: id, Name: "web-1"}, // SMBIOS UUID and serial
//		Version:    "waggle 1.4",
//		Serial:     map[spec.SerialPortNumber]io.Writer{spec.COM1: os.Stdout},
//	})
//	if err != nil { ... }          // a *ComponentError names what the host cannot build
//	defer m.Close()
//	m.Start()
//	exit, _ := m.Wait(ctx)          // powered off with a status, stopped, failed, reset
//
// New checks everything the host must provide before any vCPU runs: the
// boot image, the disk files (regular files beneath Config.StorageRoot, see
// OpenStorageFile, holding at least one block),
// the number of vCPUs (at most KVM_CAP_NR_VCPUS), and guest memory (it must
// map and register). A failure is a *ComponentError whose Component names the
// part of the spec ("board.cpus", "board.memory_mb", "boot.image",
// "components.<key>.path").
//
// At run time a guest cannot crash the process: a triple fault
// (KVM_EXIT_SHUTDOWN), an emulation failure (KVM_EXIT_INTERNAL_ERROR), an
// exit the VMM does not handle, a failed VM entry or a panic the guest
// reports on its pvpanic device (port 0x505, when the spec has one) ends
// the machine with Exit{Reason: ExitFailed} and the reason in Exit.Err
// (errors.Is ErrTripleFault, ErrEmulation, ErrUnhandledExit,
// ErrEntryFailed, ErrGuestPanicked). A guest write to a read-only disk gets the device's I/O
// error status.
//
// # Lifecycle
//
// A Machine is in one Phase. Each action is checked against it in one
// table (allowed, in lifecycle.go); an action the phase forbids fails with a
// *NotNowError (errors.Is(err, ErrNotNow)).
//
//	Created  -> Running (Start), Stopped (Stop), Closed (Close)
//	Running  -> Paused (Pause), Running (Reset, guest reset),
//	            Stopped (Stop, guest power-off, guest failure), Closed
//	Paused   -> Running (Resume), Paused (Reset), Stopped (Stop), Closed
//	Stopped  -> Closed
//	Closed   (final)
//
// Pause kicks every vCPU out of KVM_RUN (kvm_run.immediate_exit, then a
// real-time signal sent with tgkill to the vCPU's thread; a paravirtual
// sleep is woken through a channel), lets KVM complete any I/O instruction
// in progress, and quiesces the devices, draining in-flight disk requests.
// There is no EINTR retry loop: an interrupted KVM_RUN returns to the loop,
// which parks when asked to.
//
// A guest reset (0x64 <- 0xfe, 0xcf9 <- 0x06/0x0e) or Reset reboots in
// place: RAM cleared, vCPUs, irqchip, PIT and devices back to their
// power-on state, the image loaded again. With Config.ExitOnReset the
// machine ends with ExitReset instead.
//
// # Migration
//
// The state of a paused machine is ExportState's *State: every vCPU's
// CPUID, registers, special registers, FPU/XSAVE, XCRs, MSRs (those of
// KVM_GET_MSR_INDEX_LIST that read back here, including MSR_IA32_TSC, so
// the guest TSC carries over), local APIC, debug registers, MP state and
// events; the irqchip, the PIT and kvmclock; and each device's
// devices.Payload. State.MarshalBinary frames it (magic, version, named
// (kind, version) payloads, CRC-32C, size cap) and UnmarshalState checks all
// of it. ExportStateVersions writes device payloads in the versions an
// older peer accepts. ImportState writes a State into a machine built from the same
// spec, paused or just created, restoring in the order KVM needs (CPUID,
// special registers, registers, FPU/XSAVE, XCRs, MSRs, LAPIC, debug
// registers, MP state, events last).
//
// RAM moves separately, by guest-physical address: Regions lists it,
// ReadGuest and WriteGuest copy pages, ViewGuest and FillGuest move them
// between guest memory and a socket with no copy in between (RAM is mapped
// by MapRAM, on transparent huge pages where the host allows), EnableDirtyLog turns on KVM's dirty
// log, and CollectDirty returns the pages written since the last call —
// KVM's log merged with the VMM's own, which records the VMM's writes (boot
// data, SMBIOS, device DMA, WriteGuest) that KVM does not see. TouchedPages
// says which pages were ever touched (/proc/self/pagemap), so a first pass
// can skip the rest. A target is built with Config.Incoming: no image is
// loaded and its RAM stays all zero, so only pages the source holds need
// writing. A migration copies the touched RAM, then dirty pages in rounds
// while the source runs, pauses it, copies the last dirty pages and the
// State, and starts the target.
//
// The kvm subpackage holds the raw ioctls and kernel structures.
package vmm
