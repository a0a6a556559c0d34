package devices

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// uartV1Frozen is a version-1 payload built by hand from the version-1
// layout (as a version-1 build wrote it), not by Save, so that it pins the
// old format.
var uartV1Frozen = []byte{
	0x34, 0x12, // DLL, DLM: divisor 0x1234
	UARTIerERBFI | UARTIerETBEI | UARTIerELSI | UARTIerEDSSI, // IER
	0x1b,                                  // LCR: 8 bits, even parity, 1 stop bit
	UARTMcrDTR | UARTMcrRTS | UARTMcrOUT2, // MCR
	UARTLsrOE,                             // LSR errors
	UARTMsrDDCD,                           // MSR deltas
	0x77,                                  // SCR
	UARTFcrFE | 0x80,                      // FCR: FIFOs on, trigger level 8
	1,                                     // THRI pending
	3, 'a', 'b', 'c',                      // rx FIFO
}

func TestUARTStateV1Frozen(t *testing.T) {
	r := newUARTRig(t)
	require.NoError(t, r.u.Restore(Payload{Kind: UARTStateKind, Version: 1, Data: uartV1Frozen}))
	p1, err := r.u.Save(1)
	require.NoError(t, err)
	require.Equal(t, uartV1Frozen, p1.Data, "version 1 re-encodes to itself")
	p2, err := r.u.Save(2)
	require.NoError(t, err)
	want := slices.Concat(uartV1Frozen[:10], []byte{uartIdleMSR}, uartV1Frozen[10:])
	require.Equal(t, want, p2.Data, "version 2 adds the idle modem lines a version-1 source implies")

	require.True(t, r.irq.High())
	require.Equal(t, uint8(0x1b), r.in(UARTRegLCR))
	require.Equal(t, uint8(0x77), r.in(UARTRegSCR))
	require.Equal(t, uint8(UARTMcrDTR|UARTMcrRTS|UARTMcrOUT2), r.in(UARTRegMCR))
	// Interrupts in priority order, each cleared the way a guest clears it.
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirRLSI), r.in(UARTRegIIR))
	require.Equal(t, uint8(UARTLsrOE|UARTLsrDR|UARTLsrTHRE|UARTLsrTEMT), r.in(UARTRegLSR))
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirCTI), r.in(UARTRegIIR), "3 bytes, below the trigger level")
	require.Equal(t, "abc", string([]byte{r.in(UARTRegRBR), r.in(UARTRegRBR), r.in(UARTRegRBR)}))
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirTHRI), r.in(UARTRegIIR))
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirMSI), r.in(UARTRegIIR))
	require.Equal(t, uint8(uartIdleMSR|UARTMsrDDCD), r.in(UARTRegMSR))
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirNoInt), r.in(UARTRegIIR))
	require.False(t, r.irq.High())
	r.outb(UARTRegLCR, UARTLcrDLAB)
	require.Equal(t, uint8(0x34), r.in(UARTRegDLL))
	require.Equal(t, uint8(0x12), r.in(UARTRegDLM))
}

// TestUARTStateV1FromSave: what Save(1) writes, for a target that reads
// only version 1, restores on a fresh UART that then works.
func TestUARTStateV1FromSave(t *testing.T) {
	src := newUARTRig(t)
	uartBusyState(t, src)
	p, err := src.u.Save(1)
	require.NoError(t, err)
	require.Equal(t, Payload{Kind: UARTStateKind, Version: 1, Data: p.Data}, p)
	require.Len(t, p.Data, 11+len("state"))

	dst := newUARTRig(t)
	require.NoError(t, dst.u.Restore(p))
	require.True(t, dst.irq.High(), "restore drives the line")
	for _, off := range []uint16{UARTRegLCR, UARTRegIER, UARTRegMCR, UARTRegSCR, UARTRegMSR, UARTRegIIR, UARTRegLSR} {
		require.Equal(t, src.in(off), dst.in(off), "register %d", off)
	}
	var got []byte
	for dst.in(UARTRegLSR)&UARTLsrDR != 0 {
		got = append(got, dst.in(UARTRegRBR))
	}
	require.Equal(t, "state", string(got))
	require.True(t, dst.irq.High(), "THR empty is still pending")
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirTHRI), dst.in(UARTRegIIR))
	require.False(t, dst.irq.High())

	dst.outb(UARTRegTHR, 'x')
	require.Equal(t, "x", dst.output())
	require.True(t, dst.irq.High())
	dst.in(UARTRegIIR)
	require.False(t, dst.irq.High())
	require.Equal(t, 2, dst.u.Receive([]byte("hi")))
	require.True(t, dst.irq.High())
	require.Equal(t, "hi", string([]byte{dst.in(UARTRegRBR), dst.in(UARTRegRBR)}))
	require.False(t, dst.irq.High())
	dst.outb(UARTRegLCR, UARTLcrDLAB)
	require.Equal(t, uint8(0x34), dst.in(UARTRegDLL))
	require.Equal(t, uint8(0x12), dst.in(UARTRegDLM))
}

// TestUARTStateV2KeepsModemLines: version 2 carries the host's modem lines;
// version 1 cannot, so writing it reports the move to the idle lines a
// version-1 target presents as modem status changes.
func TestUARTStateV2KeepsModemLines(t *testing.T) {
	src := newUARTRig(t)
	src.outb(UARTRegIER, UARTIerEDSSI)
	src.u.SetModemLines(UARTMsrCTS | UARTMsrDSR) // carrier lost
	require.Equal(t, uint8(UARTMsrCTS|UARTMsrDSR|UARTMsrDDCD), src.in(UARTRegMSR))
	require.False(t, src.irq.High())

	p2, err := src.u.Save(0)
	require.NoError(t, err)
	require.Equal(t, uint32(2), p2.Version)
	dst := newUARTRig(t)
	require.NoError(t, dst.u.Restore(p2))
	require.False(t, dst.irq.High())
	require.Equal(t, uint8(UARTMsrCTS|UARTMsrDSR), dst.in(UARTRegMSR), "still no carrier, nothing new")
	again, err := dst.u.Save(0)
	require.NoError(t, err)
	require.Equal(t, p2, again)

	p1, err := src.u.Save(1)
	require.NoError(t, err)
	old := newUARTRig(t)
	require.NoError(t, old.u.Restore(p1))
	require.True(t, old.irq.High(), "carrier came back: modem status interrupt")
	require.Equal(t, uint8(UARTIirMSI), old.in(UARTRegIIR))
	require.Equal(t, uint8(uartIdleMSR|UARTMsrDDCD), old.in(UARTRegMSR))
	require.False(t, old.irq.High())

	// In loopback the lines are hidden: nothing to report yet, and leaving
	// loopback on the target reports the change from the loopback lines to
	// the target's.
	src.outb(UARTRegMCR, UARTMcrLOOP|UARTMcrDTR|UARTMcrRTS|UARTMcrOUT1|UARTMcrOUT2)
	src.in(UARTRegMSR)
	p1, err = src.u.Save(1)
	require.NoError(t, err)
	require.Zero(t, p1.Data[6], "no MSR deltas")
	old = newUARTRig(t)
	require.NoError(t, old.u.Restore(p1))
	old.outb(UARTRegMCR, 0)
	require.Equal(t, uint8(uartIdleMSR|UARTMsrTERI), old.in(UARTRegMSR))
}

// TestUARTStateCoversRegs fails when uartRegs gains a field the state
// encoding does not carry: such a field needs a new state version (see
// uart_state.go) and a line here.
func TestUARTStateCoversRegs(t *testing.T) {
	type change struct {
		set  func(r *uartRegs)
		inV1 bool
	}
	changes := map[string]change{
		"dll":         {func(r *uartRegs) { r.dll = 1 }, true},
		"dlm":         {func(r *uartRegs) { r.dlm = 1 }, true},
		"ier":         {func(r *uartRegs) { r.ier = 1 }, true},
		"lcr":         {func(r *uartRegs) { r.lcr = 1 }, true},
		"mcr":         {func(r *uartRegs) { r.mcr = 1 }, true},
		"lsrErr":      {func(r *uartRegs) { r.lsrErr = 1 }, true},
		"msr":         {func(r *uartRegs) { r.msr = 1 }, true},
		"scr":         {func(r *uartRegs) { r.scr = 1 }, true},
		"fcr":         {func(r *uartRegs) { r.fcr = 1 }, true},
		"thriPending": {func(r *uartRegs) { r.thriPending = true }, true},
		"rx":          {func(r *uartRegs) { r.rx = []byte{1} }, true},
		"modemIn":     {func(r *uartRegs) { r.modemIn = 0 }, false},
	}
	typ := reflect.TypeFor[uartRegs]()
	var names []string
	for i := range typ.NumField() {
		names = append(names, typ.Field(i).Name)
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(changes)), names, "uartRegs changed")

	base := uartState{regs: uartResetRegs()}
	v1, v2 := base.encodeV1(), base.encodeV2()
	for name, c := range changes {
		s := uartState{regs: uartResetRegs()}
		c.set(&s.regs)
		require.NotEqual(t, v2, s.encodeV2(), "version 2 ignores %s", name)
		if c.inV1 {
			require.NotEqual(t, v1, s.encodeV1(), "version 1 ignores %s", name)
		}
	}
}
