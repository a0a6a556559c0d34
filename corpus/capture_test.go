package corpus

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCapturedFilesPipeline: a captured file (here a copy of a synthesized
// one) is listed, replayed, kept by Generate, and refused for a released
// version. The capturer itself needs KVM and is not built (CaptureHook).
func TestCapturedFilesPipeline(t *testing.T) {
	r := copyRoot(t, "")
	v1 := Version{API: "vmm-server", N: 1}
	data, err := os.ReadFile(corpusFile(r, "vmm-server/v1/device/uart-v2-configured-rx.json"))
	require.NoError(t, err)
	written, err := WriteCaptured(r, v1, map[string][]byte{"device/uart-after-migration.json": data})
	require.NoError(t, err)
	require.Equal(t, []string{"vmm-server/v1/device/captured-uart-after-migration.json"}, written)
	_, err = CheckManifest(r)
	require.NoError(t, err)
	_, err = Generate(r)
	require.NoError(t, err)
	_, err = os.Stat(corpusFile(r, written[0]))
	require.NoError(t, err, "Generate keeps captured files")
	_, err = CheckManifest(r)
	require.NoError(t, err)
	sum, err := NewReplayer(r, t.TempDir()).Replay()
	require.NoError(t, err)
	require.Equal(t, 1, sum.ByKind[KindDevice]-countFiles(t, filepath.Join(root, Dir, "vmm-server/v1/device")))

	_, err = WriteCaptured(copyRoot(t, lockV1), v1, map[string][]byte{"device/x.json": data})
	require.ErrorContains(t, err, "is released")

	_, err = Capture(context.Background(), r)
	require.ErrorIs(t, err, ErrNoCapturer)
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	return len(entries)
}
