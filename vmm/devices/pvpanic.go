package devices

import (
	"log/slog"
	"sync/atomic"
)

// The pvpanic register's bits, as QEMU's pvpanic device defines them.
const (
	// PVPanicPanicked: the guest panicked.
	PVPanicPanicked = 1 << 0
	// PVPanicCrashLoaded: the guest has loaded a crash kernel (kdump) and
	// goes on to run it.
	PVPanicCrashLoaded = 1 << 1
	// PVPanicEvents is what a read of the register returns: the events
	// the device supports.
	PVPanicEvents = PVPanicPanicked | PVPanicCrashLoaded
)

// PVPanicPorts is how many ports the device claims from its base (the spec
// places it at spec.PVPanicPort, 0x505, as QEMU does).
const PVPanicPorts = 1

// PVPanic is the pvpanic ISA device: one 8-bit register on one I/O port. A
// read returns PVPanicEvents. A write with PVPanicPanicked set calls the
// device's panic handler, which ends the VM (the VMM makes it a failure
// the server reports as guest_panicked); a write with only
// PVPanicCrashLoaded set is logged (the first one only: a guest cannot
// flood the log) and otherwise ignored, as is any other bit. An access
// wider than a byte reaches the register with its low byte only: the bytes
// above it fall on ports nothing claims (reads see 0xff).
//
// It has no guest-visible state: nothing the guest writes is kept, so it
// is not a Stateful device and a migration carries no payload for it. Safe
// for concurrent use when its handler is.
type PVPanic struct {
	onPanic func()
	log     *slog.Logger
	// crashLogged says a crash-loaded event was logged.
	crashLogged atomic.Bool
}

// NewPVPanic returns a pvpanic device that calls onPanic (which must not
// block, and may be called from several vCPUs at once) each time the guest
// writes the panicked bit, and logs a crash-loaded event to log (nil:
// slog.Default()).
func NewPVPanic(onPanic func(), log *slog.Logger) *PVPanic {
	if log == nil {
		log = slog.Default()
	}
	return &PVPanic{onPanic: onPanic, log: log}
}

// PortRead returns the supported events in the low byte.
func (p *PVPanic) PortRead(_ uint16, data []byte) {
	if len(data) == 0 {
		return
	}
	data[0] = PVPanicEvents
	for i := 1; i < len(data); i++ {
		data[i] = 0xff
	}
}

// PortWrite acts on the events in the low byte: panicked first (a write
// with both bits is a panic), then crash loaded.
func (p *PVPanic) PortWrite(_ uint16, data []byte) {
	if len(data) == 0 {
		return
	}
	switch v := data[0]; {
	case v&PVPanicPanicked != 0:
		p.log.Warn("pvpanic: the guest reported a panic")
		p.onPanic()
	case v&PVPanicCrashLoaded != 0:
		if !p.crashLogged.Swap(true) {
			p.log.Info("pvpanic: the guest loaded a crash kernel; ignored")
		}
	}
}
