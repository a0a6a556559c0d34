package devices

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestImportableVersionsMatchSave: every device saves, by default, a
// version its own kind lists as importable.
func TestImportableVersionsMatchSave(t *testing.T) {
	u, err := NewUART(1, nil, func([]byte) {})
	require.NoError(t, err)
	p, err := u.Save(0)
	require.NoError(t, err)
	require.Contains(t, ImportableVersions()[p.Kind], p.Version)
}

// TestUARTImportableVersions: the UART imports its newest version and the
// one before it, and saves and restores every version it lists, so a
// source can write any of them for a target that lists only that one.
func TestUARTImportableVersions(t *testing.T) {
	vs := ImportableVersions()[UARTStateKind]
	require.Equal(t, []uint32{1, 2}, vs)
	require.Equal(t, []uint32{1}, ImportableVersions()[VirtioBlkStateKind])
	src, err := NewUART(1, nil, func([]byte) {})
	require.NoError(t, err)
	for _, v := range vs {
		p, err := src.Save(v)
		require.NoError(t, err)
		require.Equal(t, v, p.Version)
		dst, err := NewUART(2, nil, func([]byte) {})
		require.NoError(t, err)
		require.NoError(t, dst.Restore(p), "version %d", v)
	}
}
