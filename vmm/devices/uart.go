package devices

import (
	"fmt"
	"sync"

	"github.com/wagglevm/waggle/spec"
)

// UART register offsets from the COM port's base, as the 16550A data sheet
// names them. Several share an offset: which one is meant depends on the
// direction of the access and on LCR's DLAB bit.
const (
	UARTRegRBR = 0 // receiver buffer (read, DLAB=0)
	UARTRegTHR = 0 // transmitter holding (write, DLAB=0)
	UARTRegDLL = 0 // divisor latch, low byte (DLAB=1)
	UARTRegIER = 1 // interrupt enable (DLAB=0)
	UARTRegDLM = 1 // divisor latch, high byte (DLAB=1)
	UARTRegIIR = 2 // interrupt identification (read)
	UARTRegFCR = 2 // FIFO control (write)
	UARTRegLCR = 3 // line control
	UARTRegMCR = 4 // modem control
	UARTRegLSR = 5 // line status
	UARTRegMSR = 6 // modem status
	UARTRegSCR = 7 // scratch
)

// UARTPorts is how many consecutive I/O ports a UART occupies.
const UARTPorts = 8

// IER bits.
const (
	UARTIerERBFI = 0x01 // received data available interrupt
	UARTIerETBEI = 0x02 // transmitter holding register empty interrupt
	UARTIerELSI  = 0x04 // receiver line status interrupt
	UARTIerEDSSI = 0x08 // modem status interrupt
	uartIerMask  = 0x0f
)

// IIR values. Bit 0 clear means an interrupt is pending; bits 1-3 say which;
// bits 6-7 are set while the FIFOs are enabled.
const (
	UARTIirNoInt   = 0x01 // no interrupt pending
	UARTIirMSI     = 0x00 // modem status
	UARTIirTHRI    = 0x02 // transmitter holding register empty
	UARTIirRDI     = 0x04 // received data available
	UARTIirRLSI    = 0x06 // receiver line status
	UARTIirCTI     = 0x0c // character timeout (FIFO mode)
	UARTIirFIFOs   = 0xc0 // FIFOs enabled
	uartIirIDMask  = 0x0e
	uartIirPending = 0x01
)

// FCR bits.
const (
	UARTFcrFE      = 0x01 // FIFO enable
	UARTFcrRFR     = 0x02 // receiver FIFO reset
	UARTFcrXFR     = 0x04 // transmitter FIFO reset
	UARTFcrTrigger = 0xc0 // receiver trigger level: 1, 4, 8 or 14 bytes
)

// LCR bits.
const (
	UARTLcrDLAB = 0x80 // divisor latch access
)

// MCR bits.
const (
	UARTMcrDTR  = 0x01
	UARTMcrRTS  = 0x02
	UARTMcrOUT1 = 0x04
	UARTMcrOUT2 = 0x08
	UARTMcrLOOP = 0x10 // loopback
	uartMcrMask = 0x1f
)

// LSR bits.
const (
	UARTLsrDR   = 0x01 // data ready
	UARTLsrOE   = 0x02 // overrun error
	UARTLsrPE   = 0x04 // parity error
	UARTLsrFE   = 0x08 // framing error
	UARTLsrBI   = 0x10 // break interrupt
	UARTLsrTHRE = 0x20 // transmitter holding register empty
	UARTLsrTEMT = 0x40 // transmitter empty
	UARTLsrFIFO = 0x80 // error in receiver FIFO
	// uartLsrErrors are the bits that raise a line status interrupt and that
	// reading LSR clears.
	uartLsrErrors = UARTLsrOE | UARTLsrPE | UARTLsrFE | UARTLsrBI
)

// MSR bits.
const (
	UARTMsrDCTS   = 0x01 // delta clear to send
	UARTMsrDDSR   = 0x02 // delta data set ready
	UARTMsrTERI   = 0x04 // trailing edge ring indicator
	UARTMsrDDCD   = 0x08 // delta data carrier detect
	UARTMsrCTS    = 0x10
	UARTMsrDSR    = 0x20
	UARTMsrRI     = 0x40
	UARTMsrDCD    = 0x80
	uartMsrDelta  = 0x0f
	uartMsrStatus = 0xf0
)

// UARTFIFOSize is the depth of the 16550A's receive FIFO.
const UARTFIFOSize = 16

// uartIdleMSR is the modem input lines of a new UART, as MSR status bits: a
// host that is always there (carrier, data set ready, clear to send), not
// ringing.
const uartIdleMSR = UARTMsrDCD | UARTMsrDSR | UARTMsrCTS

// UART is an emulated 16550A serial port with a 16-byte receive FIFO.
//
// Transmission is instant: a byte the guest writes to THR goes straight to
// the output sink, so THR and the transmitter are always empty. The sink is
// called with the UART's lock held, once per byte, and must not block: wrap
// a writer that may block in an OutputBuffer. Host input is queued with
// Receive; what does not fit is left to the caller. A host may drive the
// modem input lines (CTS, DSR, RI, DCD) with SetModemLines; a new UART
// presents a host that is always there.
//
// The interrupt line follows IIR (level semantics): high while an enabled
// interrupt is pending. OUT2 does not gate it.
//
// UART implements PortIO (ports relative to the base are decoded from the
// absolute port number) and Stateful. Its methods are safe to call from
// several goroutines at once.
type UART struct {
	base uint16
	irq  IRQLine // may be nil
	out  func(b []byte)

	// rxSpace gets a token (without blocking) whenever the guest takes bytes
	// out of the receive FIFO.
	rxSpace chan struct{}

	mu sync.Mutex
	// regs is the register state; guarded by mu.
	regs uartRegs
	// irqLevel is the level last driven on irq; guarded by mu.
	irqLevel bool
	// irqKnown is false until irq has been driven once (and after a
	// failure), so the next update drives it; guarded by mu.
	irqKnown bool
	// txByte is a one-byte buffer handed to out; guarded by mu.
	txByte [1]byte
}

// uartRegs is the guest-visible state of a UART. It is also what Save
// encodes: all of it in state version 2, all but modemIn in version 1 (see
// uart_state.go). A new field needs a new state version.
type uartRegs struct {
	dll, dlm uint8
	ier      uint8 // only uartIerMask bits
	lcr      uint8
	mcr      uint8 // only uartMcrMask bits
	lsrErr   uint8 // the error bits of LSR (uartLsrErrors)
	msr      uint8 // the delta bits of MSR; status bits are derived
	scr      uint8
	fcr      uint8 // UARTFcrFE and UARTFcrTrigger bits only
	// modemIn is the modem input lines as the host drives them, as MSR
	// status bits (uartMsrStatus bits only). MSR's status bits are these
	// outside loopback; in loopback they follow MCR instead.
	modemIn uint8
	// thriPending is the THR-empty interrupt condition: set when THR becomes
	// empty (instantly after a write) or ETBEI is enabled, cleared by reading
	// IIR while it is the reported source or by writing THR.
	thriPending bool
	// rx is the receive FIFO, oldest byte first; at most UARTFIFOSize bytes,
	// or 1 while the FIFOs are disabled.
	rx []byte
}

// NewUART returns the UART at COM port num, with its interrupt on irq (which
// may be nil) and the bytes the guest transmits going to out (which may be
// nil to discard them). out must not block; see UART.
func NewUART(num spec.SerialPortNumber, irq IRQLine, out func(b []byte)) (*UART, error) {
	if num < spec.COM1 || num > spec.COM4 {
		return nil, fmt.Errorf("new UART: %v is not a COM port", num)
	}
	return NewUARTAt(num.IOBase(), irq, out), nil
}

// NewUARTAt returns a UART at I/O port base; see NewUART.
func NewUARTAt(base uint16, irq IRQLine, out func(b []byte)) *UART {
	if out == nil {
		out = func([]byte) {}
	}
	u := &UART{base: base, irq: irq, out: out, rxSpace: make(chan struct{}, 1)}
	u.regs = uartResetRegs()
	return u
}

// uartResetRegs is the power-on register state: 8N1 at 9600 baud (divisor
// 12), nothing pending.
func uartResetRegs() uartRegs {
	return uartRegs{dll: 12, lcr: 0x03, modemIn: uartIdleMSR, rx: make([]byte, 0, UARTFIFOSize)}
}

// Base returns the first I/O port of the UART.
func (u *UART) Base() uint16 { return u.base }

// PortRead reads the register at port. Accesses wider than a byte read the
// register at port into the first byte and zeros into the rest.
func (u *UART) PortRead(port uint16, data []byte) {
	clear(data)
	if len(data) == 0 || port-u.base >= UARTPorts {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	data[0] = u.readLocked(port - u.base)
	u.updateIRQLocked()
}

// PortWrite writes the first byte of data to the register at port.
func (u *UART) PortWrite(port uint16, data []byte) {
	if len(data) == 0 || port-u.base >= UARTPorts {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.writeLocked(port-u.base, data[0])
	u.updateIRQLocked()
}

// Receive queues host input bytes for the guest to read and returns how many
// fit in the receive FIFO; the caller keeps the rest (it may wait on
// RxSpace and try again, or drop them). It never blocks. In loopback mode
// the port hears only itself, and Receive takes nothing.
func (u *UART) Receive(p []byte) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.regs.mcr&UARTMcrLOOP != 0 {
		return 0
	}
	n := min(len(p), u.rxCapLocked()-len(u.regs.rx))
	if n <= 0 {
		return 0
	}
	u.regs.rx = append(u.regs.rx, p[:n]...)
	u.updateIRQLocked()
	return n
}

// SetModemLines sets the modem input lines the host presents to the guest,
// given as MSR status bits (UARTMsrCTS, UARTMsrDSR, UARTMsrRI, UARTMsrDCD;
// other bits are ignored). A host may drop DCD when its console goes away,
// or CTS to hold back a guest that uses hardware flow control. Outside
// loopback a change sets MSR's delta bits and may raise a modem status
// interrupt; in loopback the guest sees the lines once it leaves loopback.
func (u *UART) SetModemLines(lines uint8) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.msrStatusLocked()
	u.regs.modemIn = lines & uartMsrStatus
	u.noteModemChangeLocked(old, u.msrStatusLocked())
	u.updateIRQLocked()
}

// RxSpace returns a channel that receives a value whenever the guest reads
// bytes out of the receive FIFO, making room for Receive. At most one value
// waits in it.
func (u *UART) RxSpace() <-chan struct{} { return u.rxSpace }

func (u *UART) rxCapLocked() int {
	if u.regs.fcr&UARTFcrFE == 0 {
		return 1
	}
	return UARTFIFOSize
}

// readLocked reads register off.
func (u *UART) readLocked(off uint16) uint8 {
	r := &u.regs
	dlab := r.lcr&UARTLcrDLAB != 0
	switch off {
	case UARTRegRBR:
		if dlab {
			return r.dll
		}
		if len(r.rx) == 0 {
			return 0
		}
		b := r.rx[0]
		r.rx = append(r.rx[:0], r.rx[1:]...)
		u.signalRxSpace()
		return b
	case UARTRegIER:
		if dlab {
			return r.dlm
		}
		return r.ier
	case UARTRegIIR:
		iir := u.iirLocked()
		if iir&uartIirIDMask == UARTIirTHRI {
			r.thriPending = false
		}
		return iir
	case UARTRegLCR:
		return r.lcr
	case UARTRegMCR:
		return r.mcr
	case UARTRegLSR:
		lsr := r.lsrErr | UARTLsrTHRE | UARTLsrTEMT
		if len(r.rx) > 0 {
			lsr |= UARTLsrDR
		}
		r.lsrErr = 0
		return lsr
	case UARTRegMSR:
		msr := r.msr | u.msrStatusLocked()
		r.msr = 0
		return msr
	case UARTRegSCR:
		return r.scr
	}
	return 0
}

// writeLocked writes v to register off.
func (u *UART) writeLocked(off uint16, v uint8) {
	r := &u.regs
	dlab := r.lcr&UARTLcrDLAB != 0
	switch off {
	case UARTRegTHR:
		if dlab {
			r.dll = v
			return
		}
		if r.mcr&UARTMcrLOOP != 0 {
			u.loopbackLocked(v)
		} else {
			u.txByte[0] = v
			u.out(u.txByte[:])
		}
		// The byte leaves at once, so THR is empty again.
		r.thriPending = true
	case UARTRegIER:
		if dlab {
			r.dlm = v
			return
		}
		v &= uartIerMask
		if v&UARTIerETBEI != 0 && r.ier&UARTIerETBEI == 0 {
			// THR is always empty: enabling its interrupt raises it.
			r.thriPending = true
		}
		r.ier = v
	case UARTRegFCR:
		if v&UARTFcrFE != r.fcr&UARTFcrFE || v&UARTFcrRFR != 0 {
			// Switching the FIFOs on or off clears them, as does a
			// receiver FIFO reset.
			r.rx = r.rx[:0]
			u.signalRxSpace()
		}
		r.fcr = v & (UARTFcrFE | UARTFcrTrigger)
	case UARTRegLCR:
		r.lcr = v
	case UARTRegMCR:
		old := u.msrStatusLocked()
		r.mcr = v & uartMcrMask
		u.noteModemChangeLocked(old, u.msrStatusLocked())
	case UARTRegLSR:
		// Read-only (writing it is a factory test mode); ignored.
	case UARTRegMSR:
		// Read-only; ignored.
	case UARTRegSCR:
		r.scr = v
	}
}

// signalRxSpace tells a waiting host input goroutine that the receive FIFO
// has room.
func (u *UART) signalRxSpace() {
	select {
	case u.rxSpace <- struct{}{}:
	default:
	}
}

// loopbackLocked receives a byte the guest transmitted in loopback mode.
func (u *UART) loopbackLocked(v uint8) {
	r := &u.regs
	if len(r.rx) >= u.rxCapLocked() {
		r.lsrErr |= UARTLsrOE
		return
	}
	r.rx = append(r.rx, v)
}

// msrStatusLocked returns MSR's status bits (4-7): in loopback they follow
// MCR's outputs, otherwise the host's modem lines.
func (u *UART) msrStatusLocked() uint8 {
	m := u.regs.mcr
	if m&UARTMcrLOOP == 0 {
		return u.regs.modemIn
	}
	var s uint8
	if m&UARTMcrRTS != 0 {
		s |= UARTMsrCTS
	}
	if m&UARTMcrDTR != 0 {
		s |= UARTMsrDSR
	}
	if m&UARTMcrOUT1 != 0 {
		s |= UARTMsrRI
	}
	if m&UARTMcrOUT2 != 0 {
		s |= UARTMsrDCD
	}
	return s
}

// noteModemChangeLocked sets MSR's delta bits for a change of status bits.
func (u *UART) noteModemChangeLocked(old, cur uint8) {
	u.regs.msr |= uartModemDeltas(old, cur)
}

// uartModemDeltas returns the MSR delta bits that a change of status bits
// from old to cur sets.
func uartModemDeltas(old, cur uint8) uint8 {
	var d uint8
	ch := old ^ cur
	if ch&UARTMsrCTS != 0 {
		d |= UARTMsrDCTS
	}
	if ch&UARTMsrDSR != 0 {
		d |= UARTMsrDDSR
	}
	if old&UARTMsrRI != 0 && cur&UARTMsrRI == 0 {
		d |= UARTMsrTERI
	}
	if ch&UARTMsrDCD != 0 {
		d |= UARTMsrDDCD
	}
	return d
}

// rxTriggerLocked returns the receive FIFO's trigger level.
func (u *UART) rxTriggerLocked() int {
	return [...]int{1, 4, 8, 14}[u.regs.fcr>>6]
}

// iirLocked returns IIR: the highest-priority pending, enabled interrupt.
func (u *UART) iirLocked() uint8 {
	r := &u.regs
	var fifo uint8
	if r.fcr&UARTFcrFE != 0 {
		fifo = UARTIirFIFOs
	}
	switch {
	case r.ier&UARTIerELSI != 0 && r.lsrErr != 0:
		return fifo | UARTIirRLSI
	case r.ier&UARTIerERBFI != 0 && len(r.rx) > 0:
		// Below the trigger level a real 16550A reports a character
		// timeout after four character times; we have no clock and report
		// it at once.
		if fifo != 0 && len(r.rx) < u.rxTriggerLocked() {
			return fifo | UARTIirCTI
		}
		return fifo | UARTIirRDI
	case r.ier&UARTIerETBEI != 0 && r.thriPending:
		return fifo | UARTIirTHRI
	case r.ier&UARTIerEDSSI != 0 && r.msr&uartMsrDelta != 0:
		return fifo | UARTIirMSI
	}
	return fifo | UARTIirNoInt
}

// updateIRQLocked drives the interrupt line to match IIR.
func (u *UART) updateIRQLocked() {
	if u.irq == nil {
		return
	}
	level := u.iirLocked()&uartIirPending == 0
	if u.irqKnown && level == u.irqLevel {
		return
	}
	if err := u.irq.SetLevel(level); err != nil {
		// Try again on the next register access.
		u.irqKnown = false
		return
	}
	u.irqLevel, u.irqKnown = level, true
}
