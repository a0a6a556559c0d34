package server

import (
	"context"
	"fmt"
	"io"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
)

// VM is what the runtime and its migrations use of a virtual machine. In a
// server it is a *vmm.Machine (see vmm for what each method does and in
// which phase it is allowed); tests give the runtime a VM of their own
// through RuntimeOptions.NewVM, so that the lifecycle, the consoles and
// migration run without KVM.
//
// It is deliberately one interface, the runtime's one seam to the VMM,
// rather than a set of small ones: every VM the runtime drives must do all
// of it.
type VM interface {
	// Start runs a created (or migrated-in) VM.
	Start() error
	// Stop ends the VM for good (Exit reason vmm.ExitStopped).
	Stop() error
	// Pause and Resume park and unpark the vCPUs.
	Pause() error
	Resume() error
	// Reset reboots the VM in place.
	Reset() error
	// Wait blocks until the VM has ended, or ctx ends.
	Wait(ctx context.Context) (vmm.Exit, error)
	// Exit reports how the VM ended, and false while it has not.
	Exit() (vmm.Exit, bool)
	// Close stops the VM if needed and releases all it holds (it may be
	// slow: it unmaps the guest's RAM). The runtime never calls it with its
	// lock held.
	Close() error
	// SerialInput queues bytes for the guest on a COM port.
	SerialInput(ctx context.Context, num spec.SerialPortNumber, p []byte) error

	// Regions lists guest RAM; ReadGuest and WriteGuest copy from and to
	// it (WriteGuest marks the pages dirty).
	Regions() []vmm.Region
	ReadGuest(p []byte, gpa uint64) error
	WriteGuest(p []byte, gpa uint64) error
	// ViewGuest calls f with guest RAM itself, not a copy; f must not
	// keep it. A migration source sends RAM frames from it.
	ViewGuest(gpa uint64, n int, f func(ram []byte) error) error
	// PrefaultGuest populates guest RAM ahead of writes to it (best
	// effort); a migration target does it for the source's Plan.
	PrefaultGuest(gpa uint64, n int) error
	// FillGuest is WriteGuest of n bytes read from r, with no buffer
	// between: a migration target reads RAM frames into guest memory
	// with it.
	FillGuest(r io.Reader, gpa uint64, n int) error
	// TouchedPages returns the pages ever touched: the others read as zero.
	TouchedPages() ([]vmm.DirtyBitmap, error)
	// EnableDirtyLog, CollectDirty and DisableDirtyLog track the pages
	// written, by the guest or by WriteGuest, between collections.
	EnableDirtyLog() error
	CollectDirty() ([]vmm.DirtyBitmap, error)
	DisableDirtyLog() error

	// ExportStateVersions reads a paused VM's state apart from RAM, each
	// device in the version given for its kind; ImportState writes it
	// into a VM built from the same spec.
	ExportStateVersions(versions map[string]uint32) (*vmm.State, error)
	ImportState(s *vmm.State) error
}

var _ VM = (*vmm.Machine)(nil)

// NewVMFunc builds a VM from a configuration, as vmm.New does.
type NewVMFunc func(cfg vmm.Config) (VM, error)

// newKVMMachine is the default NewVMFunc: a KVM virtual machine.
func newKVMMachine(cfg vmm.Config) (VM, error) {
	m, err := vmm.New(cfg)
	if err != nil {
		return nil, err // not a typed nil in an interface
	}
	return m, nil
}

// HostCapacity is what this host can give a VM.
type HostCapacity struct {
	// CPUs is how many CPUs this process may run on.
	CPUs int
	// MemoryMiB is the memory available for new allocations without
	// swapping (the kernel's MemAvailable).
	MemoryMiB uint64
}

// ReadHostCapacity reads this host's capacity now (vmm.HostCapacity: the
// CPUs in this process's affinity mask, and the memory it can still commit
// within MemAvailable and its memory cgroups).
func ReadHostCapacity() (HostCapacity, error) {
	cpus, mem, err := vmm.HostCapacity()
	if err != nil {
		return HostCapacity{}, fmt.Errorf("read host capacity: %w", err)
	}
	return HostCapacity{CPUs: cpus, MemoryMiB: mem >> 20}, nil
}

// checkCapacity refuses a board this host cannot back.
func checkCapacity(b spec.Board, c HostCapacity) error {
	if c.CPUs > 0 && int(b.CPUs) > c.CPUs {
		return &CapacityError{Field: "board.cpus", Asked: uint64(b.CPUs), Max: uint64(c.CPUs)}
	}
	if c.MemoryMiB > 0 && b.MemoryMiB > c.MemoryMiB {
		return &CapacityError{Field: "board.memory_mb", Asked: b.MemoryMiB, Max: c.MemoryMiB, Unit: "MiB"}
	}
	return nil
}
