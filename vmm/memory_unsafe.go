package vmm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hostAddr returns the host virtual address of b's first byte. b must be
// memory outside the Go heap (an mmap), which never moves.
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// mapAnonymous maps size bytes of anonymous, private memory, reserved on
// first touch (MAP_NORESERVE). Unlike unix.Mmap it keeps no record of the
// mapping, so that any page-aligned part of it can be unmapped (unmap)
// while the rest stays.
func mapAnonymous(size uint64) ([]byte, error) {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_ANONYMOUS|unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), size), nil
}

// unmap unmaps b: all or a page-aligned part of a mapping from
// mapAnonymous. An empty b is no error.
func unmap(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}
