package spec

import "fmt"

// Kind says what sort of component a Component is.
type Kind uint8

// The component kinds. Devices are what the guest sees; backends are what a
// device stores its data in on the host.
const (
	KindSerialPort Kind = iota + 1
	KindVirtioDisk
	KindFileStorageBackend
	KindPVPanic
)

// String returns the kind's name as the contracts spell it.
func (k Kind) String() string {
	switch k {
	case KindSerialPort:
		return "serial_port"
	case KindVirtioDisk:
		return "virtio_disk"
	case KindFileStorageBackend:
		return "file_storage_backend"
	case KindPVPanic:
		return "pvpanic"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// IsBackend reports whether components of kind k are backends.
func (k Kind) IsBackend() bool { return k == KindFileStorageBackend }

// Component is one device or backend of a VM. The set of implementations is
// closed: SerialPort, VirtioDisk, FileStorageBackend and PVPanic.
type Component interface {
	// Kind says which of the component types this is.
	Kind() Kind
	// component seals the interface: only this package's types are
	// components.
	component()
}

// SerialPortNumber is one of the four legacy PC COM ports.
type SerialPortNumber uint8

// The COM ports.
const (
	COM1 SerialPortNumber = iota + 1
	COM2
	COM3
	COM4
)

// String returns "com1" to "com4".
func (n SerialPortNumber) String() string {
	if n >= COM1 && n <= COM4 {
		return fmt.Sprintf("com%d", uint8(n))
	}
	return fmt.Sprintf("SerialPortNumber(%d)", uint8(n))
}

// IOBase returns the port-I/O base address of the COM port.
func (n SerialPortNumber) IOBase() uint16 {
	return [...]uint16{0, 0x3f8, 0x2f8, 0x3e8, 0x2e8}[n]
}

// IRQ returns the ISA interrupt line of the COM port.
func (n SerialPortNumber) IRQ() uint8 {
	return [...]uint8{0, 4, 3, 4, 3}[n]
}

// SerialPort is a 16550 UART on one COM port.
type SerialPort struct {
	Num SerialPortNumber
}

// Kind returns KindSerialPort.
func (SerialPort) Kind() Kind { return KindSerialPort }
func (SerialPort) component() {}

// MaxVirtioSlots is how many virtio-mmio device slots a VM has.
const MaxVirtioSlots = 8

// VirtioDisk is a virtio block device in one virtio-mmio slot, storing its
// data in the backend it names.
type VirtioDisk struct {
	// Backend is the key of the storage backend component.
	Backend Key
	// Slot is the virtio-mmio slot, 0 to MaxVirtioSlots-1; it fixes the
	// device's MMIO address and interrupt line, so placement follows from the
	// spec alone.
	Slot uint8
}

// Kind returns KindVirtioDisk.
func (VirtioDisk) Kind() Kind { return KindVirtioDisk }
func (VirtioDisk) component() {}

// Block sizes a storage backend may have.
const (
	MinBlockSize = 512
	MaxBlockSize = 65536
)

// FileStorageBackend stores a disk's blocks in a host file.
type FileStorageBackend struct {
	// Path names the file relative to the VMM server's storage root (see
	// CheckStoragePath): "disks/boot.img", never "/var/lib/boot.img" or
	// "../boot.img". Each server has its own root, so a migration target
	// finds the file under its own.
	Path string
	// ReadOnly forbids the guest to write.
	ReadOnly bool
	// BlockSize is the logical block size, a power of two from MinBlockSize
	// to MaxBlockSize.
	BlockSize uint32
}

// Kind returns KindFileStorageBackend.
func (FileStorageBackend) Kind() Kind { return KindFileStorageBackend }
func (FileStorageBackend) component() {}

// PVPanicPort is the I/O port of the pvpanic device, as QEMU places it.
const PVPanicPort = 0x505

// PVPanic is the pvpanic ISA device at PVPanicPort: a guest that writes its
// "panicked" bit there tells the VMM that it panicked, and the instance
// fails with the reason guest_panicked. A VM has at most one.
type PVPanic struct{}

// Kind returns KindPVPanic.
func (PVPanic) Kind() Kind { return KindPVPanic }
func (PVPanic) component() {}
