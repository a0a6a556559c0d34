package kvm

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// System is an open /dev/kvm.
type System struct {
	fd int
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, wrap("open /dev/kvm", err)
	}
	s := &System{fd: fd}
	v, err := ioctl(fd, KVM_GET_API_VERSION, 0)
	if err != nil {
		s.Close()
		return nil, wrap("KVM_GET_API_VERSION", err)
	}
	if v != KVM_API_VERSION {
		s.Close()
		return nil, wrap("KVM_GET_API_VERSION", fmt.Errorf("version %d, want %d", v, KVM_API_VERSION))
	}
	return s, nil
}

// Close closes the descriptor.
func (s *System) Close() error { return unix.Close(s.fd) }

// CheckExtension is KVM_CHECK_EXTENSION on the system descriptor: 0 means
// the capability is missing, other values are capability-specific.
func (s *System) CheckExtension(capability int) int {
	r, err := ioctl(s.fd, KVM_CHECK_EXTENSION, uintptr(capability))
	if err != nil {
		return 0
	}
	return int(r)
}

// VCPUMmapSize is KVM_GET_VCPU_MMAP_SIZE.
func (s *System) VCPUMmapSize() (int, error) {
	r, err := ioctl(s.fd, KVM_GET_VCPU_MMAP_SIZE, 0)
	return int(r), wrap("KVM_GET_VCPU_MMAP_SIZE", err)
}

// SupportedCPUID is KVM_GET_SUPPORTED_CPUID.
func (s *System) SupportedCPUID() ([]CPUIDEntry2, error) {
	for n := 64; n <= 4096; n *= 2 {
		buf := make([]byte, sizeofCPUID2+n*sizeofCPUIDEntry2)
		*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(n)
		_, err := ioctlPtr(s.fd, KVM_GET_SUPPORTED_CPUID, unsafe.Pointer(&buf[0]))
		if err == unix.E2BIG {
			continue
		}
		if err != nil {
			return nil, wrap("KVM_GET_SUPPORTED_CPUID", err)
		}
		nent := *(*uint32)(unsafe.Pointer(&buf[0]))
		out := make([]CPUIDEntry2, nent)
		copy(out, unsafe.Slice((*CPUIDEntry2)(unsafe.Pointer(&buf[sizeofCPUID2])), nent))
		return out, nil
	}
	return nil, wrap("KVM_GET_SUPPORTED_CPUID", unix.E2BIG)
}

// MSRIndexList is KVM_GET_MSR_INDEX_LIST: the MSRs a VMM should save and
// restore.
func (s *System) MSRIndexList() ([]uint32, error) {
	for n := 256; n <= 8192; n *= 2 {
		buf := make([]uint32, 1+n)
		buf[0] = uint32(n)
		_, err := ioctlPtr(s.fd, KVM_GET_MSR_INDEX_LIST, unsafe.Pointer(&buf[0]))
		if err == unix.E2BIG {
			continue
		}
		if err != nil {
			return nil, wrap("KVM_GET_MSR_INDEX_LIST", err)
		}
		return append([]uint32(nil), buf[1:1+buf[0]]...), nil
	}
	return nil, wrap("KVM_GET_MSR_INDEX_LIST", unix.E2BIG)
}

// CreateVM is KVM_CREATE_VM with the default machine type.
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctl(s.fd, KVM_CREATE_VM, 0)
	if err != nil {
		return nil, wrap("KVM_CREATE_VM", err)
	}
	unix.CloseOnExec(int(fd))
	return &VM{fd: int(fd), sys: s}, nil
}

// VM is a KVM virtual machine descriptor.
type VM struct {
	fd  int
	sys *System
}

// Close closes the VM descriptor; the VM ends when its vCPUs are closed too.
func (vm *VM) Close() error { return unix.Close(vm.fd) }

// CheckExtension is KVM_CHECK_EXTENSION on the VM descriptor.
func (vm *VM) CheckExtension(capability int) int {
	r, err := ioctl(vm.fd, KVM_CHECK_EXTENSION, uintptr(capability))
	if err != nil {
		return 0
	}
	return int(r)
}

// SetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION.
func (vm *VM) SetUserMemoryRegion(r *UserspaceMemoryRegion) error {
	_, err := ioctlPtr(vm.fd, KVM_SET_USER_MEMORY_REGION, unsafe.Pointer(r))
	return wrap("KVM_SET_USER_MEMORY_REGION", err)
}

// SetTSSAddr is KVM_SET_TSS_ADDR: three pages of guest-physical space the
// kernel may use on Intel hosts.
func (vm *VM) SetTSSAddr(addr uint64) error {
	_, err := ioctl(vm.fd, KVM_SET_TSS_ADDR, uintptr(addr))
	return wrap("KVM_SET_TSS_ADDR", err)
}

// SetIdentityMapAddr is KVM_SET_IDENTITY_MAP_ADDR.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctlPtr(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, unsafe.Pointer(&addr))
	return wrap("KVM_SET_IDENTITY_MAP_ADDR", err)
}

// CreateIrqchip is KVM_CREATE_IRQCHIP: PIC and IOAPIC in the kernel, and a
// local APIC per vCPU created after it.
func (vm *VM) CreateIrqchip() error {
	_, err := ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0)
	return wrap("KVM_CREATE_IRQCHIP", err)
}

// CreatePIT2 is KVM_CREATE_PIT2.
func (vm *VM) CreatePIT2(flags uint32) error {
	c := PitConfig{Flags: flags}
	_, err := ioctlPtr(vm.fd, KVM_CREATE_PIT2, unsafe.Pointer(&c))
	return wrap("KVM_CREATE_PIT2", err)
}

// IRQLine is KVM_IRQ_LINE: drive GSI irq to level.
func (vm *VM) IRQLine(irq uint32, level bool) error {
	l := IrqLevel{IRQ: irq}
	if level {
		l.Level = 1
	}
	_, err := ioctlPtr(vm.fd, KVM_IRQ_LINE, unsafe.Pointer(&l))
	return wrap("KVM_IRQ_LINE", err)
}

// GetIrqchip is KVM_GET_IRQCHIP for c.ChipID.
func (vm *VM) GetIrqchip(c *Irqchip) error {
	_, err := ioctlPtr(vm.fd, KVM_GET_IRQCHIP, unsafe.Pointer(c))
	return wrap("KVM_GET_IRQCHIP", err)
}

// SetIrqchip is KVM_SET_IRQCHIP.
func (vm *VM) SetIrqchip(c *Irqchip) error {
	_, err := ioctlPtr(vm.fd, KVM_SET_IRQCHIP, unsafe.Pointer(c))
	return wrap("KVM_SET_IRQCHIP", err)
}

// GetPIT2 is KVM_GET_PIT2.
func (vm *VM) GetPIT2(p *PitState2) error {
	_, err := ioctlPtr(vm.fd, KVM_GET_PIT2, unsafe.Pointer(p))
	return wrap("KVM_GET_PIT2", err)
}

// SetPIT2 is KVM_SET_PIT2.
func (vm *VM) SetPIT2(p *PitState2) error {
	_, err := ioctlPtr(vm.fd, KVM_SET_PIT2, unsafe.Pointer(p))
	return wrap("KVM_SET_PIT2", err)
}

// GetClock is KVM_GET_CLOCK.
func (vm *VM) GetClock(c *ClockData) error {
	_, err := ioctlPtr(vm.fd, KVM_GET_CLOCK, unsafe.Pointer(c))
	return wrap("KVM_GET_CLOCK", err)
}

// SetClock is KVM_SET_CLOCK.
func (vm *VM) SetClock(c *ClockData) error {
	_, err := ioctlPtr(vm.fd, KVM_SET_CLOCK, unsafe.Pointer(c))
	return wrap("KVM_SET_CLOCK", err)
}

// GetDirtyLog is KVM_GET_DIRTY_LOG: fill bitmap (one bit per page of the
// slot, rounded up to 64 bits) with the pages written since the last call,
// and reset the log.
func (vm *VM) GetDirtyLog(slot uint32, bitmap []uint64) error {
	if len(bitmap) == 0 {
		return nil
	}
	d := struct {
		Slot    uint32
		Padding uint32
		Bitmap  uint64
	}{Slot: slot, Bitmap: uint64(uintptr(unsafe.Pointer(&bitmap[0])))}
	_, err := ioctlPtr(vm.fd, KVM_GET_DIRTY_LOG, unsafe.Pointer(&d))
	runtime.KeepAlive(bitmap)
	return wrap("KVM_GET_DIRTY_LOG", err)
}

// EnableCap is KVM_ENABLE_CAP on the VM.
func (vm *VM) EnableCap(c *EnableCap) error {
	_, err := ioctlPtr(vm.fd, KVM_ENABLE_CAP, unsafe.Pointer(c))
	return wrap("KVM_ENABLE_CAP", err)
}

// CreateVCPU is KVM_CREATE_VCPU, with its kvm_run area mapped.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	size, err := vm.sys.VCPUMmapSize()
	if err != nil {
		return nil, err
	}
	fd, err := ioctl(vm.fd, KVM_CREATE_VCPU, uintptr(id))
	if err != nil {
		return nil, wrap("KVM_CREATE_VCPU", err)
	}
	unix.CloseOnExec(int(fd))
	m, err := unix.Mmap(int(fd), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, wrap("mmap kvm_run", err)
	}
	return &VCPU{fd: int(fd), mapping: m, run: (*Run)(unsafe.Pointer(&m[0]))}, nil
}

// VCPU is a KVM vCPU descriptor with its mapped kvm_run area.
type VCPU struct {
	fd      int
	mapping []byte
	run     *Run
}

// Close unmaps the run area and closes the descriptor.
func (c *VCPU) Close() error {
	unix.Munmap(c.mapping)
	return unix.Close(c.fd)
}

// Run is KVM_RUN. It returns an error wrapping unix.EINTR when a signal or
// ImmediateExit ended it before the guest exited.
func (c *VCPU) Run() error {
	_, err := ioctl(c.fd, KVM_RUN, 0)
	return wrap("KVM_RUN", err)
}

// RunData returns the vCPU's kvm_run area.
func (c *VCPU) RunData() *Run { return c.run }

func (c *VCPU) get(op string, req uintptr, p unsafe.Pointer) error {
	_, err := ioctlPtr(c.fd, req, p)
	return wrap(op, err)
}

// GetRegs is KVM_GET_REGS.
func (c *VCPU) GetRegs(r *Regs) error { return c.get("KVM_GET_REGS", KVM_GET_REGS, unsafe.Pointer(r)) }

// SetRegs is KVM_SET_REGS.
func (c *VCPU) SetRegs(r *Regs) error { return c.get("KVM_SET_REGS", KVM_SET_REGS, unsafe.Pointer(r)) }

// GetSregs is KVM_GET_SREGS.
func (c *VCPU) GetSregs(s *Sregs) error {
	return c.get("KVM_GET_SREGS", KVM_GET_SREGS, unsafe.Pointer(s))
}

// SetSregs is KVM_SET_SREGS.
func (c *VCPU) SetSregs(s *Sregs) error {
	return c.get("KVM_SET_SREGS", KVM_SET_SREGS, unsafe.Pointer(s))
}

// GetFPU is KVM_GET_FPU.
func (c *VCPU) GetFPU(f *FPU) error { return c.get("KVM_GET_FPU", KVM_GET_FPU, unsafe.Pointer(f)) }

// SetFPU is KVM_SET_FPU.
func (c *VCPU) SetFPU(f *FPU) error { return c.get("KVM_SET_FPU", KVM_SET_FPU, unsafe.Pointer(f)) }

// GetXsave is KVM_GET_XSAVE, or KVM_GET_XSAVE2 when buf is longer than the
// 4096-byte struct kvm_xsave (its length must then be the size
// KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) reports).
func (c *VCPU) GetXsave(buf []byte) error {
	if len(buf) < sizeofXsave {
		return wrap("KVM_GET_XSAVE", fmt.Errorf("buffer of %d bytes, need %d", len(buf), sizeofXsave))
	}
	if len(buf) > sizeofXsave {
		return c.get("KVM_GET_XSAVE2", KVM_GET_XSAVE2, unsafe.Pointer(&buf[0]))
	}
	return c.get("KVM_GET_XSAVE", KVM_GET_XSAVE, unsafe.Pointer(&buf[0]))
}

// SetXsave is KVM_SET_XSAVE; buf has the length GetXsave used.
func (c *VCPU) SetXsave(buf []byte) error {
	if len(buf) < sizeofXsave {
		return wrap("KVM_SET_XSAVE", fmt.Errorf("buffer of %d bytes, need %d", len(buf), sizeofXsave))
	}
	return c.get("KVM_SET_XSAVE", KVM_SET_XSAVE, unsafe.Pointer(&buf[0]))
}

// GetXcrs is KVM_GET_XCRS.
func (c *VCPU) GetXcrs(x *Xcrs) error { return c.get("KVM_GET_XCRS", KVM_GET_XCRS, unsafe.Pointer(x)) }

// SetXcrs is KVM_SET_XCRS.
func (c *VCPU) SetXcrs(x *Xcrs) error { return c.get("KVM_SET_XCRS", KVM_SET_XCRS, unsafe.Pointer(x)) }

// GetLapic is KVM_GET_LAPIC.
func (c *VCPU) GetLapic(l *LapicState) error {
	return c.get("KVM_GET_LAPIC", KVM_GET_LAPIC, unsafe.Pointer(l))
}

// SetLapic is KVM_SET_LAPIC.
func (c *VCPU) SetLapic(l *LapicState) error {
	return c.get("KVM_SET_LAPIC", KVM_SET_LAPIC, unsafe.Pointer(l))
}

// GetMPState is KVM_GET_MP_STATE.
func (c *VCPU) GetMPState(m *MPState) error {
	return c.get("KVM_GET_MP_STATE", KVM_GET_MP_STATE, unsafe.Pointer(m))
}

// SetMPState is KVM_SET_MP_STATE.
func (c *VCPU) SetMPState(m *MPState) error {
	return c.get("KVM_SET_MP_STATE", KVM_SET_MP_STATE, unsafe.Pointer(m))
}

// GetVCPUEvents is KVM_GET_VCPU_EVENTS.
func (c *VCPU) GetVCPUEvents(e *VCPUEvents) error {
	return c.get("KVM_GET_VCPU_EVENTS", KVM_GET_VCPU_EVENTS, unsafe.Pointer(e))
}

// SetVCPUEvents is KVM_SET_VCPU_EVENTS.
func (c *VCPU) SetVCPUEvents(e *VCPUEvents) error {
	return c.get("KVM_SET_VCPU_EVENTS", KVM_SET_VCPU_EVENTS, unsafe.Pointer(e))
}

// GetDebugRegs is KVM_GET_DEBUGREGS.
func (c *VCPU) GetDebugRegs(d *DebugRegs) error {
	return c.get("KVM_GET_DEBUGREGS", KVM_GET_DEBUGREGS, unsafe.Pointer(d))
}

// SetDebugRegs is KVM_SET_DEBUGREGS.
func (c *VCPU) SetDebugRegs(d *DebugRegs) error {
	return c.get("KVM_SET_DEBUGREGS", KVM_SET_DEBUGREGS, unsafe.Pointer(d))
}

// msrs runs KVM_GET_MSRS or KVM_SET_MSRS over entries and returns how many
// entries the kernel processed (it stops at the first it refuses).
func (c *VCPU) msrs(req uintptr, entries []MsrEntry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	buf := make([]byte, sizeofMsrs+len(entries)*sizeofMsrEntry)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	dst := unsafe.Slice((*MsrEntry)(unsafe.Pointer(&buf[sizeofMsrs])), len(entries))
	copy(dst, entries)
	n, err := ioctlPtr(c.fd, req, unsafe.Pointer(&buf[0]))
	if err != nil {
		return 0, err
	}
	copy(entries, dst)
	return int(n), nil
}

// GetMSRs is KVM_GET_MSRS: it fills the Data of entries, in order, and
// returns how many it read.
func (c *VCPU) GetMSRs(entries []MsrEntry) (int, error) {
	n, err := c.msrs(KVM_GET_MSRS, entries)
	return n, wrap("KVM_GET_MSRS", err)
}

// SetMSRs is KVM_SET_MSRS: it returns how many entries, in order, it wrote.
func (c *VCPU) SetMSRs(entries []MsrEntry) (int, error) {
	n, err := c.msrs(KVM_SET_MSRS, entries)
	return n, wrap("KVM_SET_MSRS", err)
}

// SetCPUID2 is KVM_SET_CPUID2.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry2) error {
	buf := make([]byte, sizeofCPUID2+len(entries)*sizeofCPUIDEntry2)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	if len(entries) > 0 {
		copy(unsafe.Slice((*CPUIDEntry2)(unsafe.Pointer(&buf[sizeofCPUID2])), len(entries)), entries)
	}
	_, err := ioctlPtr(c.fd, KVM_SET_CPUID2, unsafe.Pointer(&buf[0]))
	return wrap("KVM_SET_CPUID2", err)
}

// GetTSCKHz is KVM_GET_TSC_KHZ: the guest TSC frequency.
func (c *VCPU) GetTSCKHz() (uint32, error) {
	r, err := ioctl(c.fd, KVM_GET_TSC_KHZ, 0)
	return uint32(r), wrap("KVM_GET_TSC_KHZ", err)
}

// SetTSCKHz is KVM_SET_TSC_KHZ.
func (c *VCPU) SetTSCKHz(khz uint32) error {
	_, err := ioctl(c.fd, KVM_SET_TSC_KHZ, uintptr(khz))
	return wrap("KVM_SET_TSC_KHZ", err)
}

// GetDeviceAttrU64 is KVM_GET_DEVICE_ATTR on the vCPU for a 64-bit
// attribute (such as KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET).
func (c *VCPU) GetDeviceAttrU64(group uint32, attr uint64) (uint64, error) {
	var v uint64
	a := DeviceAttr{Group: group, Attr: attr, Addr: uint64(uintptr(unsafe.Pointer(&v)))}
	_, err := ioctlPtr(c.fd, KVM_GET_DEVICE_ATTR, unsafe.Pointer(&a))
	runtime.KeepAlive(&v)
	return v, wrap("KVM_GET_DEVICE_ATTR", err)
}

// SetDeviceAttrU64 is KVM_SET_DEVICE_ATTR on the vCPU for a 64-bit
// attribute.
func (c *VCPU) SetDeviceAttrU64(group uint32, attr uint64, v uint64) error {
	a := DeviceAttr{Group: group, Attr: attr, Addr: uint64(uintptr(unsafe.Pointer(&v)))}
	_, err := ioctlPtr(c.fd, KVM_SET_DEVICE_ATTR, unsafe.Pointer(&a))
	runtime.KeepAlive(&v)
	return wrap("KVM_SET_DEVICE_ATTR", err)
}
