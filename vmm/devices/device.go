// Package devices holds the emulated devices of a waggle VM: the 16550
// UART, the pvpanic device, the SMBIOS tables and the virtio-mmio block
// device. (The power, reset and paravirtual-sleep ports act on the whole
// machine and live in package vmm.) Devices know guest memory and
// interrupt lines only through the small
// interfaces below, so each can be tested without KVM.
//
// What is here, and how the VMM wires it:
//
//   - UART (uart.go): NewUART(spec.COM1, irq, sink) is a PortIO device on
//     UARTPorts ports from the COM port's base. The sink gets each byte the
//     guest transmits and must not block; OutputBuffer (output.go) makes any
//     io.Writer such a sink. Host input goes in with Receive, which never
//     blocks and says how much fitted; RxSpace says when to try again.
//     SetModemLines sets the modem input lines (CTS, DSR, RI, DCD) the
//     host presents (nothing in the VMM calls it yet). Its state
//     (uart_state.go) has versions 1 and 2.
//   - pvpanic (pvpanic.go): NewPVPanic(onPanic, log) is a PortIO device on
//     PVPanicPorts port at spec.PVPanicPort; a guest write of the
//     panicked bit calls onPanic. It has no state to migrate.
//   - SMBIOS (smbios.go): BuildSMBIOS(info, SMBIOSRegionStart) returns the
//     32-bit 2.8 entry point and the structure table with their addresses;
//     WriteTo puts them into guest memory.
//   - virtio-blk (virtio_mmio.go, virtqueue.go, virtio_blk.go):
//     NewVirtioBlkMMIO(cfg, slot, mem, irq) opens the backing file and
//     returns the virtio-mmio transport (an MMIO device at
//     VirtioMMIOSlotAddr(slot), interrupt VirtioMMIOSlotGSI(slot)). Requests
//     are served synchronously on the notifying vCPU thread.
//
// Saved state: each device has a state type of its own, apart from the live
// device, encoded in a versioned little-endian format documented beside it
// and carried in a Payload. A device reads its newest state version and
// the one before it, and Save writes either, so that a source can write
// what an older target reads (ImportableVersions). Restore decodes and checks the whole payload
// before it touches the device, so a bad payload (unknown kind or version,
// truncated, oversized, bytes left over, impossible values, another disk)
// is a *StateError and leaves the device as it was. The fuzz seed corpora in
// testdata/ are real Save outputs.
//
// Concurrency: every device guards its state with one mutex and may be
// called from several vCPU threads and host goroutines at once. Devices
// call IRQLine.SetLevel only when the level changes, with their lock held.
package devices

// PortIO is a device on the x86 I/O port bus. data is 1, 2 or 4 bytes,
// little-endian; a read fills it.
type PortIO interface {
	PortRead(port uint16, data []byte)
	PortWrite(port uint16, data []byte)
}

// MMIO is a device in the guest-physical MMIO space. addr is the absolute
// guest-physical address; data is 1, 2, 4 or 8 bytes, little-endian.
type MMIO interface {
	MMIORead(addr uint64, data []byte)
	MMIOWrite(addr uint64, data []byte)
}

// IRQLine is one interrupt input of the in-kernel irqchip (a GSI).
type IRQLine interface {
	// SetLevel drives the line high (true) or low (false).
	SetLevel(high bool) error
}

// GuestMemory is guest RAM as devices see it. Writes through it are recorded
// in the VMM's own dirty log, because KVM's dirty log misses writes the VMM
// makes itself.
type GuestMemory interface {
	// ReadAt copies guest-physical memory at gpa into p; an error means the
	// range is not RAM.
	ReadAt(p []byte, gpa uint64) error
	// WriteAt copies p into guest-physical memory at gpa and marks the pages
	// dirty; an error means the range is not RAM.
	WriteAt(p []byte, gpa uint64) error
}

// Payload is one device's saved state, tagged with the kind of device and the
// version of the state's encoding. An importer accepts its own version and
// the one before it; an exporter writes the newest version the peer accepts.
type Payload struct {
	Kind    string
	Version uint32
	Data    []byte
}

// Stateful is a device whose state moves with the VM in a migration. Save
// and Restore are called only while the VM's vCPUs are paused.
type Stateful interface {
	// Save encodes the device's state, in format version (0 means newest).
	Save(version uint32) (Payload, error)
	// Restore replaces the device's state with p. A payload of an unknown
	// kind or version, or one that does not decode, is an error and leaves the
	// device as it was.
	Restore(p Payload) error
}

// Quiescer is a device with work in flight (such as virtio requests) that
// must finish before the VM's state is read. Quiesce returns once no request
// is in flight; Resume lets new requests start.
type Quiescer interface {
	Quiesce()
	Resume()
}
