package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/devices"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// Addresses in the MMIO hole KVM needs on Intel hosts (three pages of TSS,
// one page of identity map), clear of the IOAPIC and local APIC.
const (
	tssAddr         = 0xfffbd000
	identityMapAddr = 0xfffbc000
)

// Machine is one VM on /dev/kvm. Its methods are safe for concurrent use;
// lifecycle actions are serialized.
type Machine struct {
	cfg   Config
	sys   *kvm.System
	vm    *kvm.VM
	mem   *guestMemory
	vcpus []*vcpu
	ports *portBus
	mmio  *mmioBus
	image *bootImage
	caps  hostCaps
	// cpuid is the host's supported CPUID table.
	cpuid  []kvm.CPUIDEntry2
	tscKHz uint32
	smbios *devices.SMBIOSTables
	uarts  map[spec.SerialPortNumber]*devices.UART
	// outputs buffer serial output between the UARTs and Config.Serial.
	outputs map[spec.SerialPortNumber]*devices.OutputBuffer
	// devs are the devices with state, ordered by component key.
	devs []*device
	// closers are released by Close after the devices (disk files).
	closers []io.Closer
	// initial is the power-on state, restored by a reset.
	initial *State

	// events receives the session number of a run session a vCPU ended on
	// its own (guest power-off, reset or failure).
	events  chan uint64
	quit    chan struct{} // closed by Close to end the controller
	ctlDone chan struct{} // closed when the controller has returned
	// done is closed when the machine enters PhaseStopped.
	done chan struct{}

	// clock records where building and starting the machine took its time
	// (StartTimings).
	clock startClock

	// Counters for debugging.
	sleeps atomic.Uint64
	resets atomic.Uint64

	// panicked says the guest wrote "panicked" to its pvpanic device: the
	// vCPU that did ends the session as a failure (ErrGuestPanicked).
	panicked atomic.Bool

	mu sync.Mutex
	// phase is the lifecycle phase; guarded by mu.
	phase Phase
	// exit is how the VM ended, set on entering PhaseStopped; guarded by mu.
	exit Exit
	// session numbers run sessions; notifications of older sessions are
	// stale. Guarded by mu.
	session uint64
	// quiesced says devices are quiesced (paused or stopped); guarded by mu.
	quiesced bool
}

// device is one stateful device of the spec.
type device struct {
	key spec.Key
	// kind is the payload kind the device saves.
	kind string
	dev  devices.Stateful
}

// irqLine drives one GSI of the in-kernel irqchip.
type irqLine struct {
	vm  *kvm.VM
	gsi uint32
}

func (l irqLine) SetLevel(high bool) error { return l.vm.IRQLine(l.gsi, high) }

// lookupImage finds a guest image by name; see images.go.
var lookupImage = defaultImage

// New builds a VM from cfg: it checks what the host can give, maps memory,
// creates the vCPUs and devices and loads the boot image, leaving the
// machine in PhaseCreated. Anything the host cannot build is a
// *ComponentError naming the part of the spec, returned before any vCPU runs.
func New(cfg Config) (*Machine, error) {
	const op = "new"
	// A shell New did not take is closed here; one it took is the
	// machine's, closed with it.
	defer cfg.Shell.Close()
	board := cfg.Spec.Board()
	if board.CPUs == 0 {
		return nil, opErr(op, errors.New("empty spec; build one with spec.Builder"))
	}
	m := &Machine{
		cfg:     cfg,
		ports:   &portBus{},
		mmio:    &mmioBus{},
		uarts:   map[spec.SerialPortNumber]*devices.UART{},
		outputs: map[spec.SerialPortNumber]*devices.OutputBuffer{},
		events:  make(chan uint64, board.CPUs+1),
		quit:    make(chan struct{}),
		ctlDone: make(chan struct{}),
		done:    make(chan struct{}),
		phase:   PhaseCreated,
	}
	m.clock.begin(time.Now())
	if err := m.build(); err != nil {
		close(m.ctlDone)
		m.release()
		return nil, opErr(op, err)
	}
	m.clock.lap(phaseBoot, time.Now()) // all build does after the power-on state
	m.clock.finish(time.Now())
	go m.controller()
	return m, nil
}

func (m *Machine) build() error {
	board, boot := m.cfg.Spec.Board(), m.cfg.Spec.Boot()
	img := m.cfg.Image
	if img == nil {
		var err error
		if img, err = lookupImage(boot.Image); err != nil {
			return &ComponentError{"boot.image", fmt.Errorf("%w: %v", ErrNoImage, err)}
		}
	}
	var err error
	if m.image, err = parseImage(img); err != nil {
		return &ComponentError{"boot.image", fmt.Errorf("%w: %q: %v", ErrNoImage, boot.Image, err)}
	}
	m.clock.lap(phaseImage, time.Now())
	if err := m.buildSMBIOS(); err != nil {
		return err
	}
	disks, err := m.openDisks()
	if err != nil {
		return err
	}
	m.clock.lap(phaseDevices, time.Now())

	shell := m.cfg.Shell
	m.clock.prepared = shell != nil
	if shell == nil {
		if shell, err = newShell(); err != nil {
			return err
		}
		defer shell.Close() // when take fails; nothing once taken
	}
	if m.sys, m.vm, m.cpuid, err = shell.take(); err != nil {
		return err
	}
	if limit := vcpuLimit(m.sys); board.CPUs > limit {
		return &ComponentError{"board.cpus", fmt.Errorf("%w: %d vCPUs asked, the host allows %d (KVM_CAP_NR_VCPUS)",
			ErrTooManyVCPUs, board.CPUs, limit)}
	}
	m.clock.lap(phaseKVM, time.Now())
	if m.mem, err = newGuestMemory(m.vm, board.MemoryMiB<<20, shell.claimRAM(board.MemoryMiB<<20)); err != nil {
		return &ComponentError{"board.memory_mb", fmt.Errorf("%d MiB: %w", board.MemoryMiB, err)}
	}
	m.clock.lap(phaseMemory, time.Now())
	if err := m.buildVCPUs(int(board.CPUs)); err != nil {
		return err
	}
	m.clock.lap(phaseKVM, time.Now())
	if err := m.buildDevices(disks); err != nil {
		return err
	}
	m.clock.lap(phaseDevices, time.Now())
	if m.initial, err = m.exportLocked(); err != nil {
		return fmt.Errorf("read power-on state: %w", err)
	}
	m.clock.lap(phasePowerOnState, time.Now())
	if m.cfg.Incoming {
		// A migration target: RAM stays untouched (all zero) and the
		// vCPUs' state comes from ImportState.
		return nil
	}
	return m.bootLocked()
}

// vcpuLimit is the most vCPUs a VM may have here: the recommended
// KVM_CAP_NR_VCPUS (the host's CPUs), else KVM_CAP_MAX_VCPUS, else 4.
func vcpuLimit(sys *kvm.System) uint32 {
	if n := sys.CheckExtension(kvm.KVM_CAP_NR_VCPUS); n > 0 {
		return uint32(n)
	}
	if n := sys.CheckExtension(kvm.KVM_CAP_MAX_VCPUS); n > 0 {
		return uint32(n)
	}
	return 4
}

// buildSMBIOS builds the SMBIOS tables: type 1 from the spec's explicit
// table when it has one, else the one DerivedSMBIOS makes.
func (m *Machine) buildSMBIOS() error {
	t, explicit := m.cfg.Spec.SMBIOS()
	component := "smbios"
	if !explicit {
		t, component = DerivedSMBIOS(m.cfg.Properties, m.cfg.Version), "properties"
	}
	tabs, err := devices.BuildSMBIOS(devices.SystemInfo{
		BIOSVersion:  m.cfg.Version,
		Manufacturer: t.Manufacturer,
		Product:      t.Product,
		Version:      t.Version,
		SerialNumber: t.SerialNumber,
		SKU:          t.SKU,
		Family:       t.Family,
		UUID:         m.cfg.Properties.ID,
	}, smbiosAddr)
	if err != nil {
		return &ComponentError{component, err}
	}
	m.smbios = tabs
	return nil
}

// DerivedSMBIOS is the SMBIOS type 1 table the VMM shows a guest whose spec
// sets none: manufacturer "waggle", product "waggle VM", the VMM's
// version, the instance's name as serial number (its id when it has no
// name), no SKU and no family. A spec whose explicit table equals it shows
// the guest what a spec without one would.
func DerivedSMBIOS(props Properties, version string) spec.SMBIOS {
	serial := props.Name
	if serial == "" {
		serial = uuidString(props.ID)
	}
	return spec.SMBIOS{
		Manufacturer: devices.SMBIOSManufacturer,
		Product:      devices.SMBIOSProduct,
		Version:      version,
		SerialNumber: serial,
	}
}

// buildVCPUs creates the vCPUs, starts their threads and gives them CPUID.
func (m *Machine) buildVCPUs(n int) error {
	for i := 0; i < n; i++ {
		fd, err := m.vm.CreateVCPU(i)
		if err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
		v := &vcpu{m: m, id: uint32(i), fd: fd, run: fd.RunData()}
		startVCPU(v)
		m.vcpus = append(m.vcpus, v)
		cpuid := cpuidFor(m.cpuid, v.id)
		if err := v.call(func(c *kvm.VCPU) error {
			v.cpuid = cpuid
			return c.SetCPUID2(cpuid)
		}); err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
	}
	if sz := m.vm.CheckExtension(kvm.KVM_CAP_XSAVE2); sz > 0 {
		m.caps.xsaveSize = max(sz, 4096)
	} else if m.sys.CheckExtension(kvm.KVM_CAP_XSAVE) != 0 {
		m.caps.xsaveSize = 4096
	}
	m.caps.xcrs = m.sys.CheckExtension(kvm.KVM_CAP_XCRS) != 0
	m.caps.debugRegs = m.sys.CheckExtension(kvm.KVM_CAP_DEBUGREGS) != 0
	list, err := m.sys.MSRIndexList()
	if err != nil {
		return err
	}
	// Keep the MSRs that read back on this host.
	return m.vcpus[0].call(func(c *kvm.VCPU) error {
		m.caps.msrs = readableMSRs(c.GetMSRs, list)
		khz, err := c.GetTSCKHz()
		m.tscKHz = khz
		return err
	})
}

// maxIOMSRs is the most MSRs one KVM_GET_MSRS may carry (the kernel
// refuses 256 or more).
const maxIOMSRs = 255

// readableMSRs returns the indexes of list that get (KVM_GET_MSRS) reads,
// in order. get reads entries in order and stops at the first it cannot
// read, saying how many it read; so each call takes a whole run of
// readable MSRs, and the one that stopped it is left out. Probing a
// host's ~100 MSRs costs a few ioctls instead of one each. An ioctl that
// fails outright leaves out the MSR it began with.
func readableMSRs(get func([]kvm.MsrEntry) (int, error), list []uint32) []uint32 {
	entries := make([]kvm.MsrEntry, len(list))
	for i, idx := range list {
		entries[i].Index = idx
	}
	var ok []uint32
	for i := 0; i < len(entries); {
		chunk := entries[i:min(len(entries), i+maxIOMSRs)]
		n, err := get(chunk)
		if err != nil || n < 0 || n > len(chunk) {
			n = 0
		}
		for _, e := range chunk[:n] {
			ok = append(ok, e.Index)
		}
		i += n
		if n < len(chunk) {
			i++ // entries[i] did not read back
		}
	}
	return ok
}

// buildDevices creates a UART per serial port, a block device per disk and
// the pvpanic device.
func (m *Machine) buildDevices(disks map[spec.Key]*diskBackend) error {
	for _, e := range m.cfg.Spec.Components() {
		switch c := e.Component.(type) {
		case spec.SerialPort:
			var out func([]byte)
			if w := m.cfg.Serial[c.Num]; w != nil {
				ob := devices.NewOutputBuffer(w, 0)
				m.outputs[c.Num] = ob
				out = func(p []byte) {
					m.clock.mark(&m.clock.firstSerial)
					ob.Write(p)
				}
			}
			u, err := devices.NewUART(c.Num, irqLine{m.vm, uint32(c.Num.IRQ())}, out)
			if err != nil {
				return &ComponentError{spec.ComponentPath(e.Key, ""), err}
			}
			m.uarts[c.Num] = u
			m.ports.add(c.Num.IOBase(), devices.UARTPorts, u)
			m.devs = append(m.devs, &device{key: e.Key, kind: devices.UARTStateKind, dev: u})
		case spec.VirtioDisk:
			if err := m.buildDisk(e.Key, c, disks[c.Backend]); err != nil {
				return err
			}
		case spec.FileStorageBackend:
			// Opened in openDisks, used by its disk.
		case spec.PVPanic:
			// No state to migrate: not among m.devs.
			p := devices.NewPVPanic(func() { m.panicked.Store(true) }, slog.Default())
			m.ports.add(spec.PVPanicPort, devices.PVPanicPorts, p)
		default:
			return &ComponentError{spec.ComponentPath(e.Key, ""), fmt.Errorf("unsupported component %T", c)}
		}
	}
	return nil
}

// bootLocked loads the image, writes the boot information and SMBIOS
// tables, and puts vCPU 0 in the Multiboot machine state. The other vCPUs
// keep their power-on state (waiting for INIT/SIPI). The vCPUs are parked.
func (m *Machine) bootLocked() error {
	if err := m.image.load(m.mem); err != nil {
		return err
	}
	if err := writeMultibootInfo(m.mem, m.cfg.Spec.Boot().Cmdline, m.tscKHz); err != nil {
		return err
	}
	if err := m.smbios.WriteTo(m.mem); err != nil {
		return err
	}
	return m.vcpus[0].call(func(c *kvm.VCPU) error {
		var s kvm.Sregs
		if err := c.GetSregs(&s); err != nil {
			return err
		}
		multibootSregs(&s)
		if err := c.SetSregs(&s); err != nil {
			return err
		}
		var r kvm.Regs
		bootRegs(&r, m.image.entry)
		return c.SetRegs(&r)
	})
}

// resetLocked returns the machine to its power-on state and boots again:
// RAM is cleared, vCPUs, irqchip, PIT and devices get their power-on state
// back, and the image is loaded afresh. The vCPUs are parked.
func (m *Machine) resetLocked() error {
	m.resets.Add(1)
	if err := m.mem.zero(); err != nil {
		return err
	}
	if err := m.importLocked(m.initial); err != nil {
		return err
	}
	return m.bootLocked()
}

// controller handles the guest events vCPUs report: it stops the other
// vCPUs and applies the event.
func (m *Machine) controller() {
	defer close(m.ctlDone)
	for {
		select {
		case s := <-m.events:
			m.mu.Lock()
			if m.phase == PhaseRunning && m.session == s {
				r := m.endSessionLocked()
				m.applyLocked(r, true)
			}
			m.mu.Unlock()
		case <-m.quit:
			return
		}
	}
}

// notify tells the controller that a vCPU ended session s on its own.
func (m *Machine) notify(s uint64) {
	select {
	case m.events <- s:
	default: // the controller already has one to handle
	}
}

// startSessionLocked lets the devices work and starts every vCPU.
func (m *Machine) startSessionLocked() {
	m.unquiesceLocked()
	m.session++
	for _, v := range m.vcpus {
		v.startSession(m.session)
	}
}

// endSessionLocked stops every vCPU and returns the most severe event of the
// session (failure, then power-off, then reset).
func (m *Machine) endSessionLocked() sessionResult {
	for _, v := range m.vcpus {
		v.requestStop()
	}
	var worst sessionResult
	for _, v := range m.vcpus {
		if r := <-v.result; r.event > worst.event {
			worst = r
		}
	}
	m.session++
	return worst
}

// applyLocked acts on how a session ended; running says whether the
// machine is to go on running after a reset.
func (m *Machine) applyLocked(r sessionResult, running bool) {
	switch r.event {
	case evNone:
	case evFailed:
		m.finishLocked(Exit{Reason: ExitFailed, Err: r.err})
	case evPowerOff:
		m.finishLocked(Exit{Reason: ExitPoweredOff, Status: r.status})
	case evReset:
		if m.cfg.ExitOnReset {
			m.finishLocked(Exit{Reason: ExitReset})
			return
		}
		if err := m.resetLocked(); err != nil {
			m.finishLocked(Exit{Reason: ExitFailed, Err: fmt.Errorf("reset: %w", err)})
			return
		}
		if running {
			m.startSessionLocked()
		}
	}
}

// finishLocked enters PhaseStopped; the vCPUs are parked.
func (m *Machine) finishLocked(e Exit) {
	m.quiesceLocked()
	m.phase = PhaseStopped
	m.exit = e
	close(m.done)
	slog.Debug("vmm: machine stopped", "exit", e.String())
}

func (m *Machine) quiesceLocked() {
	if m.quiesced {
		return
	}
	m.quiesced = true
	for _, d := range m.devs {
		if q, ok := d.dev.(devices.Quiescer); ok {
			q.Quiesce()
		}
	}
}

func (m *Machine) unquiesceLocked() {
	if !m.quiesced {
		return
	}
	m.quiesced = false
	for _, d := range m.devs {
		if q, ok := d.dev.(devices.Quiescer); ok {
			q.Resume()
		}
	}
}

// begin locks mu and checks a against the state; on success the caller
// holds mu.
func (m *Machine) begin(a Action) error {
	m.mu.Lock()
	if err := check(m.phase, a); err != nil {
		m.mu.Unlock()
		return err
	}
	return nil
}

// Phase returns the lifecycle phase.
func (m *Machine) Phase() Phase {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase
}

// Start runs the vCPUs of a created machine.
func (m *Machine) Start() error {
	if err := m.begin(ActionStart); err != nil {
		return opErr("start", err)
	}
	defer m.mu.Unlock()
	m.clock.mark(&m.clock.started)
	m.phase = PhaseRunning
	m.startSessionLocked()
	return nil
}

// Pause parks every vCPU outside KVM_RUN (completing any I/O in progress)
// and quiesces the devices, draining in-flight disk requests. It returns
// once all of that is done. A guest event that raced with the pause (a
// power-off, say) is applied, so the machine may be Stopped afterwards.
func (m *Machine) Pause() error {
	if err := m.begin(ActionPause); err != nil {
		return opErr("pause", err)
	}
	defer m.mu.Unlock()
	r := m.endSessionLocked()
	m.quiesceLocked()
	m.phase = PhasePaused
	m.applyLocked(r, false)
	return nil
}

// Resume runs a paused machine again.
func (m *Machine) Resume() error {
	if err := m.begin(ActionResume); err != nil {
		return opErr("resume", err)
	}
	defer m.mu.Unlock()
	m.phase = PhaseRunning
	m.startSessionLocked()
	return nil
}

// Reset reboots the VM in place: RAM cleared, power-on state restored, the
// image loaded again. A running machine goes on running, a paused one stays
// paused.
func (m *Machine) Reset() error {
	if err := m.begin(ActionReset); err != nil {
		return opErr("reset", err)
	}
	defer m.mu.Unlock()
	running := m.phase == PhaseRunning
	if running {
		if r := m.endSessionLocked(); r.event == evFailed || r.event == evPowerOff {
			m.applyLocked(r, false)
			return nil
		}
	}
	if err := m.resetLocked(); err != nil {
		m.finishLocked(Exit{Reason: ExitFailed, Err: fmt.Errorf("reset: %w", err)})
		return opErr("reset", err)
	}
	if running {
		m.startSessionLocked()
	}
	return nil
}

// Stop ends the VM for good (Exit reason ExitStopped).
func (m *Machine) Stop() error {
	if err := m.begin(ActionStop); err != nil {
		return opErr("stop", err)
	}
	defer m.mu.Unlock()
	m.stopLocked()
	return nil
}

func (m *Machine) stopLocked() {
	if m.phase == PhaseRunning {
		m.endSessionLocked()
	}
	m.finishLocked(Exit{Reason: ExitStopped})
}

// Done returns a channel closed when the machine has stopped.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Wait blocks until the machine has stopped, or ctx ends, and returns how
// it ended.
func (m *Machine) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-m.done:
		e, _ := m.Exit()
		return e, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Exit returns how the machine ended, and false while it has not.
func (m *Machine) Exit() (Exit, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != PhaseStopped && m.phase != PhaseClosed {
		return Exit{}, false
	}
	return m.exit, true
}

// Close stops the machine if needed and releases everything it holds:
// vCPU threads, KVM descriptors, guest memory, disk files; buffered serial
// output is written out first. Closing a closed machine does nothing.
func (m *Machine) Close() error {
	m.mu.Lock()
	if m.phase == PhaseClosed {
		m.mu.Unlock()
		return nil
	}
	if m.phase != PhaseStopped {
		m.stopLocked()
	}
	m.phase = PhaseClosed
	m.mu.Unlock()
	close(m.quit)
	<-m.ctlDone
	return m.release()
}

// release frees what New acquired; the vCPUs are parked or never ran.
func (m *Machine) release() error {
	for _, v := range m.vcpus {
		close(v.ctl)
		<-v.exited
		v.fd.Close()
	}
	var errs []error
	for _, d := range m.devs {
		if c, ok := d.dev.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	for _, c := range m.closers {
		errs = append(errs, c.Close())
	}
	for _, ob := range m.outputs {
		errs = append(errs, ob.Close())
	}
	if m.vm != nil {
		m.vm.Close()
	}
	if m.mem != nil {
		m.mem.close()
	}
	if m.sys != nil {
		m.sys.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return opErr("close", err)
	}
	return nil
}

// SerialInput queues p for the guest on COM port num, waiting for room in
// the UART's receive FIFO as the guest reads. It returns when every byte is
// queued, ctx ends or the machine stops.
func (m *Machine) SerialInput(ctx context.Context, num spec.SerialPortNumber, p []byte) error {
	if err := m.begin(ActionSerialInput); err != nil {
		return opErr("serial input", err)
	}
	u := m.uarts[num]
	m.mu.Unlock()
	if u == nil {
		return opErr("serial input", fmt.Errorf("the spec has no serial port %v", num))
	}
	for {
		p = p[u.Receive(p):]
		if len(p) == 0 {
			return nil
		}
		select {
		case <-u.RxSpace():
		case <-ctx.Done():
			return opErr("serial input", ctx.Err())
		case <-m.done:
			return opErr("serial input", &NotNowError{Action: ActionSerialInput, Phase: PhaseStopped})
		}
	}
}

// SerialDropped returns how many bytes of output on port num were dropped
// because its writer could not keep up.
func (m *Machine) SerialDropped(num spec.SerialPortNumber) uint64 {
	if ob := m.outputs[num]; ob != nil {
		return ob.Dropped()
	}
	return 0
}

// TSCKHz returns the guest TSC frequency the machine tells its guest
// (tsc_khz= on the command line).
func (m *Machine) TSCKHz() uint32 { return m.tscKHz }

// Stats are counters for debugging.
type Stats struct {
	// UnknownPortReads and UnknownPortWrites count port I/O no device
	// claimed; UnknownMMIOReads and UnknownMMIOWrites likewise for MMIO.
	UnknownPortReads, UnknownPortWrites uint64
	UnknownMMIOReads, UnknownMMIOWrites uint64
	// Sleeps counts paravirtual sleeps; Resets counts resets.
	Sleeps, Resets uint64
}

// Stats returns the debugging counters.
func (m *Machine) Stats() Stats {
	return Stats{
		UnknownPortReads: m.ports.unknownReads.Load(), UnknownPortWrites: m.ports.unknownWrites.Load(),
		UnknownMMIOReads: m.mmio.unknownReads.Load(), UnknownMMIOWrites: m.mmio.unknownWrites.Load(),
		Sleeps: m.sleeps.Load(), Resets: m.resets.Load(),
	}
}
