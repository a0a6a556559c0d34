package kvm

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/internal/kvmtest"
)

func openOrSkip(t *testing.T) *System {
	t.Helper()
	kvmtest.Require(t)
	s, err := Open()
	if err != nil {
		t.Skipf("KVM test skipped: cannot open /dev/kvm: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCapabilities(t *testing.T) {
	s := openOrSkip(t)
	for _, c := range []struct {
		name string
		cap  int
	}{
		{"IRQCHIP", KVM_CAP_IRQCHIP}, {"PIT2", KVM_CAP_PIT2}, {"IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT},
		{"XSAVE", KVM_CAP_XSAVE}, {"XCRS", KVM_CAP_XCRS}, {"MAX_VCPUS", KVM_CAP_MAX_VCPUS},
		{"NR_VCPUS", KVM_CAP_NR_VCPUS}, {"NR_MEMSLOTS", KVM_CAP_NR_MEMSLOTS}, {"GET_TSC_KHZ", KVM_CAP_GET_TSC_KHZ},
		{"ADJUST_CLOCK", KVM_CAP_ADJUST_CLOCK}, {"VCPU_ATTRIBUTES", KVM_CAP_VCPU_ATTRIBUTES},
		{"MANUAL_DIRTY_LOG_PROTECT2", KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2}, {"XSAVE2", KVM_CAP_XSAVE2},
		{"DEBUGREGS", KVM_CAP_DEBUGREGS}, {"VCPU_EVENTS", KVM_CAP_VCPU_EVENTS}, {"TSC_CONTROL", KVM_CAP_TSC_CONTROL},
	} {
		t.Logf("%-26s %d", c.name, s.CheckExtension(c.cap))
	}
	require.NotZero(t, s.CheckExtension(KVM_CAP_IMMEDIATE_EXIT))
	msrs, err := s.MSRIndexList()
	require.NoError(t, err)
	t.Logf("%d MSRs", len(msrs))
	cpuid, err := s.SupportedCPUID()
	require.NoError(t, err)
	t.Logf("%d CPUID entries", len(cpuid))

	vm, err := s.CreateVM()
	require.NoError(t, err)
	defer vm.Close()
	t.Logf("VM XSAVE2 %d", vm.CheckExtension(KVM_CAP_XSAVE2))
	require.NoError(t, vm.SetTSSAddr(0xfffbd000))
	require.NoError(t, vm.CreateIrqchip())
	require.NoError(t, vm.CreatePIT2(KVM_PIT_SPEAKER_DUMMY))
	c, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	defer c.Close()
	khz, err := c.GetTSCKHz()
	require.NoError(t, err)
	t.Logf("TSC %d kHz", khz)

	// Errors name the ioctl and wrap the errno.
	err = vm.SetUserMemoryRegion(&UserspaceMemoryRegion{Slot: 0, MemorySize: 4096, UserspaceAddr: 1})
	var ke *Error
	require.ErrorAs(t, err, &ke)
	require.Equal(t, "KVM_SET_USER_MEMORY_REGION", ke.Op)
	require.ErrorIs(t, err, unix.EINVAL)
}
