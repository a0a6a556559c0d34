// Package kvm is a thin layer over the Linux KVM ioctl interface: the
// /dev/kvm system handle, VMs and vCPUs, and the kernel's structures with
// their kernel names in Go spelling (KVM_GET_SREGS is [VCPU.GetSregs] of a
// [Sregs], which is struct kvm_sregs).
//
// The package holds no policy: it does not decide memory layouts, boot
// state or run loops; package vmm does. Every ioctl and every use of unsafe
// lives in a *_unsafe.go file, and x86-specific structures in *_amd64.go
// files, so the rest can be read without either.
//
// Errors are *Error values naming the ioctl, wrapping the errno, so callers
// test them with errors.Is(err, unix.EINTR) and the like.
package kvm
