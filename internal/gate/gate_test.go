package gate

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/corpus"
)

// TestRunOnThisRepository runs the whole gate over the repository.
func TestRunOnThisRepository(t *testing.T) {
	var out bytes.Buffer
	err := Run(ctx, repoRoot, Phases, &out)
	t.Log("\n" + out.String())
	require.NoError(t, err)
	for _, p := range Phases {
		require.Contains(t, out.String(), "compat: "+p.Name)
	}
}

// repoFiles reads the files of this repository a gate needs: the contracts
// and the corpus data (not its Go code).
func repoFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, dir := range []string{"openapi", "corpus"} {
		readTree(t, repoRoot, dir, files)
	}
	// The copy's history is the test's own, so it starts with nothing
	// released and nothing captured: this repository's LOCK, RELEASES and
	// CAPTURED lines name commits the copy does not have.
	for _, p := range []string{"openapi/LOCK", "corpus/RELEASES"} {
		files[p] = commentsOnly(files[p])
	}
	delete(files, "corpus/"+corpus.CapturedName)
	var manifest []string
	for _, line := range strings.SplitAfter(files["corpus/MANIFEST"], "\n") {
		if strings.Contains(line, "/"+corpus.CapturedPrefix) {
			continue
		}
		manifest = append(manifest, line)
	}
	files["corpus/MANIFEST"] = strings.Join(manifest, "")
	for p := range files {
		if strings.HasPrefix(path.Base(p), corpus.CapturedPrefix) {
			delete(files, p)
		}
	}
	return regenerated(t, files)
}

// regenerated returns files with the corpus today's generator writes for
// them: with nothing released, every version is in development, and its
// synthesized files are the code's of today, not those frozen at its
// release (protocol 2's Hello and Plan, for one).
func regenerated(t *testing.T, files map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	_, err := corpus.Generate(dir)
	require.NoError(t, err)
	for p := range files {
		if strings.HasPrefix(p, "corpus/") {
			delete(files, p)
		}
	}
	readTree(t, dir, "corpus", files)
	return files
}

// readTree adds the files beneath root/dir but Go code to files, keyed by
// their slash paths relative to root.
func readTree(t *testing.T, root, dir string, files map[string]string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".go") {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		data, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = string(data)
		return err
	})
	require.NoError(t, err)
}

// commentsOnly keeps the comment lines of a ledger file.
func commentsOnly(text string) string {
	var out strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if strings.HasPrefix(line, "#") {
			out.WriteString(line)
		}
	}
	return out.String()
}

// releasedRepo is a git repository holding this repository's contracts and
// corpus, with vmm-server/v1 released in its first commit.
func releasedRepo(t *testing.T) string {
	t.Helper()
	files := repoFiles(t)
	files["openapi/LOCK"] = "# released\n" + corpus.Sum([]byte(files["openapi/vmm-server/v1.yaml"])) + "  openapi/vmm-server/v1.yaml\n"
	repo := newRepo(t)
	commitAll(t, repo, files, "release v1")
	return repo
}

const specFile = "corpus/vmm-server/v1/spec/minimal.json"

func phase(name string) []Phase {
	for _, p := range Phases {
		if p.Name == name {
			return []Phase{p}
		}
	}
	panic("no phase " + name)
}

// runPhase runs one phase over repo and returns its error and output.
func runPhase(t *testing.T, repo, name string) (error, string) {
	t.Helper()
	var out bytes.Buffer
	err := Run(ctx, repo, phase(name), &out)
	return err, out.String()
}

func TestGateFailsWhenBroken(t *testing.T) {
	cases := []struct {
		name, phase string
		break_      func(t *testing.T, repo string)
		want        []string
	}{
		{"released document edited", "lock", func(t *testing.T, repo string) {
			p := filepath.Join(repo, "openapi/vmm-server/v1.yaml")
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, append(data, "\n# one more byte\n"...), 0o644))
		}, []string{"lock:", "released document openapi/vmm-server/v1.yaml changed"}},
		{"LOCK line removed", "lock", func(t *testing.T, repo string) {
			commitAll(t, repo, map[string]string{"openapi/LOCK": "# released\n"}, "drop the line")
		}, []string{"line for openapi/vmm-server/v1.yaml", "was removed or changed"}},
		{"LOCK line rewritten", "lock", func(t *testing.T, repo string) {
			commitAll(t, repo, map[string]string{"openapi/LOCK": strings.Repeat("a", 64) + "  openapi/vmm-server/v1.yaml\n"}, "rewrite")
		}, []string{"was removed or changed"}},
		{"released corpus file edited", "manifest", func(t *testing.T, repo string) {
			require.NoError(t, os.WriteFile(filepath.Join(repo, specFile), []byte("{}"), 0o644))
		}, []string{"manifest:", "vmm-server/v1/spec/minimal.json changed", "is released"}},
		{"released corpus file edited with its MANIFEST line", "history", func(t *testing.T, repo string) {
			m, err := os.ReadFile(filepath.Join(repo, "corpus/MANIFEST"))
			require.NoError(t, err)
			old, err := os.ReadFile(filepath.Join(repo, specFile))
			require.NoError(t, err)
			commitAll(t, repo, map[string]string{
				specFile:          "{}",
				"corpus/MANIFEST": strings.Replace(string(m), corpus.Sum(old), corpus.Sum([]byte("{}")), 1),
			}, "sneak an edit in")
		}, []string{"history:", "the line of vmm-server/v1/spec/minimal.json", "was removed or changed"}},
		{"release at a commit the clone lacks", "releases", func(t *testing.T, repo string) {
			commitAll(t, repo, map[string]string{"corpus/RELEASES": "v0.1.0  " + strings.Repeat("2", 40) + "  vmm-server/v1\n"}, "release")
		}, []string{"releases:", "is not in this clone", "git fetch"}},
		{"malformed MANIFEST", "manifest", func(t *testing.T, repo string) {
			p := filepath.Join(repo, "corpus/MANIFEST")
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, append(data, "oops\n"...), 0o644))
		}, []string{"corpus/MANIFEST line", "oops"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo := releasedRepo(t)
			err, _ := runPhase(t, repo, c.phase)
			require.NoError(t, err, "the copy passes before it is broken")
			c.break_(t, repo)
			err, out := runPhase(t, repo, c.phase)
			require.Error(t, err)
			require.Contains(t, out, "FAIL")
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// TestHistoryInShallowClone: the history check cannot run in a shallow
// clone and fails saying so.
func TestHistoryInShallowClone(t *testing.T) {
	repo := releasedRepo(t)
	commitAll(t, repo, map[string]string{"README": "x"}, "two")
	shallow := filepath.Join(t.TempDir(), "clone")
	run(t, filepath.Dir(shallow), "clone", "-q", "--depth", "1", "file://"+repo, shallow)
	_, err := CheckCorpusHistory(ctx, shallow)
	require.ErrorContains(t, err, "shallow clone")
}

// TestRunReportsEveryFailure: Run goes on after a failed phase and names
// each failed phase.
func TestRunReportsEveryFailure(t *testing.T) {
	repo := releasedRepo(t)
	require.NoError(t, os.WriteFile(filepath.Join(repo, specFile), []byte("{}"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(repo, "corpus/vmm-server/v1/spec/new.json"), []byte("{}"), 0o644))
	var out bytes.Buffer
	err := Run(ctx, repo, Phases, &out)
	require.Error(t, err)
	require.Contains(t, out.String(), "compat: manifest FAIL")
	require.Contains(t, out.String(), "compat: replay   FAIL")
	require.Contains(t, out.String(), "compat: lock     ok")
	require.Contains(t, out.String(), "phases failed")
	require.ErrorContains(t, err, "spec/new.json is not listed")
	require.ErrorContains(t, err, "replay: corpus/vmm-server/v1/spec/minimal.json")
}

// TestReleaseFlow walks the release steps of package corpus's doc in a
// scratch repository: a development commit, then one commit adding the LOCK
// line and the RELEASES line naming its parent. The gate passes on it (the
// KVM checks aside, which fail where /dev/kvm is), and an edit of the
// frozen corpus afterwards fails.
func TestReleaseFlow(t *testing.T) {
	files := repoFiles(t)
	for p, c := range fakeWaggle("v1 server") {
		files[p] = c
	}
	repo := newRepo(t)
	dev := commitAll(t, repo, files, "v1 ready")
	lock := files["openapi/LOCK"] + corpus.Sum([]byte(files["openapi/vmm-server/v1.yaml"])) + "  openapi/vmm-server/v1.yaml\n"
	commitAll(t, repo, map[string]string{
		"openapi/LOCK":    lock,
		"corpus/RELEASES": files["corpus/RELEASES"] + "v0.1.0  " + dev + "  vmm-server/v1\n",
	}, "release v1")

	var out bytes.Buffer
	err := Run(ctx, repo, Phases, &out)
	t.Log("\n" + out.String())
	if KVMAvailable() {
		var me *ReleaseMigrationError
		require.ErrorAs(t, err, &me, "the fake build cannot migrate a VM")
	} else {
		require.NoError(t, err)
		require.Contains(t, out.String(), "1 releases in corpus/RELEASES, 1 built from their commits; ran without a VM: v0.1.0's server by HEAD's CLI (")
		require.Contains(t, out.String(), "; SKIPPED: migrating a running VM")
	}
	require.Contains(t, out.String(), "vmm-server/v1 (released in")

	rep, err := corpus.Generate(repo)
	require.NoError(t, err)
	require.Len(t, rep.Frozen, 1, "the generator leaves the released corpus alone")

	require.NoError(t, os.WriteFile(filepath.Join(repo, specFile), []byte("{}"), 0o644))
	err, _ = runPhase(t, repo, "manifest")
	require.ErrorContains(t, err, "vmm-server/v1/spec/minimal.json changed")
}
