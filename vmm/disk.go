package vmm

import (
	"fmt"
	"os"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/devices"
)

// diskBackend is a checked storage backend file, open.
type diskBackend struct {
	key     spec.Key
	backend spec.FileStorageBackend
	file    *os.File
	size    int64
}

// openDisks opens the file of every storage backend a disk uses, beneath
// the storage root, and checks that it holds at least one block. Each file
// is opened once and handed to its device, so what was checked is what the
// guest gets. The files are closed by release.
func (m *Machine) openDisks() (map[spec.Key]*diskBackend, error) {
	disks := map[spec.Key]*diskBackend{}
	for _, e := range m.cfg.Spec.Components() {
		d, ok := e.Component.(spec.VirtioDisk)
		if !ok {
			continue
		}
		c, _ := m.cfg.Spec.Component(d.Backend)
		b, ok := c.(spec.FileStorageBackend)
		if !ok {
			return nil, &ComponentError{spec.ComponentPath(e.Key, "backend"), fmt.Errorf("backend %q is a %T, not a file backend", d.Backend, c)}
		}
		path := spec.ComponentPath(d.Backend, "path")
		f, err := OpenStorageFile(m.cfg.StorageRoot, b.Path, b.ReadOnly)
		if err != nil {
			return nil, &ComponentError{path, err}
		}
		m.closers = append(m.closers, f)
		st, err := f.Stat()
		if err != nil {
			return nil, &ComponentError{path, err}
		}
		if st.Size() < int64(b.BlockSize) {
			return nil, &ComponentError{path, fmt.Errorf("%w: %q has %d bytes, less than one %d-byte block",
				ErrDiskTooSmall, b.Path, st.Size(), b.BlockSize)}
		}
		disks[d.Backend] = &diskBackend{key: d.Backend, backend: b, file: f, size: st.Size()}
	}
	return disks, nil
}

// buildDisk creates the virtio-mmio block device of disk k in its slot.
func (m *Machine) buildDisk(k spec.Key, d spec.VirtioDisk, b *diskBackend) error {
	cfg := devices.VirtioBlkConfigFromSpec(k, b.backend, b.file)
	gsi := uint32(virtioGSIBase) + uint32(d.Slot)
	// The device's file is among m.closers since openDisks; the device is
	// not closed on its own.
	mmio, _, err := devices.NewVirtioBlkMMIO(cfg, d.Slot, m.mem, irqLine{m.vm, gsi})
	if err != nil {
		return &ComponentError{spec.ComponentPath(b.key, "path"), err}
	}
	m.mmio.slots[d.Slot] = mmio
	m.devs = append(m.devs, &device{key: k, kind: devices.VirtioBlkStateKind, dev: mmio})
	return nil
}
