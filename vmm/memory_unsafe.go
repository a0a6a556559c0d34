package vmm

import "unsafe"

// hostAddr returns the host virtual address of b's first byte. b must be
// memory outside the Go heap (an mmap), which never moves.
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
