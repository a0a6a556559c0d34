package vmm

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// TestStartClockLaps: each lap charges the time since the previous one to
// its phase, a phase lapped twice adds both, and the phases of a build
// lapped end to end add up to New.
func TestStartClockLaps(t *testing.T) {
	var c startClock
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	c.begin(t0)
	c.lap(phaseImage, at(1))
	c.lap(phaseDevices, at(3))
	c.lap(phaseKVM, at(6))
	c.lap(phaseMemory, at(10))
	c.lap(phaseKVM, at(15))
	c.lap(phaseDevices, at(21))
	c.lap(phasePowerOnState, at(28))
	c.lap(phaseBoot, at(36))
	c.finish(at(36))

	got := c.timings()
	require.Equal(t, t0, got.Began)
	require.Equal(t, 1*time.Millisecond, got.Image)
	require.Equal(t, (2+6)*time.Millisecond, got.Devices)
	require.Equal(t, (3+5)*time.Millisecond, got.KVM)
	require.Equal(t, 4*time.Millisecond, got.Memory)
	require.Equal(t, 7*time.Millisecond, got.PowerOnState)
	require.Equal(t, 8*time.Millisecond, got.Boot)
	require.Equal(t, 36*time.Millisecond, got.New)
	require.Equal(t, got.New, got.Image+got.Devices+got.KVM+got.Memory+got.PowerOnState+got.Boot)
	require.Zero(t, got.Started, "not started")
	require.Zero(t, got.FirstExit)
	require.Zero(t, got.FirstSerial)
}

// TestStartClockMarksOnce: a mark keeps the first time it was set, however
// many goroutines race to set it and however often it is set again (a vCPU
// marks its first exit on every exit), and it is never zero once set.
func TestStartClockMarksOnce(t *testing.T) {
	var c startClock
	c.begin(time.Now())
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.mark(&c.firstExit)
		}()
	}
	wg.Wait()
	first := c.timings().FirstExit
	require.Positive(t, first)
	require.Less(t, first, time.Minute)
	// Were a later mark taken, it would now read an hour more.
	c.began = c.began.Add(-time.Hour)
	c.mark(&c.firstExit)
	require.Equal(t, first, c.timings().FirstExit, "a later mark moved the first")

	// A mark set the very nanosecond the clock began still reads as set.
	var d startClock
	d.begin(time.Now().Add(time.Hour)) // "since began" is negative here
	d.mark(&d.started)
	require.Equal(t, time.Duration(1), d.timings().Started)
	require.Zero(t, d.timings().FirstSerial, "marks are separate")
}

// TestStartTimingsOfARealMachine: on KVM, every phase of New took some time,
// together no more than New; Start, the first exit and the first serial
// byte come in that order, after New, and before the byte reached the
// console's writer. A machine without a serial writer marks no first byte.
func TestStartTimingsOfARealMachine(t *testing.T) {
	requireKVM(t)
	s := testSpec(t, 1, 64, "ticker", "pace_ms=1000")
	out := &firstByte{c: make(chan struct{})}
	m, err := New(Config{Spec: s, Serial: map[spec.SerialPortNumber]io.Writer{spec.COM1: out}, Image: guestImage(t, "ticker")})
	require.NoError(t, err)
	defer m.Close()
	before := m.StartTimings()
	require.Zero(t, before.Started)
	require.NoError(t, m.Start())
	select {
	case <-out.c:
	case <-time.After(20 * time.Second):
		t.Fatal("no serial output")
	}
	arrived := time.Now()
	got := m.StartTimings()
	for name, d := range map[string]time.Duration{"Image": got.Image, "KVM": got.KVM, "Memory": got.Memory,
		"PowerOnState": got.PowerOnState, "Boot": got.Boot, "Devices": got.Devices} {
		require.Positive(t, d, name)
	}
	require.LessOrEqual(t, got.Image+got.Devices+got.KVM+got.Memory+got.PowerOnState+got.Boot, got.New)
	require.GreaterOrEqual(t, got.Started, got.New)
	require.GreaterOrEqual(t, got.FirstExit, got.Started)
	require.GreaterOrEqual(t, got.FirstSerial, got.FirstExit)
	require.False(t, got.Began.Add(got.FirstSerial).After(arrived))

	quiet, err := New(Config{Spec: testSpec(t, 1, 64, "ticker", "pace_ms=1000"), Image: guestImage(t, "ticker")})
	require.NoError(t, err)
	defer quiet.Close()
	require.NoError(t, quiet.Start())
	require.Eventually(t, func() bool { return quiet.StartTimings().FirstExit > 0 }, 20*time.Second, time.Millisecond)
	require.Zero(t, quiet.StartTimings().FirstSerial)
}
