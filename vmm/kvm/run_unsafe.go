package kvm

import (
	"sync/atomic"
	"unsafe"
)

// Run is the head of struct kvm_run, the area the kernel shares with the
// VMM for each vCPU. Only the fields package vmm needs are named; the exit
// union starts at offset 32 and is read through the accessors below.
type Run struct {
	// word0 holds request_interrupt_window (byte 0) and immediate_exit
	// (byte 1); bytes 2..3 are padding. It is accessed atomically as one
	// word because another thread sets immediate_exit to kick the vCPU.
	word0      uint32
	padding1   uint32
	ExitReason uint32
	// ReadyForInterruptInjection, IfFlag, Flags, CR8, APICBase follow.
	ReadyForInterruptInjection uint8
	IfFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	exit                       [256]byte
}

const immediateExitBit = 1 << 8

// SetImmediateExit sets or clears kvm_run.immediate_exit: while it is set,
// KVM_RUN completes any pending I/O and returns EINTR without running the
// guest.
func (r *Run) SetImmediateExit(on bool) {
	if on {
		atomic.StoreUint32(&r.word0, immediateExitBit)
	} else {
		atomic.StoreUint32(&r.word0, 0)
	}
}

// ImmediateExit reports whether immediate_exit is set.
func (r *Run) ImmediateExit() bool { return atomic.LoadUint32(&r.word0)&immediateExitBit != 0 }

// RunIO is the io member of the kvm_run exit union (KVM_EXIT_IO).
type RunIO struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

// IO returns the KVM_EXIT_IO details and the data bytes (Size*Count of
// them) inside the run area, which an IN fills.
func (r *Run) IO() (*RunIO, []byte) {
	io := (*RunIO)(unsafe.Pointer(&r.exit[0]))
	n := int(io.Size) * int(io.Count)
	if io.DataOffset < uint64(unsafe.Sizeof(*r)) || n == 0 || n > 4096 {
		return io, nil
	}
	base := unsafe.Add(unsafe.Pointer(r), uintptr(io.DataOffset))
	return io, unsafe.Slice((*byte)(base), n)
}

// RunMMIO is the mmio member of the kvm_run exit union (KVM_EXIT_MMIO).
type RunMMIO struct {
	PhysAddr uint64
	Data     [8]uint8
	Len      uint32
	IsWrite  uint8
}

// MMIO returns the KVM_EXIT_MMIO details; a read fills Data[:Len].
func (r *Run) MMIO() *RunMMIO { return (*RunMMIO)(unsafe.Pointer(&r.exit[0])) }

// RunInternal is the internal member of the exit union
// (KVM_EXIT_INTERNAL_ERROR).
type RunInternal struct {
	Suberror uint32
	NData    uint32
	Data     [16]uint64
}

// Internal returns the KVM_EXIT_INTERNAL_ERROR details.
func (r *Run) Internal() *RunInternal { return (*RunInternal)(unsafe.Pointer(&r.exit[0])) }

// RunFailEntry is the fail_entry member of the exit union
// (KVM_EXIT_FAIL_ENTRY).
type RunFailEntry struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
}

// FailEntry returns the KVM_EXIT_FAIL_ENTRY details.
func (r *Run) FailEntry() *RunFailEntry { return (*RunFailEntry)(unsafe.Pointer(&r.exit[0])) }

// RunSystemEvent is the system_event member of the exit union
// (KVM_EXIT_SYSTEM_EVENT).
type RunSystemEvent struct {
	Type  uint32
	NData uint32
	Data  [16]uint64
}

// SystemEvent returns the KVM_EXIT_SYSTEM_EVENT details.
func (r *Run) SystemEvent() *RunSystemEvent {
	return (*RunSystemEvent)(unsafe.Pointer(&r.exit[0]))
}
