package kvm

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSizes checks the Go types against the kernel's struct sizes, which
// the ioctl numbers encode.
func TestSizes(t *testing.T) {
	for _, c := range []struct {
		v    any
		want int
	}{
		{Regs{}, sizeofRegs},
		{Sregs{}, sizeofSregs},
		{Segment{}, 24},
		{DTable{}, 16},
		{FPU{}, sizeofFPU},
		{Xcrs{}, sizeofXcrs},
		{MsrEntry{}, sizeofMsrEntry},
		{LapicState{}, sizeofLapicState},
		{MPState{}, sizeofMPState},
		{VCPUEvents{}, sizeofVCPUEvents},
		{DebugRegs{}, sizeofDebugRegs},
		{Irqchip{}, sizeofIrqchip},
		{PitChannelState{}, 24},
		{PitState2{}, sizeofPitState2},
		{PitConfig{}, sizeofPitConfig},
		{ClockData{}, sizeofClockData},
		{CPUIDEntry2{}, sizeofCPUIDEntry2},
		{UserspaceMemoryRegion{}, sizeofUserspaceMemRegion},
		{IrqLevel{}, sizeofIrqLevel},
		{DeviceAttr{}, sizeofDeviceAttr},
		{EnableCap{}, sizeofEnableCap},
	} {
		require.Equal(t, c.want, binary.Size(c.v), "%T", c.v)
	}
}

// TestIoctlNumbers spot-checks the request encoding against values from
// linux/kvm.h.
func TestIoctlNumbers(t *testing.T) {
	require.Equal(t, uintptr(0xae80), KVM_RUN)
	require.Equal(t, uintptr(0xc004ae02), KVM_GET_MSR_INDEX_LIST)
	require.Equal(t, uintptr(0x4020ae46), KVM_SET_USER_MEMORY_REGION)
	require.Equal(t, uintptr(0x8138ae83), KVM_GET_SREGS)
	require.Equal(t, uintptr(0xc208ae62), KVM_GET_IRQCHIP)
	require.Equal(t, uintptr(0x8208ae63), KVM_SET_IRQCHIP)
	require.Equal(t, uintptr(0x8070ae9f), KVM_GET_PIT2)
	require.Equal(t, uintptr(0x8040ae9f), KVM_GET_VCPU_EVENTS)
	require.Equal(t, uintptr(0x9000aea4), KVM_GET_XSAVE)
	require.Equal(t, uintptr(0x5000aea5), KVM_SET_XSAVE)
	require.Equal(t, uintptr(0x9000aecf), KVM_GET_XSAVE2)
	require.Equal(t, uintptr(0x8188aea6), KVM_GET_XCRS)
	require.Equal(t, uintptr(0x4018aee1), KVM_SET_DEVICE_ATTR)
	require.Equal(t, uintptr(0x4018aee2), KVM_GET_DEVICE_ATTR)
	require.Equal(t, uintptr(0xc018aec0), KVM_CLEAR_DIRTY_LOG)
	require.Equal(t, uintptr(0x4030ae7b), KVM_SET_CLOCK)
}
