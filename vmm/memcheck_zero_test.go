package vmm

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The zeroed range of the memcheck guest in these tests: zero_pages pages
// from base_mib, zeroed by pass 2 (vmm/guest/ABI.md).
const (
	zeroBase  = 4 << 20
	zeroPages = 64
	zeroCmd   = "base_mib=4 span_mib=16 pace_ms=1000 zero_pages=64 zero_pass=2"
)

// migrateAcrossZeroing migrates a memcheck guest whose pages are zeroed
// after the first pre-copy round: the round copies all RAM between pass 1
// and pass 2, the pages are zeroed by pass 2, and the later rounds copy
// what is dirty through copyRound. It returns the target's output once it has
// run two passes after the zeroing, or failed.
func migrateAcrossZeroing(t *testing.T, copyRound func(t testing.TB, src, dst *Machine) int) string {
	s := testSpec(t, 1, 64, "memcheck", zeroCmd)
	src, srcOut := newGuestMachine(t, s)
	dst, dstOut := newGuestMachine(t, s)
	require.NoError(t, src.Start())
	srcOut.waitFor(t, "mem ok 1\n", 30*time.Second)

	require.NoError(t, src.EnableDirtyLog())
	copyAllRAM(t, src, dst)
	require.NotContains(t, srcOut.String(), "mem zeroed", "the first round must copy the pages before the guest zeroes them; pace_ms is too short for this host")
	srcOut.waitFor(t, fmt.Sprintf("mem zeroed %d pages\n", zeroPages), 30*time.Second)
	copyRound(t, src, dst)
	require.NoError(t, src.Pause())
	copyRound(t, src, dst)
	st, err := src.ExportState()
	require.NoError(t, err)
	require.NoError(t, dst.ImportState(st))
	require.NoError(t, src.Stop())
	require.NoError(t, dst.Start())
	// Either verdict, and for BAD its whole line: the guest prints it a byte
	// at a time, and a slow host (nested, emulated) stopped it mid-line.
	dstOut.await(t, 30*time.Second, "mem ok 4, or a whole mem BAD line", func(out string) bool {
		if strings.Contains(out, "mem ok 4\n") {
			return true
		}
		_, bad, found := strings.Cut(out, "mem BAD")
		return found && strings.Contains(bad, "\n")
	})
	require.NoError(t, dst.Close()) // flushes the serial output
	return dstOut.String()
}

// TestMemcheckZeroedPageMigrates: pages the guest zeroes after the first
// pre-copy round arrive zeroed on the target.
func TestMemcheckZeroedPageMigrates(t *testing.T) {
	out := migrateAcrossZeroing(t, copyDirty)
	require.NotContains(t, out, "BAD", out)
	require.Contains(t, out, "mem ok 3\n", out)
}

// TestMemcheckCatchesSkippedZeroPage shows that the guest catches the bug it
// exists for: a migration that does not send a dirty page because it reads
// all zero (as if the target's RAM were still fresh) leaves the old pattern
// on the target, and the guest reports the first zeroed word.
func TestMemcheckCatchesSkippedZeroPage(t *testing.T) {
	skipZero := func(t testing.TB, src, dst *Machine) int {
		t.Helper()
		d, err := src.CollectDirty()
		require.NoError(t, err)
		page, zero := make([]byte, PageSize), make([]byte, PageSize)
		n := 0
		for _, b := range d {
			for i := uint64(0); i < b.Region.Pages(); i++ {
				if !b.Dirty(i) {
					continue
				}
				gpa := b.Region.GPA + i*PageSize
				require.NoError(t, src.ReadGuest(page, gpa))
				if bytes.Equal(page, zero) {
					continue // the planted bug
				}
				require.NoError(t, dst.WriteGuest(page, gpa))
				n++
			}
		}
		return n
	}
	out := migrateAcrossZeroing(t, skipZero)
	require.Contains(t, out, fmt.Sprintf("mem BAD at 0x%x pass 3\n", zeroBase), out)
}
