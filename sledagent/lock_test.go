package sledagent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/sledagent"
)

// A second agent over the root of a running one is refused with a clear
// error (two agents would each start, adopt and kill the other's VMMs);
// once the first closes, the root is free again.
func TestOneAgentPerRoot(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, newFakes().Dial, nil, bigSled)
	lo, hi := portRange(4)
	opts := sledagent.Options{Root: root, Capacity: bigSled, PortMin: lo, PortMax: hi, VMMBinary: waggleBin,
		Dial: newFakes().Dial, Backoff: sledagent.Backoff{Min: time.Millisecond, Max: 20 * time.Millisecond}}
	_, err := sledagent.New(opts)
	require.ErrorIs(t, err, sledagent.ErrRootLocked)
	require.ErrorContains(t, err, root)
	require.NoError(t, a.Close())
	b, err := sledagent.New(opts)
	require.NoError(t, err)
	require.Equal(t, a.SledID(), b.SledID(), "the sled id is kept in the root")
	require.NoError(t, b.Close())
}

// The sled id is written whole (to a temporary file renamed into place):
// no temporary file is left, and the file holds the id and a newline.
func TestSledIDKept(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, newFakes().Dial, nil, bigSled)
	require.NoError(t, a.Close())
	data, err := os.ReadFile(filepath.Join(root, "sled-id"))
	require.NoError(t, err)
	require.Equal(t, a.SledID().String()+"\n", string(data))
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.Contains(e.Name(), ".tmp"), "left behind: %s", e.Name())
	}
}

// The sled id is never written in place: a dangling sled-id link (a file
// half made, or planted) is replaced by a whole file, and nothing is
// written where the link pointed.
func TestSledIDReplacedWhole(t *testing.T) {
	root := t.TempDir()
	elsewhere := filepath.Join(t.TempDir(), "planted")
	require.NoError(t, os.Symlink(elsewhere, filepath.Join(root, "sled-id")))
	a := newAgent(t, root, newFakes().Dial, nil, bigSled)
	require.NoError(t, a.Close())
	fi, err := os.Lstat(filepath.Join(root, "sled-id"))
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular(), "sled-id is a file of its own: %v", fi.Mode())
	_, err = os.Stat(elsewhere)
	require.ErrorIs(t, err, os.ErrNotExist, "written through the link")
}
