package vmm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/wagglevm/waggle/vmm/kvm"
)

// Shell is the part of a Machine that no spec decides: /dev/kvm opened and
// checked, the host's CPUID table read, and a KVM VM with its TSS,
// identity map, in-kernel irqchip and PIT. Creating the VM was the dearest
// ioctl of New where its start was broken down (`make bench-start`), so a
// server that knows a VM is coming makes a shell ahead (NewShell) and hands
// it to New in Config.Shell. A shell serves one New.
//
// A shell also holds address space for the guest's RAM, its first huge
// page already faulted in: in a fresh process that first touch was the
// dearest part of loading the boot image.
type Shell struct {
	mu sync.Mutex
	// sys, vm and cpuid are nil once New took them, or Close closed them.
	sys   *kvm.System
	vm    *kvm.VM
	cpuid []kvm.CPUIDEntry2
	// ram is the RAM reserve (reserveRAM), nil once claimed or closed, or
	// when the host refused it.
	ram []byte
}

// ErrShellTaken is New's error for a Config.Shell that an earlier New took
// or that was closed.
var ErrShellTaken = errors.New("vmm: shell already taken or closed")

// requiredCaps are the KVM capabilities a Machine cannot work without.
var requiredCaps = []struct {
	name string
	cap  int
}{
	{"KVM_CAP_IRQCHIP", kvm.KVM_CAP_IRQCHIP},
	{"KVM_CAP_PIT2", kvm.KVM_CAP_PIT2},
	{"KVM_CAP_IMMEDIATE_EXIT", kvm.KVM_CAP_IMMEDIATE_EXIT},
	{"KVM_CAP_USER_MEMORY", kvm.KVM_CAP_USER_MEMORY},
}

// NewShell opens /dev/kvm, checks that it has what a Machine needs,
// creates a VM with its TSS, identity map, irqchip and PIT, and reserves
// RAM. Close it unless it goes to New.
func NewShell() (*Shell, error) {
	s, err := newShell()
	if err != nil {
		return nil, err
	}
	s.ram = reserveRAM()
	return s, nil
}

// newShell is NewShell without the RAM reserve: New's own shell, whose
// RAM would be touched at once anyway.
func newShell() (*Shell, error) {
	sys, err := kvm.Open()
	if err != nil {
		return nil, err
	}
	s := &Shell{sys: sys}
	if err := s.build(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Shell) build() error {
	for _, c := range requiredCaps {
		if s.sys.CheckExtension(c.cap) == 0 {
			return fmt.Errorf("host KVM lacks %s", c.name)
		}
	}
	var err error
	if s.cpuid, err = s.sys.SupportedCPUID(); err != nil {
		return err
	}
	if s.vm, err = s.sys.CreateVM(); err != nil {
		return err
	}
	if err := s.vm.SetTSSAddr(tssAddr); err != nil {
		return err
	}
	if s.vm.CheckExtension(kvm.KVM_CAP_SET_IDENTITY_MAP_ADDR) != 0 {
		if err := s.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
			return err
		}
	}
	if err := s.vm.CreateIrqchip(); err != nil {
		return err
	}
	return s.vm.CreatePIT2(kvm.KVM_PIT_SPEAKER_DUMMY)
}

// take hands the shell's KVM parts to a Machine, which closes them; only
// the RAM reserve stays, for claimRAM. The VM's clock has run since the
// shell was made: it starts again at zero, as a new VM's does.
func (s *Shell) take() (*kvm.System, *kvm.VM, []kvm.CPUIDEntry2, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vm == nil {
		return nil, nil, nil, ErrShellTaken
	}
	if err := s.vm.SetClock(&kvm.ClockData{}); err != nil {
		return nil, nil, nil, err
	}
	sys, vm, cpuid := s.sys, s.vm, s.cpuid
	s.sys, s.vm, s.cpuid = nil, nil, nil
	return sys, vm, cpuid, nil
}

// claimRAM returns the first size bytes of the RAM reserve and unmaps the
// rest; nil when the shell has no reserve or one too small, or size is
// not a positive number of pages: Close then unmaps the reserve.
func (s *Shell) claimRAM(size uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ram == nil || size == 0 || size > uint64(len(s.ram)) || size%PageSize != 0 {
		return nil
	}
	ram := s.ram[:size:size]
	unmap(s.ram[size:])
	s.ram = nil
	return ram
}

// Close releases a shell no New took, or what New left of it (a RAM
// reserve too small for its guest). It does nothing to the parts New took
// (the Machine owns them then), to a shell closed already, or to nil.
func (s *Shell) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.vm != nil {
		errs = append(errs, s.vm.Close())
	}
	if s.sys != nil {
		errs = append(errs, s.sys.Close())
	}
	if s.ram != nil {
		errs = append(errs, unmap(s.ram))
	}
	s.sys, s.vm, s.cpuid, s.ram = nil, nil, nil, nil
	return errors.Join(errs...)
}
