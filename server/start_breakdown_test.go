package server

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/vmm"
)

// TestStartBreakdownAddsUp: each part of a start is the span between the
// right two marks, and the parts add up to the total, so nothing is
// counted twice or left out.
func TestStartBreakdownAddsUp(t *testing.T) {
	us := func(n int) time.Duration { return time.Duration(n) * time.Microsecond }
	put := time.Unix(5000, 0)
	st := vmm.StartTimings{
		Began: put.Add(us(300)), // the server's part before New
		Image: us(10), Devices: us(20), KVM: us(1500), Memory: us(40), PowerOnState: us(200), Boot: us(60),
		New:         us(1900), // 70 µs between the phases
		Started:     us(2600),
		FirstExit:   us(2750),
		FirstSerial: us(3100),
	}
	answered := st.Began.Add(us(2000))     // 100 µs after New
	arrived := st.Began.Add(us(3100 + 45)) // 45 µs through the output buffer

	b, err := breakdown(put, answered, arrived, st)
	require.NoError(t, err)
	require.Equal(t, us(300+100), b.Ensure)
	require.Equal(t, us(70), b.NewRest)
	require.Equal(t, us(600), b.RunRequest)
	require.Equal(t, us(150), b.FirstExit)
	require.Equal(t, us(350), b.FirstSerial)
	require.Equal(t, us(45), b.Console)
	require.Equal(t, us(300+3145), b.Total)
	var sum time.Duration
	for _, p := range b.parts() {
		sum += p.d
	}
	require.Equal(t, b.Total, sum, "the parts add up to the total")

	var twice startBreakdown
	twice.add(b)
	twice.add(b)
	require.Equal(t, 2*b.Total, twice.Total)
	require.Equal(t, 2*b.KVM, twice.KVM)
	out := twice.table(2)
	require.Contains(t, out, "| **total** | **3445** | aim: under 5000 µs (met) |")
	require.Contains(t, out, "| New: /dev/kvm and the VM (unless made ahead), vCPUs (threads, CPUID, MSRs) | 1500 | 44% |")
	require.Equal(t, len(b.parts())+1, strings.Count(out, "\n| ")-1, "a row per part, the total and the header")

	slow := b
	slow.Total = 2 * startAim
	require.Contains(t, slow.table(1), "(not met)")
	require.Equal(t, "no starts measured\n", b.table(0))
}

// TestStartBreakdownRefusesMissingOrDisorderedMarks: a mark the machine did
// not record, or marks out of order, fail the benchmark with the mark's
// name rather than print a nonsense row.
func TestStartBreakdownRefusesMissingOrDisorderedMarks(t *testing.T) {
	put := time.Unix(5000, 0)
	good := vmm.StartTimings{Began: put.Add(time.Millisecond), New: time.Millisecond, Started: 2 * time.Millisecond,
		FirstExit: 3 * time.Millisecond, FirstSerial: 4 * time.Millisecond}
	answered, arrived := put.Add(2500*time.Microsecond), put.Add(6*time.Millisecond)
	_, err := breakdown(put, answered, arrived, good)
	require.NoError(t, err)

	noExit := good
	noExit.FirstExit = 0
	_, err = breakdown(put, answered, arrived, noExit)
	require.ErrorContains(t, err, "FirstExit not recorded")

	noSerial := good
	noSerial.FirstSerial = 0
	_, err = breakdown(put, answered, arrived, noSerial)
	require.ErrorContains(t, err, "FirstSerial not recorded")

	// The byte cannot reach the console before the guest wrote it.
	_, err = breakdown(put, answered, good.Began.Add(good.FirstSerial-time.Microsecond), good)
	require.ErrorContains(t, err, "console")

	// Nor can Start come before the ensure's answer... that would be a
	// clock mixed up with another start's.
	_, err = breakdown(put, good.Began.Add(good.Started+time.Microsecond), arrived, good)
	require.ErrorContains(t, err, "run")

	// Phases longer than New.
	long := good
	long.KVM = 2 * time.Millisecond
	_, err = breakdown(put, answered, arrived, long)
	require.ErrorContains(t, err, "newrest")
}
