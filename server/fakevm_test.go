package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
	"github.com/wagglevm/waggle/vmm/devices"
)

// fakePageSize is the fake VM's page, the same as KVM's.
const fakePageSize = vmm.PageSize

// fakeGuest says how the fake VM's guest program behaves.
type fakeGuest struct {
	// TickEvery makes the guest tick on its own while it runs; zero: it
	// ticks only when a test calls step.
	TickEvery time.Duration
	// WorkPages is how many pages the ticks cycle through (default 32):
	// tick N fills page workBase+N%WorkPages.
	WorkPages uint64
	// ZeroPages is how many pages the guest touches with zeros at boot
	// (touched, yet all zero), right after the work pages.
	ZeroPages uint64
}

// workBase is the first page the guest program writes.
const workBase = 16

// fakeVMs builds fake VMs: RuntimeOptions.NewVM is its New.
type fakeVMs struct {
	guest fakeGuest

	mu sync.Mutex
	// made holds every VM built, in order; guarded by mu, as are the
	// fields below.
	made []*fakeVM
	// gate, when set, holds New until it is closed; entered receives one
	// value each time New starts waiting at it.
	gate    chan struct{}
	entered chan struct{}
	// failNew makes New fail; failStart, failReset and failResume make
	// every VM's Start, Reset and Resume fail.
	failNew, failStart, failReset, failResume error
	// closeGate, when set, holds every Close until it is closed.
	closeGate chan struct{}
}

func newFakeVMs(g fakeGuest) *fakeVMs {
	if g.WorkPages == 0 {
		g.WorkPages = 32
	}
	return &fakeVMs{guest: g}
}

// New builds a fake VM from cfg.
func (f *fakeVMs) New(cfg vmm.Config) (VM, error) {
	f.mu.Lock()
	gate, entered, failNew := f.gate, f.entered, f.failNew
	f.mu.Unlock()
	if gate != nil {
		if entered != nil {
			entered <- struct{}{}
		}
		<-gate
	}
	if failNew != nil {
		return nil, failNew
	}
	v := &fakeVM{
		f: f, cfg: cfg, guest: f.guest, com1: cfg.Serial[spec.COM1],
		size:  cfg.Spec.Board().MemoryMiB << 20,
		phase: vmm.PhaseCreated, pages: map[uint64][]byte{}, dirty: map[uint64]bool{},
		written: map[uint64]int{}, prefaulted: map[uint64]bool{}, done: make(chan struct{}),
	}
	f.mu.Lock()
	f.made = append(f.made, v)
	f.mu.Unlock()
	return v, nil
}

// last returns the VM built last, nil if none.
func (f *fakeVMs) last() *fakeVM {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.made) == 0 {
		return nil
	}
	return f.made[len(f.made)-1]
}

func (f *fakeVMs) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.made)
}

// fakeVM is a VM without KVM: guest RAM is a map of Go byte slices (a page
// that was never written is absent and reads as zero), and its "guest" is a
// goroutine that, while the VM runs, counts ticks, writes a pattern into a
// page per tick and prints "tick N" to COM1. Its state apart from RAM is the
// tick counter, exported as a UART payload so that the real migration code
// carries it.
type fakeVM struct {
	f     *fakeVMs
	cfg   vmm.Config
	guest fakeGuest
	com1  io.Writer // nil: the spec has no COM1
	size  uint64

	mu sync.Mutex
	// phase follows vmm's phases; guarded by mu, as is all below.
	phase vmm.Phase
	pages map[uint64][]byte
	// logging says the guest's writes are tracked (as KVM's dirty log);
	// the VMM's own writes (WriteGuest) always are.
	logging bool
	dirty   map[uint64]bool
	tick    uint64
	exit    vmm.Exit
	done    chan struct{} // closed when the VM has ended
	// stopGuest parks the guest goroutine; guestDone is closed when it
	// has returned. Nil while the guest is not running.
	stopGuest, guestDone chan struct{}
	// afterCollect, when set, is called (without mu) after each
	// CollectDirty with its 1-based count.
	afterCollect func(n int)
	collects     int
	// atStart is RAM when an incoming VM started; atPause RAM at the last
	// Pause.
	atStart, atPause map[uint64][]byte
	// written counts WriteGuest's writes per page; zeroOntoFresh counts
	// pages it filled with zeros that were never written before.
	written       map[uint64]int
	zeroOntoFresh int
	// prefaulted holds the pages PrefaultGuest was asked for.
	prefaulted map[uint64]bool
	// closes counts Close calls that released the VM.
	closes int
	input  []byte
	// stopPhase and stopLogging are the phase and dirty logging when Stop
	// last ended the VM.
	stopPhase   vmm.Phase
	stopLogging bool
}

var _ VM = (*fakeVM)(nil)

func (v *fakeVM) notNow(action string) error {
	return fmt.Errorf("fake vm: %s while %s: %w", action, v.phase, vmm.ErrNotNow)
}

// guestWriteLocked is a write by the guest: dirty only while logging.
func (v *fakeVM) guestWriteLocked(page uint64, fill func(p []byte)) {
	p, ok := v.pages[page]
	if !ok {
		p = make([]byte, fakePageSize)
		v.pages[page] = p
	}
	fill(p)
	if v.logging {
		v.dirty[page] = true
	}
}

// print writes a line to COM1, outside v.mu.
func (v *fakeVM) print(format string, args ...any) {
	if v.com1 != nil {
		fmt.Fprintf(v.com1, format, args...)
	}
}

// bootLocked is the guest's power-on: RAM cleared, the counter at zero,
// the zero pages touched.
func (v *fakeVM) bootLocked() {
	clear(v.pages)
	v.tick = 0
	for i := range v.guest.ZeroPages {
		v.guestWriteLocked(workBase+v.guest.WorkPages+i, func(p []byte) { clear(p) })
	}
}

// patternOf is what tick n writes into its page: n, then a byte of n, never
// zero.
func patternOf(n uint64, p []byte) {
	b := byte(n%251) + 1
	for i := range p {
		p[i] = b
	}
	binary.LittleEndian.PutUint64(p, n)
}

// step runs one tick of the guest, if it runs.
func (v *fakeVM) step() {
	v.mu.Lock()
	if v.phase != vmm.PhaseRunning {
		v.mu.Unlock()
		return
	}
	v.tick++
	n := v.tick
	v.guestWriteLocked(workBase+n%v.guest.WorkPages, func(p []byte) { patternOf(n, p) })
	v.mu.Unlock()
	v.print("tick %d\n", n)
}

// startGuestLocked runs the guest goroutine.
func (v *fakeVM) startGuestLocked() {
	stop, done := make(chan struct{}), make(chan struct{})
	v.stopGuest, v.guestDone = stop, done
	go func() {
		defer close(done)
		if v.guest.TickEvery <= 0 {
			<-stop
			return
		}
		t := time.NewTicker(v.guest.TickEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				v.step()
			}
		}
	}()
}

// parkGuestLocked stops the guest goroutine and returns a channel closed
// once it has returned (wait for it without v.mu).
func (v *fakeVM) parkGuestLocked() chan struct{} {
	if v.stopGuest == nil {
		return nil
	}
	close(v.stopGuest)
	done := v.guestDone
	v.stopGuest, v.guestDone = nil, nil
	return done
}

func waitClosed(ch chan struct{}) {
	if ch != nil {
		<-ch
	}
}

// endLocked ends the VM with e.
func (v *fakeVM) endLocked(e vmm.Exit) chan struct{} {
	v.phase, v.exit = vmm.PhaseStopped, e
	close(v.done)
	return v.parkGuestLocked()
}

// hookErr reads one of f's fail* hooks.
func (f *fakeVMs) hookErr(hook *error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *hook
}

func (v *fakeVM) Start() error {
	if err := v.f.hookErr(&v.f.failStart); err != nil {
		return err
	}
	v.mu.Lock()
	if v.phase != vmm.PhaseCreated {
		defer v.mu.Unlock()
		return v.notNow("start")
	}
	if v.cfg.Incoming {
		v.atStart = copyPages(v.pages)
	} else {
		v.bootLocked()
	}
	v.phase = vmm.PhaseRunning
	v.startGuestLocked()
	incoming := v.cfg.Incoming
	v.mu.Unlock()
	if !incoming {
		v.print("ticker ready\n")
	}
	return nil
}

func (v *fakeVM) Pause() error {
	v.mu.Lock()
	if v.phase != vmm.PhaseRunning {
		defer v.mu.Unlock()
		return v.notNow("pause")
	}
	v.phase = vmm.PhasePaused
	done := v.parkGuestLocked()
	v.atPause = copyPages(v.pages)
	v.mu.Unlock()
	waitClosed(done)
	return nil
}

func (v *fakeVM) Resume() error {
	if err := v.f.hookErr(&v.f.failResume); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.phase != vmm.PhasePaused {
		return v.notNow("resume")
	}
	v.phase = vmm.PhaseRunning
	v.startGuestLocked()
	return nil
}

func (v *fakeVM) Reset() error {
	if err := v.f.hookErr(&v.f.failReset); err != nil {
		return err
	}
	v.mu.Lock()
	if v.phase != vmm.PhaseRunning && v.phase != vmm.PhasePaused {
		defer v.mu.Unlock()
		return v.notNow("reset")
	}
	v.bootLocked()
	v.mu.Unlock()
	v.print("ticker ready\n")
	return nil
}

func (v *fakeVM) Stop() error {
	v.mu.Lock()
	if v.phase == vmm.PhaseStopped || v.phase == vmm.PhaseClosed {
		defer v.mu.Unlock()
		return v.notNow("stop")
	}
	v.stopPhase, v.stopLogging = v.phase, v.logging
	done := v.endLocked(vmm.Exit{Reason: vmm.ExitStopped})
	v.mu.Unlock()
	waitClosed(done)
	return nil
}

// powerOff is the guest powering off with status.
func (v *fakeVM) powerOff(status uint32) {
	v.mu.Lock()
	if v.phase != vmm.PhaseRunning {
		v.mu.Unlock()
		return
	}
	done := v.endLocked(vmm.Exit{Reason: vmm.ExitPoweredOff, Status: status})
	v.mu.Unlock()
	waitClosed(done)
}

// crash is the guest failing (a triple fault, say).
func (v *fakeVM) crash(err error) {
	v.mu.Lock()
	if v.phase != vmm.PhaseRunning {
		v.mu.Unlock()
		return
	}
	done := v.endLocked(vmm.Exit{Reason: vmm.ExitFailed, Err: err})
	v.mu.Unlock()
	waitClosed(done)
}

// zeroPage is the guest zeroing a page of its RAM.
func (v *fakeVM) zeroPage(page uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.guestWriteLocked(page, func(p []byte) { clear(p) })
}

func (v *fakeVM) Wait(ctx context.Context) (vmm.Exit, error) {
	select {
	case <-v.done:
		e, _ := v.Exit()
		return e, nil
	case <-ctx.Done():
		return vmm.Exit{}, ctx.Err()
	}
}

func (v *fakeVM) Exit() (vmm.Exit, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.phase != vmm.PhaseStopped && v.phase != vmm.PhaseClosed {
		return vmm.Exit{}, false
	}
	return v.exit, true
}

func (v *fakeVM) Close() error {
	v.f.mu.Lock()
	gate := v.f.closeGate
	v.f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	v.mu.Lock()
	if v.phase == vmm.PhaseClosed {
		v.mu.Unlock()
		return nil
	}
	var done chan struct{}
	if v.phase != vmm.PhaseStopped {
		done = v.endLocked(vmm.Exit{Reason: vmm.ExitStopped})
	}
	v.phase = vmm.PhaseClosed
	v.closes++
	v.mu.Unlock()
	waitClosed(done)
	return nil
}

// closed reports whether the VM was released.
func (v *fakeVM) closed() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.phase == vmm.PhaseClosed
}

// SerialInput takes p as the guest would, and the guest echoes it.
func (v *fakeVM) SerialInput(_ context.Context, num spec.SerialPortNumber, p []byte) error {
	v.mu.Lock()
	if v.phase != vmm.PhaseRunning && v.phase != vmm.PhasePaused {
		defer v.mu.Unlock()
		return v.notNow("serial input")
	}
	v.input = append(v.input, p...)
	v.mu.Unlock()
	v.print("echo %s\n", p)
	return nil
}

func (v *fakeVM) Regions() []vmm.Region { return []vmm.Region{{GPA: 0, Size: v.size}} }

// access runs f over the pages [gpa, gpa+n) with the offset in the page
// and in the caller's buffer.
func (v *fakeVM) access(gpa uint64, n int, f func(page uint64, off, bufOff, length int)) error {
	if gpa > v.size || uint64(n) > v.size-gpa {
		return fmt.Errorf("fake vm: %d bytes at %#x are outside RAM", n, gpa)
	}
	for done := 0; done < n; {
		a := gpa + uint64(done)
		off := int(a % fakePageSize)
		l := min(fakePageSize-off, n-done)
		f(a/fakePageSize, off, done, l)
		done += l
	}
	return nil
}

func (v *fakeVM) ReadGuest(p []byte, gpa uint64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.phase == vmm.PhaseClosed {
		return v.notNow("read guest memory")
	}
	return v.access(gpa, len(p), func(page uint64, off, bo, l int) {
		if pg, ok := v.pages[page]; ok {
			copy(p[bo:bo+l], pg[off:off+l])
		} else {
			clear(p[bo : bo+l])
		}
	})
}

func (v *fakeVM) WriteGuest(p []byte, gpa uint64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.phase == vmm.PhaseClosed {
		return v.notNow("write guest memory")
	}
	return v.access(gpa, len(p), func(page uint64, off, bo, l int) {
		pg, ok := v.pages[page]
		if !ok {
			if !slices.ContainsFunc(p[bo:bo+l], func(b byte) bool { return b != 0 }) {
				v.zeroOntoFresh++
			}
			pg = make([]byte, fakePageSize)
			v.pages[page] = pg
		}
		copy(pg[off:off+l], p[bo:bo+l])
		v.dirty[page] = true
		v.written[page]++
	})
}

// ViewGuest hands f a copy: the fake's RAM is a map.
func (v *fakeVM) ViewGuest(gpa uint64, n int, f func(ram []byte) error) error {
	buf := make([]byte, n)
	if err := v.ReadGuest(buf, gpa); err != nil {
		return err
	}
	return f(buf)
}

// PrefaultGuest records the range: the fake's RAM needs no populating.
func (v *fakeVM) PrefaultGuest(gpa uint64, n int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.phase == vmm.PhaseClosed {
		return v.notNow("prefault guest memory")
	}
	return v.access(gpa, n, func(page uint64, _, _, _ int) { v.prefaulted[page] = true })
}

// FillGuest reads the bytes into a buffer first: the fake's RAM is a map.
func (v *fakeVM) FillGuest(r io.Reader, gpa uint64, n int) error {
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return err
	}
	return v.WriteGuest(buf, gpa)
}

// bitmap returns the pages of set as the one region's bitmap.
func (v *fakeVM) bitmap(set func(yield func(uint64) bool)) []vmm.DirtyBitmap {
	r := v.Regions()[0]
	bm := vmm.DirtyBitmap{Region: r, Bits: make([]uint64, (r.Pages()+63)/64)}
	for p := range set {
		bm.Bits[p/64] |= 1 << (p % 64)
	}
	return []vmm.DirtyBitmap{bm}
}

func (v *fakeVM) TouchedPages() ([]vmm.DirtyBitmap, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.bitmap(maps.Keys(v.pages)), nil
}

func (v *fakeVM) EnableDirtyLog() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.logging = true
	clear(v.dirty)
	return nil
}

func (v *fakeVM) CollectDirty() ([]vmm.DirtyBitmap, error) {
	v.mu.Lock()
	bm := v.bitmap(maps.Keys(v.dirty))
	clear(v.dirty)
	v.collects++
	n, hook := v.collects, v.afterCollect
	v.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return bm, nil
}

func (v *fakeVM) DisableDirtyLog() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.logging = false
	return nil
}

// fakeStateKey is the device key of the guest's counter in the state.
const fakeStateKey = "com1"

func (v *fakeVM) ExportStateVersions(want map[string]uint32) (*vmm.State, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.phase != vmm.PhasePaused && v.phase != vmm.PhaseCreated {
		return nil, v.notNow("export state")
	}
	version := want[devices.UARTStateKind]
	if version == 0 {
		version = 2
	}
	data := binary.LittleEndian.AppendUint64([]byte("fakeguest"), v.tick)
	st := &vmm.State{Devices: []vmm.DeviceState{{
		Key: fakeStateKey, Payload: devices.Payload{Kind: devices.UARTStateKind, Version: version, Data: data},
	}}}
	for i := range v.cfg.Spec.Board().CPUs {
		st.VCPUs = append(st.VCPUs, &vmm.VCPUState{ID: i})
	}
	for i := range st.Irqchip {
		st.Irqchip[i].ChipID = uint32(i) // as KVM numbers them
	}
	return st, nil
}

func (v *fakeVM) ImportState(s *vmm.State) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.phase != vmm.PhasePaused && v.phase != vmm.PhaseCreated {
		return v.notNow("import state")
	}
	for _, d := range s.Devices {
		if d.Key != fakeStateKey {
			continue
		}
		data, ok := bytes.CutPrefix(d.Payload.Data, []byte("fakeguest"))
		if !ok || len(data) != 8 {
			return errors.New("fake vm: import state: not a fake guest's state")
		}
		v.tick = binary.LittleEndian.Uint64(data)
		return nil
	}
	return errors.New("fake vm: import state: no guest state")
}

// ram returns a copy of RAM now.
func (v *fakeVM) ram() map[uint64][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return copyPages(v.pages)
}

// ticks returns the guest's counter.
func (v *fakeVM) ticks() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.tick
}

func copyPages(m map[uint64][]byte) map[uint64][]byte {
	out := make(map[uint64][]byte, len(m))
	for k, p := range m {
		out[k] = bytes.Clone(p)
	}
	return out
}

// nonZero drops the all-zero pages: RAM compared by content, since a page
// never written and a page of zeros read the same.
func nonZero(m map[uint64][]byte) map[uint64][]byte {
	out := map[uint64][]byte{}
	for k, p := range m {
		if slices.ContainsFunc(p, func(b byte) bool { return b != 0 }) {
			out[k] = p
		}
	}
	return out
}
