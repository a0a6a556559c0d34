package corpus

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCapturedFilesPipeline: a captured file (here a copy of a synthesized
// one) is listed, replayed, kept by Generate, and refused for a released
// version. The capturer itself needs KVM and is not built (CaptureHook).
func TestCapturedFilesPipeline(t *testing.T) {
	r := copyRoot(t, "")
	v1 := Version{API: "vmm-server", N: 1}
	v2 := Version{API: "vmm-server", N: 2} // in development
	data, err := os.ReadFile(corpusFile(r, "vmm-server/v2/device/uart-v2-configured-rx.json"))
	require.NoError(t, err)
	written, err := WriteCaptured(r, v2, map[string][]byte{"device/uart-after-migration.json": data}, testProvenance)
	require.NoError(t, err)
	require.Equal(t, []string{"vmm-server/v2/device/captured-uart-after-migration.json"}, written)
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
	require.Equal(t, 1, sum.ByKind[KindDevice]-countFiles(t, filepath.Join(root, Dir, "vmm-server/v1/device"))-
		countFiles(t, filepath.Join(root, Dir, "vmm-server/v2/device")))

	_, err = WriteCaptured(copyRoot(t, lockV1), v1, map[string][]byte{"device/x.json": data}, testProvenance)
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

var testProvenance = Provenance{Commit: strings.Repeat("c", 40), Command: "go test (TestCapturedFilesNeedProvenance)"}

// TestCapturedFilesNeedProvenance: a captured file carries the commit and
// command that captured it (corpus/CAPTURED); corpusgen never re-hashes
// it, so a hand edit shows; a captured file nothing captured fails.
func TestCapturedFilesNeedProvenance(t *testing.T) {
	v2 := Version{API: "vmm-server", N: 2} // in development: a released version takes no captures
	captured := "vmm-server/v2/device/captured-uart-after-migration.json"
	setup := func(t *testing.T) (string, []byte) {
		r := copyRoot(t, "")
		data, err := os.ReadFile(corpusFile(r, "vmm-server/v2/device/uart-v2-configured-rx.json"))
		require.NoError(t, err)
		_, err = WriteCaptured(r, v2, map[string][]byte{"device/uart-after-migration.json": data}, testProvenance)
		require.NoError(t, err)
		_, err = CheckManifest(r)
		require.NoError(t, err)
		require.NoError(t, CheckFresh(r))
		rec, err := os.ReadFile(filepath.Join(r, Dir, CapturedName))
		require.NoError(t, err)
		require.Contains(t, string(rec), Sum(data)+"  "+captured+"  commit "+testProvenance.Commit+"  command "+testProvenance.Command+"\n")
		return r, data
	}

	t.Run("hand edit, then corpusgen", func(t *testing.T) {
		r, _ := setup(t)
		require.NoError(t, os.WriteFile(corpusFile(r, captured), []byte(`{"edited":true}`), 0o644))
		_, err := Generate(r)
		require.NoError(t, err)
		_, err = CheckManifest(r)
		require.ErrorContains(t, err, captured+" changed")
	})
	t.Run("hand edit with its MANIFEST line", func(t *testing.T) {
		r, data := setup(t)
		edited := []byte(`{"edited":true}`)
		require.NoError(t, os.WriteFile(corpusFile(r, captured), edited, 0o644))
		editManifest(t, r, func(s string) string {
			return strings.Replace(s, Sum(data)+"  "+captured, Sum(edited)+"  "+captured, 1)
		})
		_, err := CheckManifest(r)
		require.NoError(t, err)
		err = CheckFresh(r)
		require.ErrorContains(t, err, "corpus/"+captured+": its sha256 "+Sum(edited)+" is not the one corpus/CAPTURED records")
	})
	t.Run("placed by hand", func(t *testing.T) {
		r := copyRoot(t, "")
		p := "vmm-server/v2/device/captured-by-hand.json"
		data, err := os.ReadFile(corpusFile(r, "vmm-server/v2/device/uart-v2-configured-rx.json"))
		require.NoError(t, err)
		writeFile(t, r, p, string(data))
		_, err = Generate(r)
		require.NoError(t, err)
		_, err = CheckManifest(r)
		require.ErrorContains(t, err, p+" is not listed", "corpusgen lists no captured file it did not capture")
		editManifest(t, r, func(s string) string { return s + Sum(data) + "  " + p + "\n" })
		_, err = CheckManifest(r)
		require.NoError(t, err)
		err = CheckFresh(r)
		require.ErrorContains(t, err, "corpus/"+p+": no provenance in corpus/CAPTURED")
	})
}
