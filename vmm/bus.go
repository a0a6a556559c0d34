package vmm

import (
	"sync/atomic"

	"github.com/wagglevm/waggle/vmm/devices"
)

// portRange is a device on ports [base, base+n).
type portRange struct {
	base, n uint16
	dev     devices.PortIO
}

// portBus routes port I/O to devices. It is built before the vCPUs start
// and never changes afterwards, so it needs no lock.
type portBus struct {
	ranges []portRange
	// unknownReads and unknownWrites count accesses to ports no device
	// claims (reads see 0xff bytes, writes are dropped).
	unknownReads, unknownWrites atomic.Uint64
}

func (b *portBus) add(base, n uint16, dev devices.PortIO) {
	b.ranges = append(b.ranges, portRange{base, n, dev})
}

func (b *portBus) find(port uint16) devices.PortIO {
	for _, r := range b.ranges {
		if port-r.base < r.n {
			return r.dev
		}
	}
	return nil
}

func (b *portBus) read(port uint16, data []byte) {
	if d := b.find(port); d != nil {
		d.PortRead(port, data)
		return
	}
	b.unknownReads.Add(1)
	for i := range data {
		data[i] = 0xff
	}
}

func (b *portBus) write(port uint16, data []byte) {
	if d := b.find(port); d != nil {
		d.PortWrite(port, data)
		return
	}
	b.unknownWrites.Add(1)
}

// The virtio-mmio window (vmm/guest/ABI.md): slot n at virtioMMIOBase +
// n*virtioMMIOSize, on GSI virtioGSIBase+n.
const (
	virtioMMIOBase = 0xD0000000
	virtioMMIOSize = 0x1000
	virtioGSIBase  = 16
	virtioSlots    = 8
)

// mmioBus routes MMIO to the virtio-mmio slots. Like portBus it is fixed
// once the vCPUs start.
type mmioBus struct {
	slots [virtioSlots]devices.MMIO
	// unknownReads and unknownWrites count accesses nothing claims (reads
	// see all-ones, writes are dropped).
	unknownReads, unknownWrites atomic.Uint64
}

func (b *mmioBus) find(addr uint64, n int) devices.MMIO {
	if addr < virtioMMIOBase {
		return nil
	}
	slot := (addr - virtioMMIOBase) / virtioMMIOSize
	if slot >= virtioSlots || (addr+uint64(n)-1-virtioMMIOBase)/virtioMMIOSize != slot {
		return nil
	}
	return b.slots[slot]
}

func (b *mmioBus) read(addr uint64, data []byte) {
	if d := b.find(addr, len(data)); d != nil {
		d.MMIORead(addr, data)
		return
	}
	b.unknownReads.Add(1)
	for i := range data {
		data[i] = 0xff
	}
}

func (b *mmioBus) write(addr uint64, data []byte) {
	if d := b.find(addr, len(data)); d != nil {
		d.MMIOWrite(addr, data)
		return
	}
	b.unknownWrites.Add(1)
}
