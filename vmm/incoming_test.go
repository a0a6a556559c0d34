package vmm

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

func TestIncomingMachineLeavesRAMUntouched(t *testing.T) {
	requireKVM(t)
	s, err := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: 1, MemoryMiB: 64, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "ticker"}).Build()
	require.NoError(t, err)

	booted, err := New(Config{Spec: s})
	require.NoError(t, err)
	defer booted.Close()
	touched, err := booted.TouchedPages()
	require.NoError(t, err)
	require.NotZero(t, touched[0].Count(), "a booted machine has its image and boot data in RAM")
	require.True(t, touched[0].Dirty(0x100000/PageSize), "the image loads at 1 MiB")

	incoming, err := New(Config{Spec: s, Incoming: true})
	require.NoError(t, err)
	defer incoming.Close()
	touched, err = incoming.TouchedPages()
	require.NoError(t, err)
	require.Zero(t, touched[0].Count(), "an incoming machine's RAM is untouched")

	require.NoError(t, incoming.WriteGuest([]byte{1}, 0x200000))
	touched, err = incoming.TouchedPages()
	require.NoError(t, err)
	// One page, or, where the host backs anonymous memory with transparent
	// huge pages (THP "always", Debian's default), the 2 MiB page around it:
	// never a page outside that.
	require.True(t, touched[0].Dirty(0x200000/PageSize))
	const huge = 2 << 20
	for i := uint64(0); i < touched[0].Region.Pages(); i++ {
		if touched[0].Dirty(i) {
			gpa := touched[0].Region.GPA + i*PageSize
			require.Equal(t, uint64(0x200000)/huge, gpa/huge, "page 0x%x was touched", gpa)
		}
	}
	require.LessOrEqual(t, touched[0].Count(), huge/PageSize)

	page := make([]byte, PageSize)
	require.NoError(t, incoming.ReadGuest(page, 0x100000))
	require.Equal(t, make([]byte, PageSize), page, "untouched RAM reads as zero")
}
