package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/vmm/kvm"
)

// kickSignal interrupts KVM_RUN on a vCPU thread. It is sent with tgkill to
// that one thread, after kvm_run.immediate_exit is set, so a kick that lands
// just before KVM_RUN is entered is not lost. The Go runtime's handler
// ignores it (unless a program asks signal.Notify for every signal, in which
// case it receives these too). A real-time signal keeps clear of SIGUSR1/2,
// which programs use.
const kickSignal = unix.Signal(40)

// Guest-visible ports handled by the vCPU loop itself (vmm/guest/ABI.md).
const (
	portExit     = 0xf4
	portSleep    = 0x500
	portKBC      = 0x64
	portResetCtl = 0xcf9

	kbcPulseReset = 0xfe
	resetCtlReset = 0x04 // the RST_CPU bit of 0xcf9

	// maxSleep bounds one paravirtual sleep.
	maxSleep = 10 * time.Second
)

// event is what ended a vCPU's run session, besides a kick.
type event int

const (
	evNone event = iota
	evReset
	evPowerOff
	evFailed
)

// sessionResult is how a run session ended.
type sessionResult struct {
	event  event
	status uint32 // evPowerOff
	err    error  // evFailed
}

// vcpuCmd is a request to a vCPU goroutine: run a session, or call fn on the
// vCPU's thread while it is parked.
type vcpuCmd struct {
	run     bool
	session uint64
	fn      func(c *kvm.VCPU) error
	reply   chan error
}

// vcpu is one vCPU and the goroutine, locked to its OS thread, that runs
// it.
//
// The goroutine is parked (waiting on ctl) except during a run session,
// which the Machine starts with a run command and ends with requestStop; the
// session's end is reported on result. Only the goroutine runs KVM_RUN;
// the vCPU's state is read and written only while it is parked, by the
// goroutine (call) or, for migration's export and import, by the holder of
// the machine's lock, which spares a thread wake-up (see VCPUState).
type vcpu struct {
	m   *Machine
	id  uint32
	fd  *kvm.VCPU
	run *kvm.Run
	// tid is the thread id, set before New returns and fixed afterwards.
	tid int
	// tscKHz is the vCPU's TSC rate (0 until known); read and written only
	// while the vCPU is parked (inside call, or by the holder of the
	// machine's lock during export and import), so it needs no lock.
	tscKHz uint32
	// cpuid is the CPUID table last set on the vCPU; likewise.
	cpuid []kvm.CPUIDEntry2

	ctl    chan vcpuCmd
	result chan sessionResult // capacity 1
	kick   chan struct{}      // capacity 1; wakes a paravirtual sleep
	exited chan struct{}      // closed when the goroutine returns

	// stopReq asks the running session to end.
	stopReq atomic.Bool
	// pendingIO says the last exit was I/O or MMIO, which KVM completes
	// only on the next KVM_RUN. Used only by the goroutine.
	pendingIO bool
	// ran says the vCPU has entered KVM_RUN at least once, after which KVM
	// refuses to change its CPUID. Written by the goroutine during a run
	// session, read by import once the session's end was received on
	// result (which orders the two).
	ran bool
	// sleepTimer serves paravirtual sleeps; used only by the goroutine.
	sleepTimer *time.Timer
}

// startVCPU starts v's goroutine and waits until it knows its thread id.
func startVCPU(v *vcpu) {
	v.ctl = make(chan vcpuCmd)
	v.result = make(chan sessionResult, 1)
	v.kick = make(chan struct{}, 1)
	v.exited = make(chan struct{})
	ready := make(chan struct{})
	go v.loop(ready)
	<-ready
}

func (v *vcpu) loop(ready chan<- struct{}) {
	defer close(v.exited)
	// The thread stays locked until the goroutine ends, and then dies with
	// it: it carried a vCPU and received kicks, so it is not reused.
	runtime.LockOSThread()
	v.tid = unix.Gettid()
	v.sleepTimer = time.NewTimer(time.Hour)
	v.sleepTimer.Stop()
	close(ready)
	for c := range v.ctl {
		if c.run {
			r := v.runSession()
			v.result <- r
			if r.event != evNone {
				v.m.notify(c.session)
			}
			continue
		}
		c.reply <- c.fn(v.fd)
	}
}

// call runs fn on the vCPU's thread; the vCPU must be parked.
func (v *vcpu) call(fn func(c *kvm.VCPU) error) error {
	reply := make(chan error, 1)
	v.ctl <- vcpuCmd{fn: fn, reply: reply}
	return <-reply
}

// startSession starts a run session; the vCPU must be parked.
func (v *vcpu) startSession(session uint64) {
	v.stopReq.Store(false)
	v.run.SetImmediateExit(false)
	select {
	case <-v.kick:
	default:
	}
	v.ctl <- vcpuCmd{run: true, session: session}
}

// requestStop asks the running session to end: immediate_exit first, then
// the signal, so KVM_RUN either sees the flag on entry or is interrupted.
// A paravirtual sleep is woken through kick.
func (v *vcpu) requestStop() {
	v.stopReq.Store(true)
	v.run.SetImmediateExit(true)
	select {
	case v.kick <- struct{}{}:
	default:
	}
	unix.Tgkill(unix.Getpid(), v.tid, kickSignal)
}

// runSession runs the guest until a stop request or a guest event. It
// completes any pending I/O before returning, so the state read afterwards
// is consistent.
func (v *vcpu) runSession() sessionResult {
	r := v.runUntilEvent()
	if r.event != evFailed && v.pendingIO {
		// Let KVM finish the instruction without running further.
		v.run.SetImmediateExit(true)
		if err := v.fd.Run(); err != nil && !errors.Is(err, unix.EINTR) && r.event == evNone {
			r = sessionResult{event: evFailed, err: err}
		}
	}
	v.pendingIO = false
	v.run.SetImmediateExit(false)
	return r
}

func (v *vcpu) runUntilEvent() sessionResult {
	v.ran = true
	for !v.stopReq.Load() {
		err := v.fd.Run()
		v.pendingIO = false
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue // a kick, or another signal: the loop condition decides
			}
			return sessionResult{event: evFailed, err: err}
		}
		v.m.clock.mark(&v.m.clock.firstExit)
		if r := v.handleExit(); r.event != evNone {
			return r
		}
	}
	return sessionResult{}
}

func (v *vcpu) handleExit() sessionResult {
	switch reason := v.run.ExitReason; reason {
	case kvm.KVM_EXIT_IO:
		v.pendingIO = true
		io, data := v.run.IO()
		size := int(io.Size)
		if data == nil || size == 0 {
			return v.fail(fmt.Errorf("malformed KVM_EXIT_IO at port %#x", io.Port))
		}
		for i := 0; i < int(io.Count); i++ {
			d := data[i*size : (i+1)*size]
			if io.Direction == kvm.KVM_EXIT_IO_OUT {
				if r := v.portOut(io.Port, d); r.event != evNone {
					return r
				}
			} else {
				v.m.ports.read(io.Port, d)
			}
		}
	case kvm.KVM_EXIT_MMIO:
		v.pendingIO = true
		mmio := v.run.MMIO()
		n := min(int(mmio.Len), len(mmio.Data))
		if mmio.IsWrite != 0 {
			v.m.mmio.write(mmio.PhysAddr, mmio.Data[:n])
		} else {
			v.m.mmio.read(mmio.PhysAddr, mmio.Data[:n])
		}
	case kvm.KVM_EXIT_INTR, kvm.KVM_EXIT_IRQ_WINDOW_OPEN, kvm.KVM_EXIT_HLT:
		// Nothing to do: the loop re-enters (with the in-kernel irqchip HLT
		// does not exit; if it does, KVM_RUN blocks until an interrupt).
	case kvm.KVM_EXIT_SHUTDOWN:
		return v.fail(fmt.Errorf("%w%s", ErrTripleFault, v.whereShutdown()))
	case kvm.KVM_EXIT_INTERNAL_ERROR:
		in := v.run.Internal()
		nd := min(int(in.NData), len(in.Data))
		return v.fail(fmt.Errorf("%w: suberror %d (%s), data %#x%s", ErrEmulation, in.Suberror,
			internalErrorName(in.Suberror), in.Data[:nd], v.where()))
	case kvm.KVM_EXIT_FAIL_ENTRY:
		fe := v.run.FailEntry()
		return v.fail(fmt.Errorf("%w: hardware reason %#x on host CPU %d", ErrEntryFailed,
			fe.HardwareEntryFailureReason, fe.CPU))
	case kvm.KVM_EXIT_SYSTEM_EVENT:
		switch se := v.run.SystemEvent(); se.Type {
		case kvm.KVM_SYSTEM_EVENT_SHUTDOWN:
			return sessionResult{event: evPowerOff}
		case kvm.KVM_SYSTEM_EVENT_RESET:
			return sessionResult{event: evReset}
		default:
			return v.fail(unhandledExit("guest system event %d", se.Type))
		}
	default:
		return v.fail(unhandledExit("unexpected KVM exit reason %d%s", reason, v.where()))
	}
	return sessionResult{}
}

func (v *vcpu) fail(err error) sessionResult {
	return sessionResult{event: evFailed, err: fmt.Errorf("vCPU %d: %w", v.id, err)}
}

// where describes the guest instruction pointer, for failure reasons.
func (v *vcpu) where() string {
	var r kvm.Regs
	if v.fd.GetRegs(&r) != nil {
		return ""
	}
	return fmt.Sprintf(" at rip %#x", r.RIP)
}

// whereShutdown is where for a triple fault. On AMD hosts KVM puts the
// vCPU through INIT before it reports the shutdown (the VMCB is undefined
// after one), so the registers then hold the reset state, not the place the
// guest failed: naming the reset vector there would send whoever reads the
// failure to an address the guest never ran.
func (v *vcpu) whereShutdown() string {
	var r kvm.Regs
	var s kvm.Sregs
	if v.fd.GetRegs(&r) != nil || v.fd.GetSregs(&s) != nil {
		return ""
	}
	return shutdownPlace(r.RIP, s.CS)
}

// The registers INIT leaves: CS:IP = F000:FFF0 with CS's base 0xFFFF0000.
const (
	initRIP        = 0xfff0
	initCSSelector = 0xf000
	initCSBase     = 0xffff0000
)

// shutdownPlace says where a triple fault happened, given the vCPU's
// instruction pointer and CS as read after the exit.
func shutdownPlace(rip uint64, cs kvm.Segment) string {
	if rip == initRIP && cs.Selector == initCSSelector && cs.Base == initCSBase {
		return " (where is unknown: KVM reset the vCPU before reporting the shutdown)"
	}
	return fmt.Sprintf(" at rip %#x", rip)
}

func internalErrorName(sub uint32) string {
	switch sub {
	case kvm.KVM_INTERNAL_ERROR_EMULATION:
		return "emulation failure"
	case kvm.KVM_INTERNAL_ERROR_SIMUL_EX:
		return "exception during exception delivery"
	case kvm.KVM_INTERNAL_ERROR_DELIVERY_EV:
		return "event delivery failure"
	case kvm.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
		return "unexpected exit reason"
	}
	return "unknown"
}

// portOut handles an OUT of data to port.
func (v *vcpu) portOut(port uint16, data []byte) sessionResult {
	switch port {
	case portExit:
		return sessionResult{event: evPowerOff, status: leUint(data)}
	case portSleep:
		v.sleep(time.Duration(leUint(data)) * time.Microsecond)
	case portKBC:
		if data[0] == kbcPulseReset {
			return sessionResult{event: evReset}
		}
		v.m.ports.unknownWrites.Add(1)
	case portResetCtl:
		if data[0]&resetCtlReset != 0 {
			return sessionResult{event: evReset}
		}
	default:
		v.m.ports.write(port, data)
		if v.m.panicked.Load() {
			// The write reached the pvpanic device: the guest
			// panicked.
			return sessionResult{event: evFailed, err: ErrGuestPanicked}
		}
	}
	return sessionResult{}
}

// sleep blocks the vCPU thread for d, or until a kick.
func (v *vcpu) sleep(d time.Duration) {
	if d <= 0 || v.stopReq.Load() {
		return
	}
	v.m.sleeps.Add(1)
	v.sleepTimer.Reset(min(d, maxSleep))
	select {
	case <-v.sleepTimer.C:
	case <-v.kick:
		v.sleepTimer.Stop()
	}
}

// leUint reads a 1-, 2- or 4-byte little-endian value.
func leUint(b []byte) uint32 {
	switch len(b) {
	case 1:
		return uint32(b[0])
	case 2:
		return uint32(binary.LittleEndian.Uint16(b))
	case 4:
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}
