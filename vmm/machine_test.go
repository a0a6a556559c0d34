package vmm

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/kvm"
)

func waitExit(t *testing.T, m *Machine, timeout time.Duration) Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	e, err := m.Wait(ctx)
	require.NoError(t, err, "machine did not stop; phase %v", m.Phase())
	return e
}

func TestPowerOffStatus(t *testing.T) {
	m, out := newTestMachine(t, codeHello, 1, 64)
	require.Equal(t, PhaseCreated, m.Phase())
	require.NoError(t, m.Start())
	e := waitExit(t, m, 10*time.Second)
	require.Equal(t, Exit{Reason: ExitPoweredOff, Status: 7}, e)
	require.NoError(t, m.Close())
	require.Equal(t, "hi\n", out.String())
	require.Equal(t, PhaseClosed, m.Phase())
}

func TestTripleFaultFails(t *testing.T) {
	m, _ := newTestMachine(t, codeTriple, 1, 64)
	require.NoError(t, m.Start())
	e := waitExit(t, m, 10*time.Second)
	require.Equal(t, ExitFailed, e.Reason)
	require.ErrorIs(t, e.Err, ErrTripleFault)
	t.Logf("exit: %v", e)
	// The guest never ran at the reset vector: on AMD, where KVM resets the
	// vCPU at the shutdown, the place is unknown; on Intel it is named.
	require.NotContains(t, e.Err.Error(), "rip 0xfff0")
	// The process survives and the machine can be closed.
	require.NoError(t, m.Close())
}

// TestInt3Fails: a guest whose breakpoint cannot be delivered ends as
// failed, by triple fault (hardware) or emulation failure (emulated CPL0).
func TestInt3Fails(t *testing.T) {
	m, _ := newTestMachine(t, codeInt3, 1, 64)
	require.NoError(t, m.Start())
	e := waitExit(t, m, 10*time.Second)
	require.Equal(t, ExitFailed, e.Reason)
	require.True(t, errors.Is(e.Err, ErrTripleFault) || errors.Is(e.Err, ErrEmulation), "%v", e.Err)
	t.Logf("exit: %v", e)
	require.NoError(t, m.Close())
}

// readCounter reads the test programs' counter at 0x7000.
func readCounter(t *testing.T, m *Machine) uint32 {
	t.Helper()
	n, err := counter(m)
	require.NoError(t, err)
	return n
}

// counter reads the counter at 0x7000 without failing the test: for
// conditions that Eventually and Never check on another goroutine.
func counter(m *Machine) (uint32, error) {
	var b [4]byte
	err := m.ReadGuest(b[:], 0x7000)
	return binary.LittleEndian.Uint32(b[:]), err
}

// counterAbove is the condition "the counter is above n".
func counterAbove(m *Machine, n uint32) func() bool {
	return func() bool {
		c, err := counter(m)
		return err == nil && c > n
	}
}

func TestPauseResume(t *testing.T) {
	m, _ := newTestMachine(t, codeSpinner, 2, 64)
	require.NoError(t, m.Start())
	require.Eventually(t, counterAbove(m, 100), 10*time.Second, time.Millisecond)
	for range 3 {
		require.NoError(t, m.Pause())
		require.Equal(t, PhasePaused, m.Phase())
		c := readCounter(t, m)
		// Not a wait for an event: the guest must not move for a while.
		require.Never(t, func() bool {
			now, err := counter(m)
			return err != nil || now != c
		}, 20*time.Millisecond, time.Millisecond, "the guest ran while paused")
		require.NoError(t, m.Resume())
		require.Eventually(t, counterAbove(m, c+50), 10*time.Second, time.Millisecond)
	}
	require.NoError(t, m.Stop())
	e, ok := m.Exit()
	require.True(t, ok)
	require.Equal(t, ExitStopped, e.Reason)
}

// TestPauseInterruptsSleep pauses a guest in a 10-second paravirtual sleep.
func TestPauseInterruptsSleep(t *testing.T) {
	m, _ := newTestMachine(t, codeSleeper, 1, 64)
	require.NoError(t, m.Start())
	require.Eventually(t, func() bool { return m.Stats().Sleeps > 0 }, 10*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, m.Pause())
	require.Less(t, time.Since(start), 5*time.Second, "pause waited for the sleep to end")
	require.Equal(t, uint32(1), readCounter(t, m))
	require.NoError(t, m.Resume())
	// Resuming completes the interrupted OUT; the guest loops into a new sleep.
	require.Eventually(t, func() bool { c, err := counter(m); return err == nil && c == 2 }, 10*time.Second, time.Millisecond)
}

func TestLifecycleNotNow(t *testing.T) {
	m, _ := newTestMachine(t, codeSpinner, 1, 64)
	var nn *NotNowError
	err := m.Pause()
	require.ErrorAs(t, err, &nn)
	require.ErrorIs(t, err, ErrNotNow)
	require.Equal(t, ActionPause, nn.Action)
	require.Equal(t, PhaseCreated, nn.Phase)
	require.ErrorIs(t, m.Resume(), ErrNotNow)
	require.NoError(t, m.Start())
	require.ErrorIs(t, m.Start(), ErrNotNow)
	_, err = m.ExportState()
	require.ErrorIs(t, err, ErrNotNow)
	require.NoError(t, m.Stop())
	require.ErrorIs(t, m.Resume(), ErrNotNow)
	require.ErrorIs(t, m.Stop(), ErrNotNow)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close())
	require.ErrorIs(t, m.ReadGuest(make([]byte, 1), 0), ErrNotNow)
}

// TestBuses checks that accesses no device claims read as all-ones, drop
// writes, and are counted.
func TestBuses(t *testing.T) {
	var pb portBus
	d := make([]byte, 2)
	pb.read(0x80, d)
	pb.write(0x80, d)
	require.Equal(t, []byte{0xff, 0xff}, d)
	require.Equal(t, uint64(1), pb.unknownReads.Load())
	require.Equal(t, uint64(1), pb.unknownWrites.Load())
	var mb mmioBus
	q := make([]byte, 8)
	mb.read(virtioMMIOBase+3*virtioMMIOSize, q)
	mb.write(0xfeb00000, q)
	require.Equal(t, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, q)
	require.Equal(t, uint64(1), mb.unknownReads.Load())
	require.Equal(t, uint64(1), mb.unknownWrites.Load())
}

// TestLifecycleTable checks that every phase answers every action.
func TestLifecycleTable(t *testing.T) {
	for p := PhaseCreated; p <= PhaseClosed; p++ {
		for a := ActionStart; a <= ActionClose; a++ {
			require.NotPanics(t, func() { allowed(p, a) }, "%v/%v", p, a)
		}
	}
}

func TestGuestReset(t *testing.T) {
	m, out := newTestMachine(t, codeResetter, 1, 64)
	require.NoError(t, m.Start())
	out.waitFor(t, "RRR", 20*time.Second)
	require.GreaterOrEqual(t, m.Stats().Resets, uint64(2))
	require.Equal(t, PhaseRunning, m.Phase())
	require.NoError(t, m.Stop())
}

func TestGuestResetExits(t *testing.T) {
	m, out := newTestMachine(t, codeResetter, 1, 64, func(c *Config) { c.ExitOnReset = true })
	require.NoError(t, m.Start())
	e := waitExit(t, m, 10*time.Second)
	require.Equal(t, ExitReset, e.Reason)
	require.NoError(t, m.Close())
	require.Equal(t, "R", out.String())
}

func TestHostReset(t *testing.T) {
	m, _ := newTestMachine(t, codeSpinner, 1, 64)
	require.NoError(t, m.Start())
	require.Eventually(t, counterAbove(m, 1000), 10*time.Second, time.Millisecond)
	require.NoError(t, m.Pause())
	require.NoError(t, m.Reset())
	require.Equal(t, uint32(0), readCounter(t, m), "reset clears RAM")
	require.Equal(t, PhasePaused, m.Phase())
	require.NoError(t, m.Resume())
	require.Eventually(t, counterAbove(m, 100), 10*time.Second, time.Millisecond)
	require.NoError(t, m.Reset())
	require.Equal(t, PhaseRunning, m.Phase())
}

func TestSerialInput(t *testing.T) {
	m, out := newTestMachine(t, codeEcho, 1, 64)
	require.NoError(t, m.Start())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msg := "hello, serial port with more than sixteen bytes!"
	require.NoError(t, m.SerialInput(ctx, spec.COM1, []byte(msg)))
	e := waitExit(t, m, 20*time.Second)
	require.Equal(t, Exit{Reason: ExitPoweredOff, Status: 0x21}, e)
	require.NoError(t, m.Close())
	require.Equal(t, msg, out.String())
	require.Error(t, m.SerialInput(ctx, spec.COM1, []byte("x")))
}

func TestTooManyVCPUs(t *testing.T) {
	requireKVM(t)
	limit := uint32(0)
	func() {
		m, _ := newTestMachine(t, codeHello, 1, 64)
		limit = vcpuLimit(m.sys)
	}()
	if limit+1 > spec.MaxCPUs {
		t.Skipf("host allows %d vCPUs, more than a spec may ask", limit)
	}
	_, err := New(Config{Spec: testSpec(t, limit+1, 64, "test", ""), Image: testImage(codeHello)})
	var ce *ComponentError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "board.cpus", ce.Component)
	require.ErrorIs(t, err, ErrTooManyVCPUs)
	t.Log(err)
}

func TestUnknownImage(t *testing.T) {
	requireKVM(t)
	_, err := New(Config{Spec: testSpec(t, 1, 64, "no-such-image", "")})
	var ce *ComponentError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "boot.image", ce.Component)
	_, err = New(Config{Spec: testSpec(t, 1, 64, "test", ""), Image: []byte("not multiboot")})
	require.ErrorIs(t, err, ErrNoImage)
}

// TestExportImportCounter moves a spinning guest into a second machine.
func TestExportImportCounter(t *testing.T) {
	src, _ := newTestMachine(t, codeSpinner, 2, 64)
	dst, _ := newTestMachine(t, codeHello, 2, 64)
	require.NoError(t, src.Start())
	require.Eventually(t, counterAbove(src, 1000), 10*time.Second, time.Millisecond)
	require.NoError(t, src.Pause())
	st, err := src.ExportState()
	require.NoError(t, err)
	copyAllRAM(t, src, dst)
	require.NoError(t, dst.ImportState(st))
	c := readCounter(t, src)
	require.NoError(t, src.Stop())
	require.NoError(t, dst.Start())
	require.Eventually(t, counterAbove(dst, c+100), 10*time.Second, time.Millisecond)
}

func copyAllRAM(t testing.TB, src, dst *Machine) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for _, r := range src.Regions() {
		for off := uint64(0); off < r.Size; off += uint64(len(buf)) {
			n := min(uint64(len(buf)), r.Size-off)
			require.NoError(t, src.ReadGuest(buf[:n], r.GPA+off))
			require.NoError(t, dst.WriteGuest(buf[:n], r.GPA+off))
		}
	}
}

// TestShutdownPlace: after a triple fault, registers in INIT's state say
// nothing of where the guest failed, and the failure says so; any other
// state names the instruction pointer, even 0xfff0 in another segment.
func TestShutdownPlace(t *testing.T) {
	initCS := kvm.Segment{Base: 0xffff0000, Selector: 0xf000, Limit: 0xffff}
	require.Equal(t, " (where is unknown: KVM reset the vCPU before reporting the shutdown)", shutdownPlace(0xfff0, initCS))
	require.Equal(t, " at rip 0x1234", shutdownPlace(0x1234, initCS))
	flat := kvm.Segment{Selector: 0x8, Limit: 0xffffffff}
	require.Equal(t, " at rip 0xfff0", shutdownPlace(0xfff0, flat))
	require.Equal(t, " at rip 0xfff0", shutdownPlace(0xfff0, kvm.Segment{Selector: 0xf000, Base: 0xf0000}))
	require.Equal(t, " at rip 0x100000", shutdownPlace(0x100000, flat))
}
