package corpus

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// root is the repository root, seen from this package's directory.
const root = ".."

// TestReplay replays the whole corpus with today's code.
func TestReplay(t *testing.T) {
	r := NewReplayer(root, t.TempDir())
	sum, err := r.Replay()
	require.NoError(t, err)
	t.Log(sum)
	for _, k := range sortedKeys(sum.ByKind) {
		t.Logf("  %-24s %d", k, sum.ByKind[k])
	}
	require.NotZero(t, sum.Files)
}

// TestManifest checks the committed corpus against its MANIFEST.
func TestManifest(t *testing.T) {
	rep, err := CheckManifest(root)
	require.NoError(t, err)
	t.Logf("MANIFEST: %d files, %d after-files, %d of released versions", rep.Files, rep.AfterFiles, rep.Released)
}

// TestGeneratorIsDeterministicAndFresh regenerates the corpus into a
// temporary directory and compares it byte for byte with the committed one.
func TestGeneratorIsDeterministicAndFresh(t *testing.T) {
	require.NoError(t, CheckFresh(root))
}

func TestCoverage(t *testing.T) {
	require.NoError(t, CheckCoverage(root))
	// A new contract without a generator fails.
	r := copyRoot(t, "")
	require.NoError(t, os.MkdirAll(filepath.Join(r, "openapi", "vmm-server"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(r, "openapi", "vmm-server", "v3.yaml"), []byte("openapi: 3.0.3\n"), 0o644))
	err := CheckCoverage(r)
	require.ErrorContains(t, err, "vmm-server/v3 has a contract but no corpus generator")
	require.ErrorContains(t, err, "corpus.Generators lists vmm-server/v1, which has no contract")
}

// TestCorpusFolderNeedsContract: a corpus/<api>/v<N> folder of a version
// with no contract fails.
func TestCorpusFolderNeedsContract(t *testing.T) {
	r := copyRoot(t, "")
	require.NoError(t, os.RemoveAll(filepath.Join(r, "openapi")))
	require.NoError(t, os.CopyFS(filepath.Join(r, "openapi"), os.DirFS(filepath.Join(root, "openapi"))))
	require.NoError(t, CheckCoverage(r))
	writeFile(t, r, "vmm-server/v7/spec/minimal.json", "{}")
	require.ErrorContains(t, CheckCoverage(r), "corpus/vmm-server/v7 is the corpus of a version with no contract (openapi/vmm-server/v7.yaml)")
}

// TestGeneratorTwice: two runs write the same bytes.
func TestGeneratorTwice(t *testing.T) {
	a, b := copyRoot(t, ""), copyRoot(t, "")
	_, err := Generate(a)
	require.NoError(t, err)
	_, err = Generate(b)
	require.NoError(t, err)
	require.NoError(t, treeEqual(filepath.Join(a, Dir), filepath.Join(b, Dir)))
}
