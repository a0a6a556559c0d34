package devices

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// uartRig is a UART on COM1 with a fake IRQ and a captured output.
type uartRig struct {
	u   *UART
	irq *fakeIRQ
	mu  sync.Mutex
	out bytes.Buffer // guarded by mu
}

func newUARTRig(t *testing.T) *uartRig {
	t.Helper()
	r := &uartRig{irq: &fakeIRQ{}}
	u, err := NewUART(spec.COM1, r.irq, func(b []byte) {
		r.mu.Lock()
		r.out.Write(b)
		r.mu.Unlock()
	})
	require.NoError(t, err)
	r.u = u
	return r
}

func (r *uartRig) in(off uint16) uint8 {
	var b [1]byte
	r.u.PortRead(r.u.Base()+off, b[:])
	return b[0]
}

func (r *uartRig) outb(off uint16, v uint8) { r.u.PortWrite(r.u.Base()+off, []byte{v}) }

func (r *uartRig) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

func TestUARTBadPort(t *testing.T) {
	_, err := NewUART(spec.SerialPortNumber(0), nil, nil)
	require.ErrorContains(t, err, "not a COM port")
	_, err = NewUART(spec.SerialPortNumber(5), nil, nil)
	require.Error(t, err)
	u, err := NewUART(spec.COM2, nil, nil)
	require.NoError(t, err)
	require.Equal(t, uint16(0x2f8), u.Base())
}

func TestUARTRegisters(t *testing.T) {
	r := newUARTRig(t)
	require.Equal(t, uint8(0x03), r.in(UARTRegLCR), "power-on 8N1")
	require.Equal(t, uint8(UARTLsrTHRE|UARTLsrTEMT), r.in(UARTRegLSR))
	require.Equal(t, uint8(UARTIirNoInt), r.in(UARTRegIIR))
	require.Equal(t, uint8(uartIdleMSR), r.in(UARTRegMSR))

	// Divisor latch behind DLAB.
	r.outb(UARTRegLCR, UARTLcrDLAB|0x03)
	r.outb(UARTRegDLL, 0x01)
	r.outb(UARTRegDLM, 0x02)
	require.Equal(t, uint8(0x01), r.in(UARTRegDLL))
	require.Equal(t, uint8(0x02), r.in(UARTRegDLM))
	r.outb(UARTRegLCR, 0x03)
	require.Equal(t, uint8(0), r.in(UARTRegIER), "IER is not the divisor")
	r.outb(UARTRegIER, 0xff)
	require.Equal(t, uint8(uartIerMask), r.in(UARTRegIER), "IER keeps only its four bits")
	require.Empty(t, r.output(), "DLL writes are not output")

	r.outb(UARTRegSCR, 0x5a)
	require.Equal(t, uint8(0x5a), r.in(UARTRegSCR))
	r.outb(UARTRegMCR, 0xff)
	require.Equal(t, uint8(uartMcrMask), r.in(UARTRegMCR))

	// Wider reads fill the rest with zeros; ports outside the UART are ignored.
	buf := []byte{0xaa, 0xaa}
	r.u.PortRead(r.u.Base()+UARTRegSCR, buf)
	require.Equal(t, []byte{0x5a, 0}, buf)
	r.u.PortWrite(r.u.Base()+UARTPorts, []byte{1})
	r.u.PortWrite(r.u.Base()-1, []byte{1})
	buf = []byte{0xaa}
	r.u.PortRead(r.u.Base()+UARTPorts, buf)
	require.Equal(t, []byte{0}, buf)
	r.u.PortWrite(r.u.Base(), nil)
	r.u.PortRead(r.u.Base(), nil)
}

func TestUARTTransmit(t *testing.T) {
	r := newUARTRig(t)
	for _, c := range []byte("hello\n") {
		r.outb(UARTRegTHR, c)
	}
	require.Equal(t, "hello\n", r.output())
	require.Equal(t, uint8(UARTLsrTHRE|UARTLsrTEMT), r.in(UARTRegLSR)&(UARTLsrTHRE|UARTLsrTEMT))
}

func TestUARTReceiveFIFO(t *testing.T) {
	r := newUARTRig(t)
	// FIFOs off: a one-byte holding register.
	require.Equal(t, 1, r.u.Receive([]byte("ab")))
	require.Equal(t, uint8(UARTLsrDR), r.in(UARTRegLSR)&UARTLsrDR)
	require.Equal(t, uint8('a'), r.in(UARTRegRBR))
	require.Zero(t, r.in(UARTRegLSR)&UARTLsrDR)
	select {
	case <-r.u.RxSpace():
	default:
		t.Fatal("reading RBR did not signal RxSpace")
	}

	r.outb(UARTRegFCR, UARTFcrFE)
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirNoInt), r.in(UARTRegIIR))
	data := []byte("0123456789abcdefXYZ")
	require.Equal(t, UARTFIFOSize, r.u.Receive(data))
	require.Equal(t, 0, r.u.Receive(data[16:]), "full FIFO takes nothing")
	require.Zero(t, r.in(UARTRegLSR)&UARTLsrOE, "host input that does not fit is not an overrun")
	var got []byte
	for r.in(UARTRegLSR)&UARTLsrDR != 0 {
		got = append(got, r.in(UARTRegRBR))
	}
	require.Equal(t, data[:16], got)
	require.Equal(t, uint8(0), r.in(UARTRegRBR), "empty RBR reads 0")

	// FCR receiver reset clears the FIFO.
	require.Equal(t, 3, r.u.Receive([]byte("xyz")))
	r.outb(UARTRegFCR, UARTFcrFE|UARTFcrRFR)
	require.Zero(t, r.in(UARTRegLSR)&UARTLsrDR)
	// Switching the FIFOs off clears them too.
	require.Equal(t, 3, r.u.Receive([]byte("xyz")))
	r.outb(UARTRegFCR, 0)
	require.Zero(t, r.in(UARTRegLSR)&UARTLsrDR)
	require.Equal(t, uint8(UARTIirNoInt), r.in(UARTRegIIR))
}

func TestUARTInterrupts(t *testing.T) {
	r := newUARTRig(t)
	r.outb(UARTRegFCR, UARTFcrFE|0x40) // trigger level 4
	r.u.Receive([]byte("a"))
	require.False(t, r.irq.High(), "receive interrupt not enabled")

	r.outb(UARTRegIER, UARTIerERBFI)
	require.True(t, r.irq.High())
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirCTI), r.in(UARTRegIIR), "below the trigger level: timeout")
	r.u.Receive([]byte("bcd"))
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirRDI), r.in(UARTRegIIR), "at the trigger level: data available")
	for range 4 {
		require.True(t, r.irq.High())
		r.in(UARTRegRBR)
	}
	require.False(t, r.irq.High(), "an empty FIFO lowers the line")

	// THR empty: raised when enabled, cleared by reading IIR, raised again
	// by each transmitted byte.
	r.outb(UARTRegIER, UARTIerERBFI|UARTIerETBEI)
	require.True(t, r.irq.High())
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirTHRI), r.in(UARTRegIIR))
	require.False(t, r.irq.High())
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirNoInt), r.in(UARTRegIIR))
	r.outb(UARTRegTHR, 'x')
	require.True(t, r.irq.High())
	// Received data outranks THR empty.
	r.u.Receive([]byte("1234"))
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirRDI), r.in(UARTRegIIR))
	require.True(t, r.irq.High())
	r.outb(UARTRegFCR, UARTFcrFE|UARTFcrRFR|0x40)
	require.Equal(t, uint8(UARTIirFIFOs|UARTIirTHRI), r.in(UARTRegIIR))
	require.False(t, r.irq.High())
	// Disabling all sources lowers the line.
	r.outb(UARTRegTHR, 'y')
	require.True(t, r.irq.High())
	r.outb(UARTRegIER, 0)
	require.False(t, r.irq.High())
}

func TestUARTLoopbackAndLineStatus(t *testing.T) {
	r := newUARTRig(t)
	r.in(UARTRegMSR)
	r.outb(UARTRegIER, UARTIerELSI|UARTIerERBFI|UARTIerEDSSI)
	r.outb(UARTRegMCR, UARTMcrLOOP)
	// Entering loopback with all outputs off drops CTS, DSR and DCD.
	require.True(t, r.irq.High(), "modem status change")
	require.Equal(t, uint8(UARTIirMSI), r.in(UARTRegIIR))
	require.Equal(t, uint8(UARTMsrDCTS|UARTMsrDDSR|UARTMsrDDCD), r.in(UARTRegMSR))
	require.False(t, r.irq.High(), "reading MSR clears the deltas")

	r.outb(UARTRegMCR, UARTMcrLOOP|UARTMcrDTR|UARTMcrRTS|UARTMcrOUT1|UARTMcrOUT2)
	require.Equal(t, uint8(UARTMsrCTS|UARTMsrDSR|UARTMsrRI|UARTMsrDCD|UARTMsrDCTS|UARTMsrDDSR|UARTMsrDDCD), r.in(UARTRegMSR))
	r.outb(UARTRegMCR, UARTMcrLOOP|UARTMcrDTR|UARTMcrRTS|UARTMcrOUT2)
	require.Equal(t, uint8(UARTMsrTERI), r.in(UARTRegMSR)&uartMsrDelta, "trailing edge of RI")

	require.Equal(t, 0, r.u.Receive([]byte("host")), "loopback hears only itself")
	r.outb(UARTRegTHR, 'A')
	r.outb(UARTRegTHR, 'B') // FIFOs off: overruns the holding register
	require.Empty(t, r.output(), "loopback output stays inside")
	require.True(t, r.irq.High())
	require.Equal(t, uint8(UARTIirRLSI), r.in(UARTRegIIR), "line status outranks data")
	lsr := r.in(UARTRegLSR)
	require.Equal(t, uint8(UARTLsrOE|UARTLsrDR), lsr&(UARTLsrOE|UARTLsrDR))
	require.Zero(t, r.in(UARTRegLSR)&UARTLsrOE, "reading LSR clears OE")
	require.Equal(t, uint8(UARTIirRDI), r.in(UARTRegIIR))
	require.Equal(t, uint8('A'), r.in(UARTRegRBR))
	require.False(t, r.irq.High())

	r.outb(UARTRegMCR, 0)
	r.outb(UARTRegTHR, 'C')
	require.Equal(t, "C", r.output())
}

func TestUARTModemLines(t *testing.T) {
	r := newUARTRig(t)
	require.Equal(t, uint8(uartIdleMSR), r.in(UARTRegMSR), "a new UART presents a host that is always there")
	r.outb(UARTRegIER, UARTIerEDSSI)
	require.False(t, r.irq.High())

	r.u.SetModemLines(UARTMsrCTS | UARTMsrDSR | UARTMsrRI) // carrier drops, ring starts
	require.True(t, r.irq.High())
	require.Equal(t, uint8(UARTIirMSI), r.in(UARTRegIIR))
	require.Equal(t, uint8(UARTMsrCTS|UARTMsrDSR|UARTMsrRI|UARTMsrDDCD), r.in(UARTRegMSR), "a rising RI sets no delta")
	require.False(t, r.irq.High(), "reading MSR clears the deltas")
	r.u.SetModemLines(UARTMsrCTS | UARTMsrDSR | UARTMsrRI)
	require.False(t, r.irq.High(), "no change, no interrupt")
	r.u.SetModemLines(UARTMsrCTS | UARTMsrDSR | 0x0f) // ring stops; low bits ignored
	require.Equal(t, uint8(UARTMsrCTS|UARTMsrDSR|UARTMsrTERI), r.in(UARTRegMSR))

	// In loopback the lines follow MCR; the host's are seen on leaving it.
	r.outb(UARTRegMCR, UARTMcrLOOP|UARTMcrDTR|UARTMcrRTS)
	r.in(UARTRegMSR)
	r.u.SetModemLines(0)
	require.False(t, r.irq.High())
	require.Equal(t, uint8(UARTMsrCTS|UARTMsrDSR), r.in(UARTRegMSR))
	r.outb(UARTRegMCR, 0)
	require.True(t, r.irq.High())
	require.Equal(t, uint8(UARTMsrDCTS|UARTMsrDDSR), r.in(UARTRegMSR))
}

func TestUARTNilIRQAndFailingIRQ(t *testing.T) {
	u := NewUARTAt(0x3f8, nil, nil)
	u.PortWrite(0x3f9, []byte{UARTIerETBEI})
	u.PortWrite(0x3f8, []byte{'x'})
	require.Equal(t, 1, u.Receive([]byte{'y'}))

	irq := &fakeIRQ{fail: true}
	u = NewUARTAt(0x3f8, irq, nil)
	u.PortWrite(0x3f9, []byte{UARTIerETBEI})
	require.False(t, irq.High())
	irq.mu.Lock()
	irq.fail = false
	irq.mu.Unlock()
	u.PortWrite(0x3ff, []byte{0}) // any access retries
	require.True(t, irq.High())
}

// uartBusyState puts a rig into a state with every register non-default.
func uartBusyState(t *testing.T, r *uartRig) {
	t.Helper()
	r.outb(UARTRegLCR, UARTLcrDLAB|0x1b)
	r.outb(UARTRegDLL, 0x34)
	r.outb(UARTRegDLM, 0x12)
	r.outb(UARTRegLCR, 0x1b)
	r.outb(UARTRegFCR, UARTFcrFE|0x80)
	r.outb(UARTRegIER, UARTIerERBFI|UARTIerETBEI|UARTIerELSI)
	r.outb(UARTRegMCR, UARTMcrDTR|UARTMcrOUT2)
	r.outb(UARTRegSCR, 0x77)
	require.Equal(t, 5, r.u.Receive([]byte("state")))
}

func TestUARTSaveRestore(t *testing.T) {
	src := newUARTRig(t)
	uartBusyState(t, src)
	p, err := src.u.Save(0)
	require.NoError(t, err)
	require.Equal(t, UARTStateKind, p.Kind)
	require.Equal(t, uint32(2), p.Version, "version 2 is the newest")
	p2, err := src.u.Save(2)
	require.NoError(t, err)
	require.Equal(t, p, p2)
	p1, err := src.u.Save(1)
	require.NoError(t, err)
	require.Equal(t, uint32(1), p1.Version)
	require.Len(t, p1.Data, len(p.Data)-1, "version 1 has no modem lines byte")
	_, err = src.u.Save(3)
	require.ErrorIs(t, err, ErrUnknownVersion)
	require.ErrorContains(t, err, "this device writes versions 1, 2")

	dst := newUARTRig(t)
	require.NoError(t, dst.u.Restore(p))
	require.True(t, dst.irq.High(), "restore drives the line")
	for _, off := range []uint16{UARTRegLCR, UARTRegIER, UARTRegMCR, UARTRegSCR, UARTRegIIR, UARTRegLSR} {
		require.Equal(t, src.in(off), dst.in(off), "register %d", off)
	}
	var got []byte
	for dst.in(UARTRegLSR)&UARTLsrDR != 0 {
		got = append(got, dst.in(UARTRegRBR))
	}
	require.Equal(t, "state", string(got))
	dst.outb(UARTRegLCR, UARTLcrDLAB)
	require.Equal(t, uint8(0x34), dst.in(UARTRegDLL))
	require.Equal(t, uint8(0x12), dst.in(UARTRegDLM))
}

func TestUARTRestoreRejects(t *testing.T) {
	src := newUARTRig(t)
	uartBusyState(t, src)
	for _, version := range []uint32{uartStateV1, uartStateV2} {
		good, err := src.u.Save(version)
		require.NoError(t, err)
		other, err := src.u.Save(3 - version)
		require.NoError(t, err)
		fifoLen, maxSize := 10, uartStateV1Max // byte offset of the rx FIFO length
		if version == uartStateV2 {
			fifoLen, maxSize = 11, uartStateV2Max
		}
		with := func(f func(p *Payload)) Payload {
			p := Payload{Kind: good.Kind, Version: good.Version, Data: bytes.Clone(good.Data)}
			f(&p)
			return p
		}
		cases := []struct {
			name string
			p    Payload
			want error
		}{
			{"kind", with(func(p *Payload) { p.Kind = "virtio_blk" }), ErrUnknownKind},
			{"version 0", with(func(p *Payload) { p.Version = 0 }), ErrUnknownVersion},
			{"version 3", with(func(p *Payload) { p.Version = 3 }), ErrUnknownVersion},
			{"empty", with(func(p *Payload) { p.Data = nil }), ErrMalformed},
			{"truncated", with(func(p *Payload) { p.Data = p.Data[:len(p.Data)-1] }), ErrMalformed},
			{"trailing", with(func(p *Payload) { p.Data = append(p.Data, 0) }), ErrMalformed},
			{"oversized", with(func(p *Payload) { p.Data = make([]byte, 1<<20) }), ErrTooLarge},
			{"one over the cap", with(func(p *Payload) { p.Data = make([]byte, maxSize+1) }), ErrTooLarge},
			{"IER bits", with(func(p *Payload) { p.Data[2] = 0xff }), ErrMalformed},
			{"bool", with(func(p *Payload) { p.Data[9] = 2 }), ErrMalformed},
			{"FIFO length", with(func(p *Payload) { p.Data[fifoLen] = 17 }), ErrMalformed},
			{"FIFO off", with(func(p *Payload) { p.Data[8] = 0 }), ErrMalformed},
			{"the other version's bytes", with(func(p *Payload) { p.Data = other.Data }), ErrMalformed},
		}
		if version == uartStateV2 {
			cases = append(cases, struct {
				name string
				p    Payload
				want error
			}{"modem line bits", with(func(p *Payload) { p.Data[10] |= UARTMsrDCTS }), ErrMalformed})
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("v%d/%s", version, tc.name), func(t *testing.T) {
				dst := newUARTRig(t)
				dst.outb(UARTRegSCR, 0x42)
				dst.u.SetModemLines(UARTMsrCTS)
				before, err := dst.u.Save(0)
				require.NoError(t, err)
				err = dst.u.Restore(tc.p)
				require.ErrorIs(t, err, tc.want)
				var se *StateError
				require.ErrorAs(t, err, &se)
				require.Equal(t, "restore", se.Op)
				require.Contains(t, se.Error(), "restore "+tc.p.Kind+" state version")
				after, err := dst.u.Save(0)
				require.NoError(t, err)
				require.Equal(t, before, after, "a failed restore leaves the UART unchanged")
			})
		}
	}
}

func TestUARTConcurrent(t *testing.T) {
	r := newUARTRig(t)
	r.outb(UARTRegFCR, UARTFcrFE)
	r.outb(UARTRegIER, UARTIerERBFI|UARTIerETBEI)
	const n = 2000
	input := bytes.Repeat([]byte("0123456789"), n/10)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // host input, waiting for room
		defer wg.Done()
		rest := input
		for len(rest) > 0 {
			rest = rest[r.u.Receive(rest):]
			if len(rest) > 0 {
				select {
				case <-r.u.RxSpace():
				case <-time.After(time.Millisecond):
				}
			}
		}
	}()
	var got []byte
	go func() { // vCPU 1 reads
		defer wg.Done()
		for len(got) < n {
			if r.in(UARTRegLSR)&UARTLsrDR != 0 {
				got = append(got, r.in(UARTRegRBR))
			}
		}
	}()
	go func() { // vCPU 2 writes
		defer wg.Done()
		for i := range n {
			r.outb(UARTRegTHR, byte('a'+i%26))
			r.in(UARTRegIIR)
		}
	}()
	wg.Wait()
	require.Equal(t, input, got)
	require.Len(t, r.output(), n)
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer // guarded by mu
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func TestOutputBufferNeverBlocks(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	ob := NewOutputBuffer(w, 8)
	u := NewUARTAt(0x3f8, nil, ob.Write)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			u.PortWrite(0x3f8, []byte{'z'})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the guest blocked on a blocked writer")
	}
	require.GreaterOrEqual(t, ob.Dropped(), uint64(100-8-8))
	close(w.release)
	require.NoError(t, ob.Close())
	w.mu.Lock()
	written := w.buf.Len()
	w.mu.Unlock()
	require.Equal(t, uint64(100), uint64(written)+ob.Dropped())
	ob.Write([]byte("late"))
	require.Equal(t, uint64(100-written+4), ob.Dropped())
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestOutputBufferWriterError(t *testing.T) {
	ob := NewOutputBuffer(errWriter{}, 0)
	ob.Write([]byte("x"))
	require.ErrorIs(t, ob.Close(), io.ErrClosedPipe)
	require.ErrorIs(t, ob.Err(), io.ErrClosedPipe)
}

// FuzzUARTRestore restores each input as both state versions. An accepted
// state re-encodes to itself (spoke -> hub -> spoke); a version-1 state also
// survives a trip through version 2 (the newest, which loses nothing); a
// refused one leaves the UART as it was; a restored UART works.
func FuzzUARTRestore(f *testing.F) {
	for _, data := range uartSeedStates(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, version := range []uint32{uartStateV1, uartStateV2} {
			u := NewUARTAt(0x3f8, &fakeIRQ{}, nil)
			u.PortWrite(0x3ff, []byte{0x99})
			before, err := u.Save(0)
			require.NoError(t, err)
			err = u.Restore(Payload{Kind: UARTStateKind, Version: version, Data: data})
			if err != nil {
				after, err := u.Save(0)
				require.NoError(t, err)
				require.Equal(t, before, after)
				continue
			}
			again, err := u.Save(version)
			require.NoError(t, err)
			require.Equal(t, data, again.Data, "an accepted version %d state re-encodes to itself", version)
			newest, err := u.Save(0)
			require.NoError(t, err)
			v := NewUARTAt(0x3f8, &fakeIRQ{}, nil)
			require.NoError(t, v.Restore(newest))
			back, err := v.Save(version)
			require.NoError(t, err)
			require.Equal(t, data, back.Data, "version %d -> newest -> version %d", version, version)
			// The restored device works.
			var b [1]byte
			for off := range uint16(UARTPorts) {
				u.PortRead(0x3f8+off, b[:])
			}
			u.PortWrite(0x3f8, []byte{'x'})
			u.Receive([]byte("0123456789abcdefg"))
			u.SetModemLines(UARTMsrCTS)
		}
	})
}

// uartBusyStateNoT is uartBusyState for fuzz setup, where there is no *testing.T.
func uartBusyStateNoT(r *uartRig) {
	r.outb(UARTRegLCR, UARTLcrDLAB|0x1b)
	r.outb(UARTRegDLL, 0x34)
	r.outb(UARTRegLCR, 0x1b)
	r.outb(UARTRegFCR, UARTFcrFE|0xc0)
	r.outb(UARTRegIER, UARTIerERBFI|UARTIerETBEI|UARTIerELSI)
	r.outb(UARTRegMCR, UARTMcrLOOP|UARTMcrDTR)
	r.outb(UARTRegTHR, 'L')
	r.outb(UARTRegSCR, 0x77)
}
