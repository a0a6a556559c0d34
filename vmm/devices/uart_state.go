package devices

// UARTStateKind is the Payload kind of a UART's saved state.
const UARTStateKind = "uart16550a"

// UART state encoding versions. Save writes either; Restore reads either.
//
// Version 1 carries every register the first UART kept. Its builds
// hard-wired the modem input lines (CTS, DSR, RI, DCD) to a host that is
// always there, so MSR's status bits outside loopback were derived, not
// saved.
//
// Version 2 adds those input lines, which a host may set with
// SetModemLines (the VMM does not yet: they stay at the idle value, and
// version 2 carries that). They are the one piece of a 16550A's state that version 1
// cannot express: a guest that saw carrier drop (or CTS fall, holding back
// its output) before a migration must still see it dropped after.
const (
	uartStateV1 = 1
	uartStateV2 = 2
	// uartStateVersion is the newest UART state encoding.
	uartStateVersion = uartStateV2
)

// uartState is a UART's saved state, apart from the live device. Both
// encodings are little-endian; every field is a u8.
//
// Version 1:
//
//	0-8    dll, dlm, ier, lcr, mcr, lsr errors, msr deltas, scr, fcr
//	9      thri pending (0 or 1)
//	10     rx FIFO length n (<= 16, or <= 1 with the FIFOs off)
//	11-    rx FIFO bytes, n of them, oldest first
//
// Version 2:
//
//	0-8    as version 1
//	9      thri pending (0 or 1)
//	10     modem input lines: MSR status bits CTS 0x10, DSR 0x20, RI 0x40,
//	       DCD 0x80; the low four bits are zero
//	11     rx FIFO length n (<= 16, or <= 1 with the FIFOs off)
//	12-    rx FIFO bytes, n of them, oldest first
//
// Reading version 1 sets the modem lines to uartIdleMSR: a version-1
// source presented a host that is always there. Writing version 1 (for a
// target that reads nothing newer, whose host presents those same idle
// lines) folds the move from the source's lines to the idle ones into MSR's
// delta bits, as if the lines had changed while the VM was paused; in
// loopback the guest does not see the lines, and leaving loopback on the
// target reports the change then.
type uartState struct {
	regs uartRegs
}

// Largest encodings: 11 or 12 fixed bytes and a full rx FIFO.
const (
	uartStateV1Max = 11 + UARTFIFOSize
	uartStateV2Max = 12 + UARTFIFOSize
)

func (s *uartState) encodeV1() []byte {
	r := s.regs
	if r.mcr&UARTMcrLOOP == 0 {
		r.msr |= uartModemDeltas(r.modemIn, uartIdleMSR)
	}
	e := stateEncoder{b: make([]byte, 0, uartStateV1Max)}
	encodeUARTRegs(&e, &r)
	encodeUARTFIFO(&e, &r)
	return e.b
}

func (s *uartState) encodeV2() []byte {
	r := &s.regs
	e := stateEncoder{b: make([]byte, 0, uartStateV2Max)}
	encodeUARTRegs(&e, r)
	e.u8(r.modemIn)
	encodeUARTFIFO(&e, r)
	return e.b
}

func decodeUARTStateV1(b []byte) (uartState, error) {
	d := stateDecoder{b: b}
	var r uartRegs
	decodeUARTRegs(&d, &r)
	r.modemIn = uartIdleMSR
	decodeUARTFIFO(&d, &r)
	if err := d.finish(); err != nil {
		return uartState{}, err
	}
	return uartState{regs: r}, nil
}

func decodeUARTStateV2(b []byte) (uartState, error) {
	d := stateDecoder{b: b}
	var r uartRegs
	decodeUARTRegs(&d, &r)
	r.modemIn = d.u8("modem lines")
	if r.modemIn&^uartMsrStatus != 0 {
		d.fail("modem lines are %#x, have bits outside %#x", r.modemIn, uartMsrStatus)
	}
	decodeUARTFIFO(&d, &r)
	if err := d.finish(); err != nil {
		return uartState{}, err
	}
	return uartState{regs: r}, nil
}

// encodeUARTRegs writes bytes 0-9 of every version: the registers and
// thri pending.
func encodeUARTRegs(e *stateEncoder, r *uartRegs) {
	for _, v := range []uint8{r.dll, r.dlm, r.ier, r.lcr, r.mcr, r.lsrErr, r.msr, r.scr, r.fcr} {
		e.u8(v)
	}
	e.bool(r.thriPending)
}

// encodeUARTFIFO writes the end of every version: the rx FIFO.
func encodeUARTFIFO(e *stateEncoder, r *uartRegs) {
	e.u8(uint8(len(r.rx)))
	e.b = append(e.b, r.rx...)
}

// decodeUARTRegs reads what encodeUARTRegs writes.
func decodeUARTRegs(d *stateDecoder, r *uartRegs) {
	for _, f := range []struct {
		p    *uint8
		name string
		mask uint8
	}{
		{&r.dll, "DLL", 0xff}, {&r.dlm, "DLM", 0xff}, {&r.ier, "IER", uartIerMask},
		{&r.lcr, "LCR", 0xff}, {&r.mcr, "MCR", uartMcrMask}, {&r.lsrErr, "LSR errors", uartLsrErrors},
		{&r.msr, "MSR deltas", uartMsrDelta}, {&r.scr, "SCR", 0xff},
		{&r.fcr, "FCR", UARTFcrFE | UARTFcrTrigger},
	} {
		*f.p = d.u8(f.name)
		if *f.p&^f.mask != 0 {
			d.fail("%s is %#x, has bits outside %#x", f.name, *f.p, f.mask)
		}
	}
	r.thriPending = d.bool("THRI pending")
}

// decodeUARTFIFO reads what encodeUARTFIFO writes; r.fcr must be read.
func decodeUARTFIFO(d *stateDecoder, r *uartRegs) {
	n := int(d.u8("rx FIFO length"))
	limit := UARTFIFOSize
	if r.fcr&UARTFcrFE == 0 {
		limit = 1
	}
	if n > limit {
		d.fail("rx FIFO holds %d bytes, at most %d", n, limit)
		n = 0
	}
	r.rx = make([]byte, 0, UARTFIFOSize)
	r.rx = append(r.rx, d.take(n, "rx FIFO")...)
}

// Save encodes the UART's state in version 1 or 2 (0 means 2, the newest).
// Version 1 is for a target that reads nothing newer; see uartState for
// what it loses.
func (u *UART) Save(version uint32) (Payload, error) {
	v, err := checkSaveVersion(UARTStateKind, version, uartStateV1, uartStateV2)
	if err != nil {
		return Payload{}, err
	}
	u.mu.Lock()
	s := uartState{regs: u.regs}
	var data []byte
	if v == uartStateV1 {
		data = s.encodeV1()
	} else {
		data = s.encodeV2()
	}
	u.mu.Unlock()
	return Payload{Kind: UARTStateKind, Version: v, Data: data}, nil
}

// Restore replaces the UART's state with p, of version 1 or 2, and drives
// the interrupt line to match. On error the UART is unchanged.
func (u *UART) Restore(p Payload) error {
	err := checkPayload(p, UARTStateKind,
		stateVersion{uartStateV1, uartStateV1Max}, stateVersion{uartStateV2, uartStateV2Max})
	if err != nil {
		return err
	}
	decode := decodeUARTStateV2
	if p.Version == uartStateV1 {
		decode = decodeUARTStateV1
	}
	s, err := decode(p.Data)
	if err != nil {
		return &StateError{Op: "restore", Kind: p.Kind, Version: p.Version, Err: err}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.regs = s.regs
	u.irqKnown = false
	u.updateIRQLocked()
	u.signalRxSpace()
	return nil
}
