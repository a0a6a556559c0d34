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
