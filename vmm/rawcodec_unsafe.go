package vmm

import (
	"fmt"
	"reflect"
	"unsafe"
)

// The machine state's kernel structures are encoded as their little-endian
// bytes in the kernel's layout. On amd64 (the only arch this package builds
// for) that is exactly their memory, since package kvm mirrors the kernel's
// layouts with explicit padding; rawcodec_test.go checks that this equals
// encoding/binary's output for every type, so the format is what
// encoding/binary would write, without its per-field reflection (which
// costs hundreds of microseconds of migration downtime on a cold process).

// rawBytes returns the memory of the value v points to, or of the slice v.
func rawBytes(v any) []byte {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		e := rv.Elem()
		return unsafe.Slice((*byte)(rv.UnsafePointer()), e.Type().Size())
	case reflect.Slice:
		if rv.Len() == 0 {
			return nil
		}
		return unsafe.Slice((*byte)(rv.UnsafePointer()), uintptr(rv.Len())*rv.Type().Elem().Size())
	}
	panic(fmt.Sprintf("vmm: rawBytes of %T", v)) // a programming error
}

// rawAppend appends v's bytes to b.
func rawAppend(b []byte, v any) []byte { return append(b, rawBytes(v)...) }

// rawSize returns the encoded size of v.
func rawSize(v any) int { return len(rawBytes(v)) }

// rawDecode fills v from data, which must have v's size.
func rawDecode(data []byte, v any) error {
	dst := rawBytes(v)
	if len(data) != len(dst) {
		return fmt.Errorf("%d bytes for a %d-byte %T", len(data), len(dst), v)
	}
	copy(dst, data)
	return nil
}
