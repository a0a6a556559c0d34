package vmm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/devices"
)

// diskBackend is a checked storage backend file.
type diskBackend struct {
	key     spec.Key
	backend spec.FileStorageBackend
	size    int64
}

// openDisks opens the file of every storage backend a disk uses and checks
// that it holds at least one block.
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
		flag := os.O_RDWR
		if b.ReadOnly {
			flag = os.O_RDONLY
		}
		path := spec.ComponentPath(d.Backend, "path")
		f, err := openFile(b.Path, flag, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &ComponentError{path, fmt.Errorf("%w: %s", ErrDiskMissing, b.Path)}
		}
		if err != nil {
			return nil, &ComponentError{path, err}
		}
		st, err := f.Stat()
		f.Close() // the device opens its own
		if err != nil {
			return nil, &ComponentError{path, err}
		}
		if !st.Mode().IsRegular() {
			return nil, &ComponentError{path, fmt.Errorf("%s is not a regular file", b.Path)}
		}
		if st.Size() < int64(b.BlockSize) {
			return nil, &ComponentError{path, fmt.Errorf("%w: %s has %d bytes, less than one %d-byte block",
				ErrDiskTooSmall, b.Path, st.Size(), b.BlockSize)}
		}
		disks[d.Backend] = &diskBackend{key: d.Backend, backend: b, size: st.Size()}
	}
	return disks, nil
}

// buildDisk creates the virtio-mmio block device of disk k in its slot.
func (m *Machine) buildDisk(k spec.Key, d spec.VirtioDisk, b *diskBackend) error {
	cfg := devices.VirtioBlkConfig{
		Path:      b.backend.Path,
		ReadOnly:  b.backend.ReadOnly,
		BlockSize: b.backend.BlockSize,
		Serial:    k.String(),
	}
	gsi := uint32(virtioGSIBase) + uint32(d.Slot)
	mmio, blk, err := devices.NewVirtioBlkMMIO(cfg, d.Slot, m.mem, irqLine{m.vm, gsi})
	if err != nil {
		return &ComponentError{spec.ComponentPath(b.key, "path"), err}
	}
	m.closers = append(m.closers, blk)
	m.mmio.slots[d.Slot] = mmio
	m.devs = append(m.devs, &device{key: k, kind: devices.VirtioBlkStateKind, dev: mmio})
	return nil
}
