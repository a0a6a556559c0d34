package vmm

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// PageSize is the granule of dirty tracking.
const PageSize = 4096

// Guest-physical layout (vmm/guest/ABI.md): RAM from 0 up to 3 GiB, the rest
// from 4 GiB; 0xC0000000..0xFFFFFFFF is the MMIO hole.
const (
	lowRAMLimit = 3 << 30
	highRAMBase = 4 << 30
)

// Region is one contiguous range of guest RAM.
type Region struct {
	// GPA is the guest-physical address of the first byte.
	GPA uint64
	// Size is the length in bytes, a multiple of PageSize.
	Size uint64
}

// Pages returns the number of pages in r.
func (r Region) Pages() uint64 { return r.Size / PageSize }

// memRegion is one KVM memory slot over part of the mapping.
type memRegion struct {
	Region
	slot uint32
	host []byte // the slot's part of guestMemory.mapping
	// dirty is the VMM's own dirty bitmap, one bit per page: pages the VMM
	// wrote (KVM's log misses them). Words are updated atomically.
	dirty []uint64
}

// guestMemory is the VM's RAM: one anonymous mapping outside the Go heap,
// registered with KVM as one or two slots.
type guestMemory struct {
	vm      *kvm.VM
	mapping []byte
	regions []*memRegion
	// logging says whether the slots carry KVM_MEM_LOG_DIRTY_PAGES; it is
	// changed only with the Machine's mu held.
	logging bool
	// views is held for reading while a caller of Machine.ViewGuest holds
	// RAM itself, and for writing by close: the mapping outlives every
	// view.
	views sync.RWMutex
}

// newGuestMemory registers size bytes of RAM with vm: ram when it is not
// nil (size bytes a shell reserved, claimRAM), else a new mapping. The
// memory is the guestMemory's, or unmapped on an error.
func newGuestMemory(vm *kvm.VM, size uint64, ram []byte) (*guestMemory, error) {
	if size == 0 || size%PageSize != 0 {
		unmap(ram)
		return nil, fmt.Errorf("%w: size %d is not a positive multiple of %d", ErrMemory, size, PageSize)
	}
	if ram != nil && uint64(len(ram)) != size {
		unmap(ram)
		return nil, fmt.Errorf("%w: %d bytes of RAM given for a size of %d", ErrMemory, len(ram), size)
	}
	m := ram
	if m == nil {
		var err error
		if m, err = MapRAM(size); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMemory, err)
		}
	}
	g := &guestMemory{vm: vm, mapping: m}
	low := min(size, lowRAMLimit)
	g.regions = append(g.regions, &memRegion{Region: Region{GPA: 0, Size: low}, slot: 0, host: m[:low]})
	if size > low {
		g.regions = append(g.regions, &memRegion{Region: Region{GPA: highRAMBase, Size: size - low}, slot: 1, host: m[low:]})
	}
	for _, r := range g.regions {
		r.dirty = make([]uint64, (r.Pages()+63)/64)
		if err := g.register(r, 0); err != nil {
			unmap(m)
			return nil, fmt.Errorf("%w: %w", ErrMemory, err)
		}
	}
	return g, nil
}

// MapRAM maps size bytes of memory the way guest RAM is mapped: anonymous,
// private, reserved on first touch (MAP_NORESERVE), and advised to be
// backed by transparent huge pages. Unmap it with UnmapRAM. It is exported
// so that a benchmark without KVM can hold "guest" RAM exactly as a
// Machine does.
//
// Huge pages matter most to a migration target, which writes every page of
// RAM once, as fast as the stream brings them: a 4 KiB page costs a fault,
// and on a virtualized host a fault is dear. Writing 1 GiB into fresh
// memory took 3.5-4.1 s with 4 KiB pages and 0.12 s with huge pages on a
// development machine (a VM itself). The advice is best effort: a host
// whose THP setting is "never" backs RAM with 4 KiB pages, as before.
func MapRAM(size uint64) ([]byte, error) {
	if uint64(int(size)) != size {
		return nil, fmt.Errorf("mmap of %d bytes: size overflows", size)
	}
	m, err := mapAnonymous(size)
	if err != nil {
		return nil, fmt.Errorf("mmap of %d MiB: %w", size>>20, err)
	}
	_ = unix.Madvise(m, unix.MADV_HUGEPAGE)
	return m, nil
}

// UnmapRAM unmaps memory that MapRAM mapped.
func UnmapRAM(m []byte) error { return unmap(m) }

// hugePage is the size of a transparent huge page on x86-64.
const hugePage = 2 << 20

// ramHead is the part of a RAM reserve faulted in ahead: the first huge
// page, which holds all a guest touches before it runs (the boot image at
// 1 MiB, the Multiboot information, SMBIOS, the first page tables and
// stack; vmm/guest/ABI.md). A fresh process's first touch of it cost
// 0.4-0.5 ms on a development VM, where the host supplies each new page.
const ramHead = hugePage

// reserveRAM maps address space for the RAM of any guest the host could
// hold (its RAM, at most spec.MaxMemoryMiB) as MapRAM would, aligned to a
// huge page, and faults in its head (ramHead). It is best effort: nil when
// the host refuses the mapping. Unmap it with unmap, or claim the part a
// guest needs.
func reserveRAM() []byte {
	size := uint64(spec.MaxMemoryMiB) << 20
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		size = min(size, (uint64(si.Totalram)*uint64(si.Unit)+hugePage-1)&^(hugePage-1))
	}
	size = max(size, hugePage)
	// Map a huge page more, then drop what lies before the first huge page
	// boundary and the rest of the extra after the reserve.
	m, err := mapAnonymous(size + hugePage)
	if err != nil {
		return nil
	}
	skip := (hugePage - hostAddr(m)%hugePage) % hugePage
	unmap(m[:skip])
	unmap(m[skip+size:])
	m = m[skip : skip+size : skip+size]
	_ = unix.Madvise(m, unix.MADV_HUGEPAGE)
	_ = unix.Madvise(m[:ramHead], unix.MADV_POPULATE_WRITE)
	return m
}

func (g *guestMemory) register(r *memRegion, flags uint32) error {
	return g.vm.SetUserMemoryRegion(&kvm.UserspaceMemoryRegion{
		Slot: r.slot, Flags: flags, GuestPhysAddr: r.GPA, MemorySize: r.Size, UserspaceAddr: hostAddr(r.host),
	})
}

// close unmaps the memory, once no view of it is held. The VM must be gone
// or its slots unused.
func (g *guestMemory) close() {
	g.views.Lock()
	defer g.views.Unlock()
	if g.mapping != nil {
		unmap(g.mapping)
		g.mapping = nil
	}
}

// find returns the region holding [gpa, gpa+n) and the offset of gpa in it.
func (g *guestMemory) find(gpa, n uint64) (*memRegion, uint64, error) {
	for _, r := range g.regions {
		if gpa >= r.GPA && gpa-r.GPA < r.Size {
			off := gpa - r.GPA
			if n > r.Size-off {
				break
			}
			return r, off, nil
		}
	}
	return nil, 0, fmt.Errorf("guest-physical range %#x+%#x is not RAM", gpa, n)
}

// ReadAt copies guest memory at gpa into p.
func (g *guestMemory) ReadAt(p []byte, gpa uint64) error {
	r, off, err := g.find(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, r.host[off:])
	return nil
}

// WriteAt copies p into guest memory at gpa and marks the pages dirty in
// the VMM's log.
func (g *guestMemory) WriteAt(p []byte, gpa uint64) error {
	r, off, err := g.find(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(r.prepare(off, len(p)), p)
	// Marked after the copy: a collection between the two (a device's
	// write runs beside the migration's) leaves the page dirty for the
	// next one, never clean with the new bytes unsent.
	r.markDirty(off, uint64(len(p)))
	return nil
}

// view returns guest memory at [gpa, gpa+n) itself.
func (g *guestMemory) view(gpa uint64, n int) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("view of %d bytes", n)
	}
	r, off, err := g.find(gpa, uint64(n))
	if err != nil {
		return nil, err
	}
	return r.host[off : off+uint64(n)], nil
}

// fill reads n bytes from r into guest memory at gpa and marks the pages
// dirty in the VMM's log (all of them, even if the read ends early).
func (g *guestMemory) fill(r io.Reader, gpa uint64, n int) error {
	if n < 0 {
		return fmt.Errorf("fill of %d bytes", n)
	}
	reg, off, err := g.find(gpa, uint64(n))
	if err != nil {
		return err
	}
	_, err = io.ReadFull(r, reg.prepare(off, n))
	reg.markDirty(off, uint64(n))
	if err != nil {
		return fmt.Errorf("read %d bytes for %#x: %w", n, gpa, err)
	}
	return nil
}

// prepare returns the n bytes of r's memory at off, about to be written,
// faulted in if the write is large. The caller marks them dirty once
// written.
func (r *memRegion) prepare(off uint64, n int) []byte {
	dst := r.host[off : off+uint64(n)]
	if n >= populateMin {
		// Fault the pages in with one call rather than one trap per page:
		// on a nested host each trap costs several microseconds, which
		// dominated a migration target's receive path. Best effort: an
		// old kernel without MADV_POPULATE_WRITE just faults as it copies.
		_ = unix.Madvise(dst, unix.MADV_POPULATE_WRITE)
	}
	return dst
}

// populateMin is the smallest write that pre-faults its pages.
const populateMin = 64 << 10

// markDirty sets the VMM dirty bits of the pages [off, off+n) of r.
func (r *memRegion) markDirty(off, n uint64) {
	if n == 0 {
		return
	}
	first, last := off/PageSize, (off+n-1)/PageSize
	for p := first; p <= last; {
		w := p / 64
		lo := p % 64
		hi := min(last-w*64, 63)
		mask := (^uint64(0) >> (63 - hi)) &^ (uint64(1)<<lo - 1)
		atomic.OrUint64(&r.dirty[w], mask)
		p = (w + 1) * 64
	}
}

// markAllDirty sets every VMM dirty bit.
func (g *guestMemory) markAllDirty() {
	for _, r := range g.regions {
		r.markDirty(0, r.Size)
	}
}

// zero discards the contents of all RAM (it reads as zeros afterwards) and
// marks it dirty.
func (g *guestMemory) zero() error {
	if err := unix.Madvise(g.mapping, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("zero guest memory: %w", err)
	}
	g.markAllDirty()
	return nil
}

// setLogging turns KVM's dirty log on or off for every slot. Turning it on
// also clears both logs: tracking starts afresh.
func (g *guestMemory) setLogging(on bool) error {
	var flags uint32
	if on {
		flags = kvm.KVM_MEM_LOG_DIRTY_PAGES
	}
	for _, r := range g.regions {
		if err := g.register(r, flags); err != nil {
			return err
		}
		if on {
			for i := range r.dirty {
				atomic.StoreUint64(&r.dirty[i], 0)
			}
		}
	}
	g.logging = on
	return nil
}

// DirtyBitmap is the set of pages of one Region written since the last
// collection: bit i of Bits (word i/64, bit i%64) is page i of the region.
type DirtyBitmap struct {
	Region Region
	Bits   []uint64
}

// Count returns the number of dirty pages.
func (d DirtyBitmap) Count() int {
	n := 0
	for _, w := range d.Bits {
		n += bits.OnesCount64(w)
	}
	return n
}

// Dirty reports whether page i of the region is dirty.
func (d DirtyBitmap) Dirty(i uint64) bool { return d.Bits[i/64]&(1<<(i%64)) != 0 }

// collect returns, for each region, KVM's dirty log merged with the VMM's,
// and clears both. Without KVM logging only the VMM's log is returned.
func (g *guestMemory) collect() ([]DirtyBitmap, error) {
	out := make([]DirtyBitmap, len(g.regions))
	for i, r := range g.regions {
		b := make([]uint64, len(r.dirty))
		if g.logging {
			if err := g.vm.GetDirtyLog(r.slot, b); err != nil {
				return nil, err
			}
		}
		for j := range r.dirty {
			if atomic.LoadUint64(&r.dirty[j]) != 0 {
				b[j] |= atomic.SwapUint64(&r.dirty[j], 0)
			}
		}
		out[i] = DirtyBitmap{Region: r.Region, Bits: b}
	}
	return out, nil
}

// resident reports, per region, the pages of the mapping that were ever
// touched: present in RAM or swapped out, as /proc/self/pagemap says (bits
// 63 and 62 of each entry; readable without privileges). A page never
// touched has no entry and reads as zero.
func (g *guestMemory) resident() ([]DirtyBitmap, error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, fmt.Errorf("pagemap: %w", err)
	}
	defer f.Close()
	out := make([]DirtyBitmap, len(g.regions))
	const chunk = 1 << 16 // pages per read: 512 KiB of entries
	buf := make([]byte, 8*chunk)
	for i, r := range g.regions {
		b := make([]uint64, (r.Pages()+63)/64)
		first := hostAddr(r.host) / PageSize
		for p := uint64(0); p < r.Pages(); p += chunk {
			n := min(chunk, r.Pages()-p)
			if _, err := f.ReadAt(buf[:8*n], int64((first+p)*8)); err != nil {
				return nil, fmt.Errorf("pagemap: %w", err)
			}
			for j := uint64(0); j < n; j++ {
				if binary.LittleEndian.Uint64(buf[8*j:])&(3<<62) != 0 {
					b[(p+j)/64] |= 1 << ((p + j) % 64)
				}
			}
		}
		out[i] = DirtyBitmap{Region: r.Region, Bits: b}
	}
	return out, nil
}
