package corpus

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/devices"
)

// nopIRQ is an interrupt line that goes nowhere.
type nopIRQ struct{}

func (nopIRQ) SetLevel(bool) error { return nil }

// noMemory is guest memory with no RAM: saving and restoring a device's
// state never touches guest memory.
type noMemory struct{}

func (noMemory) ReadAt([]byte, uint64) error  { return fmt.Errorf("corpus: no guest memory") }
func (noMemory) WriteAt([]byte, uint64) error { return fmt.Errorf("corpus: no guest memory") }

// uartSteps drive a UART into the states the corpus records, through its
// registers as a guest would, and through host input.
var uartSteps = []struct {
	name string
	do   func(u *devices.UART)
}{
	{"reset", func(u *devices.UART) {}},
	{"configured-rx", func(u *devices.UART) {
		b := u.Base()
		out := func(off uint16, v byte) { u.PortWrite(b+off, []byte{v}) }
		out(3, 0x80) // DLAB
		out(0, 0x01) // 115200 baud
		out(1, 0x00)
		out(3, 0x1b) // 8 bits, even parity, DLAB off
		out(1, 0x0f) // every interrupt
		out(2, devices.UARTFcrFE|devices.UARTFcrRFR|devices.UARTFcrXFR|0x80)
		out(4, devices.UARTMcrDTR|devices.UARTMcrRTS|devices.UARTMcrOUT2)
		out(7, 0x5a)
		u.Receive([]byte("hi!"))
	}},
	{"fifo-full", func(u *devices.UART) {
		u.PortWrite(u.Base()+2, []byte{devices.UARTFcrFE | 0xc0})
		u.Receive([]byte("0123456789abcdefOVERRUN"))
	}},
	{"fifo-off-one-byte", func(u *devices.UART) { u.Receive([]byte("xy")) }},
	{"loopback", func(u *devices.UART) {
		u.PortWrite(u.Base()+4, []byte{devices.UARTMcrLOOP | devices.UARTMcrOUT2 | devices.UARTMcrRTS})
		u.PortWrite(u.Base()+2, []byte{devices.UARTFcrFE})
		u.PortWrite(u.Base(), []byte{'L'})
	}},
	{"carrier-lost", func(u *devices.UART) {
		u.PortWrite(u.Base()+1, []byte{0x08}) // modem status interrupt
		u.SetModemLines(0x10 | 0x20)          // CTS and DSR stay, DCD drops
	}},
}

// addDevices records UART payloads at every version the UART writes, and
// virtio-blk payloads of a fresh and a running device with each block
// size. tmp is a directory for the disks' files.
func addDevices(set fileSet, tmp string) error {
	versions := devices.ImportableVersions()
	for _, st := range uartSteps {
		for _, v := range versions[devices.UARTStateKind] {
			u, err := devices.NewUART(spec.COM1, nopIRQ{}, nil)
			if err != nil {
				return err
			}
			st.do(u)
			p, err := u.Save(v)
			if err != nil {
				return err
			}
			f := DeviceFile{Kind: p.Kind, Version: p.Version, Data: p.Data, Device: DeviceConfig{Port: "com1"}}
			if err := set.addJSON(KindDevice, fmt.Sprintf("uart-v%d-%s", v, st.name), f); err != nil {
				return err
			}
		}
	}
	disks := []struct {
		name string
		cfg  DeviceConfig
	}{
		{"blk-512-rw-slot0", DeviceConfig{Slot: ptr(uint8(0)), DiskBytes: 1 << 20, BlockSize: 512}},
		{"blk-4096-ro-slot7", DeviceConfig{Slot: ptr(uint8(7)), DiskBytes: 8 << 20, BlockSize: 4096, ReadOnly: true}},
	}
	for _, d := range disks {
		for _, running := range []bool{false, true} {
			mmio, err := NewVirtioBlkForState(d.cfg, tmp)
			if err != nil {
				return err
			}
			state := "reset"
			if running {
				state = "driver-ok"
				driveVirtioBlk(mmio, d.cfg.ReadOnly)
			}
			for _, v := range versions[devices.VirtioBlkStateKind] {
				p, err := mmio.Save(v)
				if err != nil {
					return err
				}
				f := DeviceFile{Kind: p.Kind, Version: p.Version, Data: p.Data, Device: d.cfg}
				if err := set.addJSON(KindDevice, fmt.Sprintf("%s-v%d-%s", d.name, v, state), f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// NewVirtioBlkForState builds the virtio-blk device a DeviceConfig
// describes, on a sparse file of its size in dir, with no guest memory:
// enough to save and restore its state.
func NewVirtioBlkForState(c DeviceConfig, dir string) (*devices.VirtioMMIO, error) {
	if c.Slot == nil || c.DiskBytes <= 0 {
		return nil, fmt.Errorf("virtio-blk device config needs slot and disk_bytes")
	}
	f, err := os.CreateTemp(dir, "disk-*.img")
	if err != nil {
		return nil, err
	}
	name := f.Name()
	if err := f.Truncate(c.DiskBytes); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	cfg := devices.VirtioBlkConfig{Path: name, ReadOnly: c.ReadOnly, BlockSize: c.BlockSize, Serial: filepath.Base(name)}
	mmio, blk, err := devices.NewVirtioBlkMMIO(cfg, *c.Slot, noMemory{}, nopIRQ{})
	if err != nil {
		return nil, err
	}
	// The state holds nothing of the file but its size; close it now.
	blk.Close()
	return mmio, nil
}

// driveVirtioBlk brings a device to DRIVER_OK with its queue ready, as a
// driver does, writing its registers.
func driveVirtioBlk(m *devices.VirtioMMIO, readOnly bool) {
	w := func(off uint64, v uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		m.MMIOWrite(m.Base()+off, b[:])
	}
	const (
		ack, drv, fok, dok = devices.VIRTIO_CONFIG_S_ACKNOWLEDGE, devices.VIRTIO_CONFIG_S_DRIVER,
			devices.VIRTIO_CONFIG_S_FEATURES_OK, devices.VIRTIO_CONFIG_S_DRIVER_OK
	)
	w(devices.VirtioMMIOStatus, ack)
	w(devices.VirtioMMIOStatus, ack|drv)
	low := uint32(1<<devices.VIRTIO_BLK_F_FLUSH | 1<<devices.VIRTIO_BLK_F_SEG_MAX)
	if readOnly {
		low |= 1 << devices.VIRTIO_BLK_F_RO
	}
	w(devices.VirtioMMIODriverFeaturesSel, 0)
	w(devices.VirtioMMIODriverFeatures, low)
	w(devices.VirtioMMIODriverFeaturesSel, 1)
	w(devices.VirtioMMIODriverFeatures, 1<<(devices.VIRTIO_F_VERSION_1-32))
	w(devices.VirtioMMIOStatus, ack|drv|fok)
	w(devices.VirtioMMIOQueueSel, 0)
	w(devices.VirtioMMIOQueueNum, 128)
	w(devices.VirtioMMIOQueueDescLow, 0x10_0000)
	w(devices.VirtioMMIOQueueDriverLow, 0x10_1000)
	w(devices.VirtioMMIOQueueDeviceLow, 0x10_2000)
	w(devices.VirtioMMIOQueueDescHigh, 0)
	w(devices.VirtioMMIOQueueReady, 1)
	w(devices.VirtioMMIOStatus, ack|drv|fok|dok)
}
