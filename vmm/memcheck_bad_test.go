package vmm

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var memBadRE = regexp.MustCompile(`mem BAD at 0x([0-9a-f]+) pass (\d+)\n`)

// TestMemcheckDetectsCorruption shows that the memcheck guest, which every
// migration test relies on to say "BAD" when RAM goes wrong, does say it: one
// bit flipped behind the paused guest's back is reported at the 8-byte word
// that holds it, and the guest exits with status 1 (vmm/guest/ABI.md).
func TestMemcheckDetectsCorruption(t *testing.T) {
	// Region [4 MiB, 20 MiB). The byte is odd on purpose, so that the report
	// must name the word's address, not the byte's.
	const (
		base   = 4 << 20
		span   = 16 << 20
		byteAt = base + 0x5abcd5
		wordAt = byteAt &^ 7
	)
	m, out := newGuestMachine(t, testSpec(t, 1, 64, "memcheck", fmt.Sprintf("base_mib=%d span_mib=%d pace_ms=20", base>>20, span>>20)))
	require.NoError(t, m.Start())
	out.waitFor(t, "mem ok 1\n", 30*time.Second)

	require.NoError(t, m.Pause())
	var b [1]byte
	require.NoError(t, m.ReadGuest(b[:], byteAt))
	b[0] ^= 0x10
	require.NoError(t, m.WriteGuest(b[:], byteAt))
	okBefore := memOKRE.FindAllStringSubmatch(out.String(), -1)
	last, _ := strconv.Atoi(okBefore[len(okBefore)-1][1])
	require.NotContains(t, out.String(), "BAD", "the guest failed before the corruption")
	require.NoError(t, m.Resume())

	e := waitExit(t, m, 30*time.Second)
	require.NoError(t, m.Close()) // flushes the serial output
	s := out.String()
	require.Equal(t, Exit{Reason: ExitPoweredOff, Status: 1}, e, s)
	bad := memBadRE.FindAllStringSubmatch(s, -1)
	require.Len(t, bad, 1, s)
	require.Equal(t, strconv.FormatUint(wordAt, 16), bad[0][1], s)
	// The pause may fall inside a pass. The flipped word is caught by the
	// pass that reads it next: the one after the last pass reported ok, or
	// the one after that if the pause came after that pass had read it.
	pass, _ := strconv.Atoi(bad[0][2])
	require.Contains(t, []int{last + 1, last + 2}, pass, s)
	// Nothing after the report: the guest stopped at the mismatch.
	require.True(t, strings.HasSuffix(s, bad[0][0]), "output after the report: %q", s)
}
