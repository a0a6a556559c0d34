package vmm

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/vmm/devices"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// State is a paused VM's complete machine state apart from RAM: what a
// migration carries, along with the dirty pages, from one Machine into
// another built from the same spec.
type State struct {
	// VCPUs holds one entry per vCPU, in vCPU order.
	VCPUs []*VCPUState
	// Irqchip holds the in-kernel PIC master, PIC slave and IOAPIC, in
	// KVM_IRQCHIP_* order.
	Irqchip [3]kvm.Irqchip
	// PIT is the in-kernel i8254.
	PIT kvm.PitState2
	// Clock is the VM's kvmclock.
	Clock kvm.ClockData
	// Devices holds each stateful device's payload, keyed by its spec
	// component key.
	Devices []DeviceState
}

// DeviceState is one device's saved state.
type DeviceState struct {
	// Key is the device's spec component key, in string form.
	Key     string
	Payload devices.Payload
}

// ExportState reads the state of a paused (or created) machine, each
// device payload in its newest version.
func (m *Machine) ExportState() (*State, error) { return m.ExportStateVersions(nil) }

// ExportStateVersions is ExportState writing each device payload in the
// version versions gives for its kind (absent or 0: newest), so that an
// exporter can write what an older peer accepts.
func (m *Machine) ExportStateVersions(versions map[string]uint32) (*State, error) {
	if err := m.begin(ActionExportState); err != nil {
		return nil, opErr("export state", err)
	}
	defer m.mu.Unlock()
	s, err := m.exportVersionsLocked(versions)
	return s, opErr("export state", err)
}

// ImportState replaces the state of a paused (or created) machine with s,
// which must come from a machine with the same spec. RAM is not part of s:
// copy it with WriteGuest. On error the machine's state is undefined: stop
// it.
func (m *Machine) ImportState(s *State) error {
	if err := m.begin(ActionImportState); err != nil {
		return opErr("import state", err)
	}
	defer m.mu.Unlock()
	if err := m.importLocked(s); err != nil {
		return opErr("import state", err)
	}
	// Imported devices may hold requests the guest made while the source
	// was paused; treat them as quiesced so that the next Start or Resume
	// lets them serve their queues.
	m.quiesced = true
	return nil
}

// exportLocked reads everything, devices in their newest versions; the
// vCPUs are parked.
func (m *Machine) exportLocked() (*State, error) { return m.exportVersionsLocked(nil) }

func (m *Machine) exportVersionsLocked(versions map[string]uint32) (*State, error) {
	s := &State{}
	for _, v := range m.vcpus {
		// From this thread, not the vCPU's (see VCPUState): waking a
		// parked vCPU thread costs 20 to 200 µs here, all of it downtime
		// in a migration.
		vs, err := getVCPUState(v.fd, v, cpuidFor(m.cpuid, v.id), &m.caps)
		if err != nil {
			return nil, err
		}
		s.VCPUs = append(s.VCPUs, vs)
	}
	for i := range s.Irqchip {
		s.Irqchip[i].ChipID = uint32(i)
		if err := m.vm.GetIrqchip(&s.Irqchip[i]); err != nil {
			return nil, err
		}
	}
	if err := m.vm.GetPIT2(&s.PIT); err != nil {
		return nil, err
	}
	if err := m.vm.GetClock(&s.Clock); err != nil {
		return nil, err
	}
	for _, d := range m.devs {
		p, err := d.dev.Save(versions[d.kind])
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.key, err)
		}
		s.Devices = append(s.Devices, DeviceState{Key: d.key.String(), Payload: p})
	}
	return s, nil
}

// importLocked writes everything; the vCPUs are parked. Devices are left
// quiesced; Start or Resume lets them serve what the guest queued.
func (m *Machine) importLocked(s *State) error {
	m.quiesceLocked()
	if len(s.VCPUs) != len(m.vcpus) {
		return fmt.Errorf("state has %d vCPUs, the machine %d", len(s.VCPUs), len(m.vcpus))
	}
	byKey := map[string]devices.Payload{}
	for _, d := range s.Devices {
		if _, dup := byKey[d.Key]; dup {
			return fmt.Errorf("state has device %q twice", d.Key)
		}
		byKey[d.Key] = d.Payload
	}
	for _, d := range m.devs {
		if _, ok := byKey[d.key.String()]; !ok {
			return fmt.Errorf("state lacks device %q", d.key)
		}
	}
	if len(byKey) != len(m.devs) {
		return fmt.Errorf("state has %d devices, the machine %d", len(byKey), len(m.devs))
	}

	clock := s.Clock
	clock.Flags = 0 // set the clock to the value; realtime and host_tsc are advisory
	if err := m.vm.SetClock(&clock); err != nil {
		return err
	}
	for i := range s.Irqchip {
		c := s.Irqchip[i]
		if c.ChipID != uint32(i) {
			return fmt.Errorf("irqchip %d has chip id %d", i, c.ChipID)
		}
		if err := m.vm.SetIrqchip(&c); err != nil {
			return err
		}
	}
	pit := s.PIT
	if err := m.vm.SetPIT2(&pit); err != nil {
		return err
	}
	for i, v := range m.vcpus {
		vs := s.VCPUs[i]
		if vs.ID != v.id {
			return fmt.Errorf("state's vCPU %d has id %d", i, vs.ID)
		}
		if err := setVCPUState(v.fd, v, vs, &m.caps, !v.ran); err != nil {
			return err
		}
	}
	for _, d := range m.devs {
		if err := d.dev.Restore(byKey[d.key.String()]); err != nil {
			return fmt.Errorf("device %s: %w", d.key, err)
		}
	}
	return nil
}

// Regions returns the guest RAM regions.
func (m *Machine) Regions() []Region {
	out := make([]Region, len(m.mem.regions))
	for i, r := range m.mem.regions {
		out[i] = r.Region
	}
	return out
}

// ReadGuest copies guest RAM at gpa into p (any state but closed).
func (m *Machine) ReadGuest(p []byte, gpa uint64) error {
	if err := m.begin(ActionMemory); err != nil {
		return opErr("read guest memory", err)
	}
	defer m.mu.Unlock()
	return opErr("read guest memory", m.mem.ReadAt(p, gpa))
}

// WriteGuest copies p into guest RAM at gpa and marks the pages dirty in
// the VMM's log, so a later CollectDirty reports them.
func (m *Machine) WriteGuest(p []byte, gpa uint64) error {
	if err := m.begin(ActionMemory); err != nil {
		return opErr("write guest memory", err)
	}
	defer m.mu.Unlock()
	return opErr("write guest memory", m.mem.WriteAt(p, gpa))
}

// ViewGuest calls f with guest RAM at [gpa, gpa+n) itself, not a copy, so
// that a migration can send pages to a socket straight from guest memory.
// As with ReadGuest, a running guest may write the pages meanwhile. f must
// not keep the slice nor write to it; the RAM stays mapped until f returns
// (Close waits for it), and other operations of the machine go on
// meanwhile.
func (m *Machine) ViewGuest(gpa uint64, n int, f func(ram []byte) error) error {
	if err := m.begin(ActionMemory); err != nil {
		return opErr("view guest memory", err)
	}
	ram, err := m.mem.view(gpa, n)
	if err != nil {
		m.mu.Unlock()
		return opErr("view guest memory", err)
	}
	// Taken before mu is let go: a Close that follows finds the view held.
	m.mem.views.RLock()
	m.mu.Unlock()
	defer m.mem.views.RUnlock()
	return f(ram)
}

// PrefaultGuest populates guest RAM at [gpa, gpa+n) ahead of writes to it
// (MADV_POPULATE_WRITE), so that a migration target writes present memory:
// the pages read as they did (zero, on a fresh machine). It holds the RAM
// as ViewGuest does, not the machine. Best effort: on a kernel without
// MADV_POPULATE_WRITE it fails, and the pages fault in as they are
// written.
func (m *Machine) PrefaultGuest(gpa uint64, n int) error {
	return m.ViewGuest(gpa, n, func(ram []byte) error {
		if err := unix.Madvise(ram, unix.MADV_POPULATE_WRITE); err != nil {
			return fmt.Errorf("prefault guest memory: %w", err)
		}
		return nil
	})
}

// FillGuest reads exactly n bytes from r into guest RAM at gpa and marks
// the pages dirty, as WriteGuest does, with no buffer between the reader
// and guest memory. On error the pages may hold part of what was read.
func (m *Machine) FillGuest(r io.Reader, gpa uint64, n int) error {
	if err := m.begin(ActionMemory); err != nil {
		return opErr("fill guest memory", err)
	}
	defer m.mu.Unlock()
	return opErr("fill guest memory", m.mem.fill(r, gpa, n))
}

// Memory returns guest RAM as devices see it. Its writes are logged like
// WriteGuest's; unlike ReadGuest and WriteGuest it does not check the
// lifecycle state, so it must not be used after Close.
func (m *Machine) Memory() devices.GuestMemory { return m.mem }

// TouchedPages returns, per RAM region, the pages that were ever touched
// (present or swapped out, per /proc/self/pagemap): a superset of the pages
// ever written, since a page only read maps the kernel's zero page. A page not in the bitmap reads as zero, so a migration need
// not send it to a target whose RAM is fresh.
func (m *Machine) TouchedPages() ([]DirtyBitmap, error) {
	if err := m.begin(ActionMemory); err != nil {
		return nil, opErr("touched pages", err)
	}
	defer m.mu.Unlock()
	d, err := m.mem.resident()
	return d, opErr("touched pages", err)
}

// EnableDirtyLog starts dirty-page tracking afresh: KVM's log for every
// RAM slot (KVM_MEM_LOG_DIRTY_PAGES) and the VMM's own log are cleared.
func (m *Machine) EnableDirtyLog() error {
	if err := m.begin(ActionMemory); err != nil {
		return opErr("enable dirty log", err)
	}
	defer m.mu.Unlock()
	return opErr("enable dirty log", m.mem.setLogging(true))
}

// DisableDirtyLog stops KVM's dirty-page tracking.
func (m *Machine) DisableDirtyLog() error {
	if err := m.begin(ActionMemory); err != nil {
		return opErr("disable dirty log", err)
	}
	defer m.mu.Unlock()
	return opErr("disable dirty log", m.mem.setLogging(false))
}

// CollectDirty returns, per RAM region, the pages written since dirty
// logging was enabled or last collected — by the guest (KVM's log) or by
// the VMM itself (boot data, device DMA, WriteGuest) — and clears the logs.
// Without dirty logging enabled, only the VMM's own writes are reported.
func (m *Machine) CollectDirty() ([]DirtyBitmap, error) {
	if err := m.begin(ActionMemory); err != nil {
		return nil, opErr("collect dirty pages", err)
	}
	defer m.mu.Unlock()
	d, err := m.mem.collect()
	return d, opErr("collect dirty pages", err)
}
