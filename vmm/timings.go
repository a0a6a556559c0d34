package vmm

import (
	"sync/atomic"
	"time"
)

// StartTimings says where the time of building and starting one machine
// went: the phases of New, as New ran them, and when Start, the guest's
// first exit and its first serial byte came, each as a duration since New
// began. A mark that has not happened yet is zero. Each machine has its
// own (see Machine.StartTimings); reading them costs the VM nothing.
type StartTimings struct {
	// Began is when New began; the marks below count from it.
	Began time.Time

	// Image is finding and parsing the boot image.
	Image time.Duration
	// Devices is building the SMBIOS tables, opening the disk files and
	// creating the devices (UARTs, virtio disks, pvpanic).
	Devices time.Duration
	// KVM is opening /dev/kvm and checking its extensions and CPUID,
	// creating the VM with its TSS, identity map, irqchip and PIT (unless
	// a shell made ahead did: see Prepared), and creating the vCPUs
	// (threads, CPUID, the MSR list, the TSC rate).
	KVM time.Duration
	// Memory is mapping guest RAM and registering it with KVM as memory
	// slots.
	Memory time.Duration
	// PowerOnState is reading back the power-on state a reset restores.
	PowerOnState time.Duration
	// Boot is loading the image into RAM and writing the Multiboot
	// information, the SMBIOS tables and vCPU 0's boot registers (zero for
	// a migration target, which boots nothing).
	Boot time.Duration
	// New is the whole of New: the phases above and what lies between.
	New time.Duration
	// Prepared says New built on a shell made ahead (Config.Shell), so
	// KVM left out opening /dev/kvm and creating the VM.
	Prepared bool

	// Started is when the first Start set the vCPUs running.
	Started time.Duration
	// FirstExit is when a vCPU's KVM_RUN first returned with an exit of
	// the guest (signals that interrupt KVM_RUN do not count).
	FirstExit time.Duration
	// FirstSerial is when the guest first wrote a byte to a UART whose
	// output goes somewhere (a port of Config.Serial), before the buffer
	// between the UART and that writer.
	FirstSerial time.Duration
}

// buildPhase names a phase of New.
type buildPhase int

const (
	phaseImage buildPhase = iota
	phaseDevices
	phaseKVM
	phaseMemory
	phasePowerOnState
	phaseBoot
	numBuildPhases
)

// startClock records a machine's StartTimings. New's goroutine writes began,
// last and phases before New returns, and reads of them happen after. The
// marks are written later, from other goroutines (Start's caller, a vCPU
// thread), once each: they are atomic, nanoseconds since began, zero until
// set.
type startClock struct {
	began  time.Time
	last   time.Time
	phases [numBuildPhases]time.Duration
	built  time.Duration
	// prepared: New took a shell made ahead.
	prepared bool

	started, firstExit, firstSerial atomic.Int64
}

// begin starts the clock: New begins.
func (c *startClock) begin(now time.Time) {
	c.began, c.last = now, now
}

// lap adds the time since the previous lap (or since begin) to phase p.
func (c *startClock) lap(p buildPhase, now time.Time) {
	c.phases[p] += now.Sub(c.last)
	c.last = now
}

// finish records the end of New.
func (c *startClock) finish(now time.Time) {
	c.built = now.Sub(c.began)
}

// mark sets the mark at to now, unless it is set already. Once set it costs
// an atomic load.
func (c *startClock) mark(at *atomic.Int64) {
	if at.Load() != 0 {
		return
	}
	// At least 1 ns: zero means "not yet".
	at.CompareAndSwap(0, max(int64(time.Since(c.began)), 1))
}

// timings is what the clock holds now.
func (c *startClock) timings() StartTimings {
	return StartTimings{
		Began:        c.began,
		Image:        c.phases[phaseImage],
		Devices:      c.phases[phaseDevices],
		KVM:          c.phases[phaseKVM],
		Memory:       c.phases[phaseMemory],
		PowerOnState: c.phases[phasePowerOnState],
		Boot:         c.phases[phaseBoot],
		New:          c.built,
		Prepared:     c.prepared,
		Started:      time.Duration(c.started.Load()),
		FirstExit:    time.Duration(c.firstExit.Load()),
		FirstSerial:  time.Duration(c.firstSerial.Load()),
	}
}

// StartTimings returns where the time of building and starting the machine
// went, so far. It is safe to call at any time, from any goroutine.
func (m *Machine) StartTimings() StartTimings { return m.clock.timings() }
