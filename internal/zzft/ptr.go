package zzft
import "unsafe"
func unsafePtr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
