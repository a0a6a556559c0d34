package corpus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The tests below break the corpus on purpose, in a copy, and see each
// check fail: a gate must be able to fail.

// copyRoot copies the committed corpus into a temporary repository root
// with lock as its openapi/LOCK; "" means lockV1, so that vmm-server/v2 is
// a version in development there, as these tests need one (in the
// repository every version is released).
func copyRoot(t *testing.T, lock string) string {
	t.Helper()
	dst := t.TempDir()
	require.NoError(t, os.CopyFS(filepath.Join(dst, Dir), os.DirFS(filepath.Join(root, Dir))))
	if lock == "" {
		lock = lockV1
	}
	data := []byte(lock)
	require.NoError(t, os.MkdirAll(filepath.Join(dst, "openapi"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dst, "openapi", "LOCK"), data, 0o644))
	// A version the lock leaves unreleased is in development: its files
	// are what today's generator writes (they were frozen at its release,
	// and the code went on: protocol 2's Hello, for one).
	_, err := Generate(dst)
	require.NoError(t, err)
	return dst
}

// someSpec is a spec file of the version in development in copyRoot
// (vmm-server/v2): the generator rewrites it. releasedSpec is one of a released version
// (vmm-server/v1, which openapi/LOCK and lockV1 list): it never changes.
const (
	someSpec     = "vmm-server/v2/spec/disk-4096-readonly.json"
	releasedSpec = "vmm-server/v1/spec/disk-4096-readonly.json"
)

func corpusFile(r, p string) string { return filepath.Join(r, Dir, filepath.FromSlash(p)) }

func editManifest(t *testing.T, r string, edit func(string) string) {
	t.Helper()
	p := filepath.Join(r, Dir, ManifestName)
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, []byte(edit(string(data))), 0o644))
}

// lockV1 is a LOCK that releases vmm-server/v1 (the hash is not checked here).
const lockV1 = "# test\n" + "0000000000000000000000000000000000000000000000000000000000000000  openapi/vmm-server/v1.yaml\n"

func TestManifestCatchesBrokenCorpus(t *testing.T) {
	cases := []struct {
		name   string
		lock   string
		break_ func(t *testing.T, r string)
		want   []string
	}{
		{"edited file", "", func(t *testing.T, r string) {
			require.NoError(t, os.WriteFile(corpusFile(r, someSpec), []byte(`{"edited":true}`), 0o644))
		}, []string{"line", someSpec, "changed", "go run ./cmd/corpusgen"}},
		{"edited file of a released version", lockV1, func(t *testing.T, r string) {
			require.NoError(t, os.WriteFile(corpusFile(r, releasedSpec), []byte(`{"edited":true}`), 0o644))
		}, []string{releasedSpec, "changed", "is released", "disk-4096-readonly.after.json"}},
		{"removed MANIFEST line", "", func(t *testing.T, r string) {
			editManifest(t, r, func(s string) string {
				var keep []string
				for _, l := range strings.Split(s, "\n") {
					if !strings.HasSuffix(l, someSpec) {
						keep = append(keep, l)
					}
				}
				return strings.Join(keep, "\n")
			})
		}, []string{someSpec, "is not listed"}},
		{"unlisted file", "", func(t *testing.T, r string) {
			require.NoError(t, os.WriteFile(corpusFile(r, "vmm-server/v1/spec/extra.json"), []byte(`{}`), 0o644))
		}, []string{"vmm-server/v1/spec/extra.json", "is not listed"}},
		{"stray file name", "", func(t *testing.T, r string) {
			require.NoError(t, os.WriteFile(corpusFile(r, "vmm-server/v1/spec/Notes.txt"), []byte(`x`), 0o644))
		}, []string{"Notes.txt", "is not listed", "only <api>/v<N>/<kind>/<name>.json"}},
		{"missing file", "", func(t *testing.T, r string) {
			require.NoError(t, os.Remove(corpusFile(r, someSpec)))
		}, []string{someSpec, "is missing"}},
		{"after-file equal to its original", lockV1, func(t *testing.T, r string) {
			addAfter(t, r, releasedSpec, nil, "a reason")
		}, []string{"disk-4096-readonly.after.json", "is identical to"}},
		{"after-file without reason", lockV1, func(t *testing.T, r string) {
			addAfter(t, r, releasedSpec, []byte(`{}`), "")
		}, []string{"MANIFEST line", "disk-4096-readonly.after.json", "without a reason"}},
		{"after-file of an unlisted original", lockV1, func(t *testing.T, r string) {
			addAfter(t, r, releasedSpec, []byte(`{}`), "why")
			editManifest(t, r, func(s string) string {
				return strings.Replace(s, "  "+releasedSpec+"\n", "  vmm-server/v1/spec/gone.json\n", 1)
			})
		}, []string{"replaces", "which is not listed"}},
		{"malformed line", "", func(t *testing.T, r string) {
			editManifest(t, r, func(s string) string { return s + "not-a-hash  vmm-server/v1/spec/x.json\n" })
		}, []string{"corpus/MANIFEST line", "not a lower-case SHA-256"}},
		{"reason on a plain file", "", func(t *testing.T, r string) {
			editManifest(t, r, func(s string) string {
				return strings.Replace(s, "  "+someSpec+"\n", "  "+someSpec+"  reason: no\n", 1)
			})
		}, []string{"corpus/MANIFEST line", "only an after-file"}},
		{"path listed twice", "", func(t *testing.T, r string) {
			editManifest(t, r, func(s string) string {
				for _, l := range strings.Split(s, "\n") {
					if strings.HasSuffix(l, someSpec) {
						return s + l + "\n"
					}
				}
				return s
			})
		}, []string{"already listed on line"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := copyRoot(t, c.lock)
			_, err := CheckManifest(r)
			require.NoError(t, err, "the copy is sound before it is broken")
			c.break_(t, r)
			_, err = CheckManifest(r)
			require.Error(t, err)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// addAfter writes p's after-file (the original's bytes when data is nil)
// and lists it in MANIFEST with reason.
func addAfter(t *testing.T, r, p string, data []byte, reason string) string {
	t.Helper()
	fp, err := ParseFilePath(p)
	require.NoError(t, err)
	if data == nil {
		data, err = os.ReadFile(corpusFile(r, p))
		require.NoError(t, err)
	}
	after := fp.AfterPath().String()
	require.NoError(t, os.WriteFile(corpusFile(r, after), data, 0o644))
	line := Sum(data) + "  " + after
	if reason != "" {
		line += "  reason: " + reason
	}
	editManifest(t, r, func(s string) string { return s + line + "\n" })
	return after
}

// TestAcceptedDifference: a released file that today's code re-encodes
// otherwise is accepted through an after-file with a reason, and replay
// then compares with the after-file.
func TestAcceptedDifference(t *testing.T) {
	r := copyRoot(t, lockV1)
	orig, err := os.ReadFile(corpusFile(r, releasedSpec))
	require.NoError(t, err)
	// Pretend version 1 once wrote the spec with white space; today's
	// code writes the canonical form, which goes into the after-file.
	spaced := []byte(strings.ReplaceAll(string(orig), ",", ", "))
	require.NoError(t, os.WriteFile(corpusFile(r, releasedSpec), spaced, 0o644))
	editManifest(t, r, func(s string) string {
		return strings.Replace(s, Sum(orig)+"  "+releasedSpec, Sum(spaced)+"  "+releasedSpec, 1)
	})

	rep := NewReplayer(r, t.TempDir())
	_, err = rep.Replay()
	require.ErrorContains(t, err, releasedSpec)
	require.ErrorContains(t, err, "re-encodes to")

	addAfter(t, r, releasedSpec, orig, "canonical form has no white space")
	_, err = CheckManifest(r)
	require.NoError(t, err)
	_, err = rep.Replay()
	require.NoError(t, err)
}

// TestGenerateLeavesReleasedVersionsAlone: with v1 released, the generator
// rewrites neither its files nor its MANIFEST lines, so an edit stays
// visible to CheckManifest.
func TestGenerateLeavesReleasedVersionsAlone(t *testing.T) {
	r := copyRoot(t, lockV1)
	// Another valid spec: the generator of v2 reads v1's specs to record
	// the crossings, and a spec that does not decode stops it, loudly.
	other, err := os.ReadFile(corpusFile(r, "vmm-server/v1/spec/minimal.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(corpusFile(r, releasedSpec), other, 0o644))
	rep, err := Generate(r)
	require.NoError(t, err)
	require.Equal(t, []Version{{API: "vmm-server", N: 1}}, rep.Frozen)
	require.NotContains(t, rep.Written, Version{API: "vmm-server", N: 1}) // other contracts are still in development
	data, err := os.ReadFile(corpusFile(r, releasedSpec))
	require.NoError(t, err)
	require.Equal(t, string(other), string(data))
	_, err = CheckManifest(r)
	require.ErrorContains(t, err, "changed")

	// In development, the same edit is simply regenerated away.
	r = copyRoot(t, "")
	require.NoError(t, os.WriteFile(corpusFile(r, someSpec), []byte(`{"edited":true}`), 0o644))
	_, err = Generate(r)
	require.NoError(t, err)
	_, err = CheckManifest(r)
	require.NoError(t, err)
	clean := copyRoot(t, "")
	_, err = Generate(clean)
	require.NoError(t, err)
	require.NoError(t, treeEqual(filepath.Join(clean, Dir), filepath.Join(r, Dir)))
}

// TestCheckFreshCatchesStaleCorpus: a corpus that the generator would write
// otherwise (a file edited together with its MANIFEST line) fails.
func TestCheckFreshCatchesStaleCorpus(t *testing.T) {
	r := copyRoot(t, "")
	orig, err := os.ReadFile(corpusFile(r, someSpec))
	require.NoError(t, err)
	edited := []byte(`{"edited":true}`)
	require.NoError(t, os.WriteFile(corpusFile(r, someSpec), edited, 0o644))
	editManifest(t, r, func(s string) string {
		return strings.Replace(s, Sum(orig)+"  "+someSpec, Sum(edited)+"  "+someSpec, 1)
	})
	_, err = CheckManifest(r)
	require.NoError(t, err)
	err = CheckFresh(r)
	require.ErrorContains(t, err, someSpec)
	require.ErrorContains(t, err, "differs from what the generator writes")
}
