package gate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/corpus"
)

// releaseFlowRepo is the scratch repository of the release steps: an early
// commit, the development commit, and the release commit adding the LOCK
// line and the RELEASES line naming the development commit. It returns the
// repository, the early and the development commits.
func releaseFlowRepo(t *testing.T) (repo, early, dev string) {
	t.Helper()
	files := repoFiles(t)
	for p, c := range fakeWaggle("v1 server") {
		files[p] = c
	}
	repo = newRepo(t)
	early = commitAll(t, repo, map[string]string{"README": "early\n"}, "early")
	dev = commitAll(t, repo, files, "v1 ready")
	lock := files["openapi/LOCK"] + corpus.Sum([]byte(files["openapi/vmm-server/v1.yaml"])) + "  openapi/vmm-server/v1.yaml\n"
	commitAll(t, repo, map[string]string{
		"openapi/LOCK":    lock,
		"corpus/RELEASES": files["corpus/RELEASES"] + "v0.1.0  " + dev + "  vmm-server/v1\n",
	}, "release v1")
	err, out := runPhase(t, repo, "history")
	require.NoError(t, err, out)
	return repo, early, dev
}

func readFile(t *testing.T, repo, p string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo, filepath.FromSlash(p)))
	require.NoError(t, err)
	return string(data)
}

// TestReleasesLinesAreKept: a committed RELEASES line never goes away nor
// changes, committed or not.
func TestReleasesLinesAreKept(t *testing.T) {
	repo, early, dev := releaseFlowRepo(t)
	rel := readFile(t, repo, "corpus/RELEASES")
	line := "v0.1.0  " + dev + "  vmm-server/v1\n"
	require.Contains(t, rel, line)

	for name, edited := range map[string]string{
		"removed":           strings.Replace(rel, line, "", 1),
		"renamed":           strings.Replace(rel, "v0.1.0  ", "v0.1.1  ", 1),
		"moved to a commit": strings.Replace(rel, dev, early, 1),
		"versions changed":  strings.Replace(rel, "vmm-server/v1\n", "vmm-server/v1,sled-agent/v1\n", 1),
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(filepath.Join(repo, "corpus/RELEASES"), []byte(edited), 0o644))
			t.Cleanup(func() { require.NoError(t, os.WriteFile(filepath.Join(repo, "corpus/RELEASES"), []byte(rel), 0o644)) })
			err, out := runPhase(t, repo, "history")
			require.Contains(t, out, "history  FAIL")
			require.ErrorContains(t, err, "corpus/RELEASES: release v0.1.0 ("+dev[:12])
			require.ErrorContains(t, err, "was removed or changed")
		})
	}
	// Committed, the removal fails just the same.
	commitAll(t, repo, map[string]string{"corpus/RELEASES": strings.Replace(rel, line, "", 1)}, "drop the release")
	err, _ := runPhase(t, repo, "history")
	require.ErrorContains(t, err, "corpus/RELEASES: release v0.1.0")
}

// TestReleasesInHistoryOrder: each release's commit descends from those
// of the lines above it.
func TestReleasesInHistoryOrder(t *testing.T) {
	repo, early, dev := releaseFlowRepo(t)
	rel := readFile(t, repo, "corpus/RELEASES")
	commitAll(t, repo, map[string]string{"corpus/RELEASES": rel + "v0.2.0  " + early + "  vmm-server/v1\n"}, "an older commit released after")
	err, _ := runPhase(t, repo, "history")
	require.ErrorContains(t, err, "release v0.2.0 (line")
	require.ErrorContains(t, err, "does not descend from "+dev[:12]+" of release v0.1.0")

	head := run(t, repo, "rev-parse", "HEAD")
	commitAll(t, repo, map[string]string{"corpus/RELEASES": rel + "v0.2.0  " + head + "  vmm-server/v1\n"}, "fix")
	// The v0.2.0 line of the commit before is gone (changed): that fails,
	// but not for its order.
	err, _ = runPhase(t, repo, "history")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "does not descend")
}

// TestReleasedVersionGainsNoFiles: a file added to a released version's
// corpus with its MANIFEST line fails the history phase (the manifest
// phase sees nothing wrong).
func TestReleasedVersionGainsNoFiles(t *testing.T) {
	repo := releasedRepo(t)
	m := readFile(t, repo, "corpus/MANIFEST")
	newFile := "corpus/vmm-server/v1/spec/zz-new.json"
	body := readFile(t, repo, specFile)
	commitAll(t, repo, map[string]string{
		newFile:           body,
		"corpus/MANIFEST": m + corpus.Sum([]byte(body)) + "  vmm-server/v1/spec/zz-new.json\n",
	}, "sneak a file in")
	err, _ := runPhase(t, repo, "manifest")
	require.NoError(t, err)
	err, _ = runPhase(t, repo, "history")
	require.ErrorContains(t, err, "vmm-server/v1/spec/zz-new.json is listed, but vmm-server/v1 was released in")
}

// TestAfterFileLinesArePinned: an after-file's line is fixed by the first
// commit that lists it.
func TestAfterFileLinesArePinned(t *testing.T) {
	repo := releasedRepo(t)
	m := readFile(t, repo, "corpus/MANIFEST")
	after := "corpus/vmm-server/v1/spec/minimal.after.json"
	line := func(body, reason string) string {
		return corpus.Sum([]byte(body)) + "  vmm-server/v1/spec/minimal.after.json  reason: " + reason + "\n"
	}
	commitAll(t, repo, map[string]string{after: "{\"a\":1}", "corpus/MANIFEST": m + line("{\"a\":1}", "first")}, "accept a difference")
	err, out := runPhase(t, repo, "history")
	require.NoError(t, err, out)

	for name, files := range map[string]map[string]string{
		"rewritten": {after: "{\"a\":2}", "corpus/MANIFEST": m + line("{\"a\":2}", "first")},
		"reason":    {"corpus/MANIFEST": m + line("{\"a\":1}", "second thoughts")},
		"removed":   {after: "", "corpus/MANIFEST": m},
	} {
		t.Run(name, func(t *testing.T) {
			r := filepath.Join(t.TempDir(), "clone")
			run(t, filepath.Dir(r), "clone", "-q", "file://"+repo, r)
			commitAll(t, r, files, "change the after-file")
			err, _ := runPhase(t, r, "history")
			require.ErrorContains(t, err, "the line of vmm-server/v1/spec/minimal.after.json")
			require.ErrorContains(t, err, "first committed in")
		})
	}
}

// TestCapturedFilesCommitInHistory: a captured file's recorded commit must
// be in HEAD's history.
func TestCapturedFilesCommitInHistory(t *testing.T) {
	repo := newRepo(t)
	head := commitAll(t, repo, repoFiles(t), "dev")
	run(t, repo, "checkout", "-q", "-b", "side")
	side := commitAll(t, repo, map[string]string{"README": "side\n"}, "side")
	run(t, repo, "checkout", "-q", "main")
	v1 := corpus.Version{API: "vmm-server", N: 1}
	data := readFile(t, repo, specFile)
	for commit, want := range map[string]string{
		head:                    "",
		side:                    "which is not in HEAD's history",
		strings.Repeat("c", 40): "which this clone cannot place in HEAD's history",
	} {
		_, err := corpus.WriteCaptured(repo, v1, map[string][]byte{"spec/x.json": []byte(data)}, corpus.Provenance{Commit: commit, Command: "test"})
		require.NoError(t, err)
		err, out := runPhase(t, repo, "history")
		if want == "" {
			require.NoError(t, err, out)
			continue
		}
		require.ErrorContains(t, err, "corpus/CAPTURED line 3: vmm-server/v1/spec/captured-x.json was captured at commit "+commit[:12])
		require.ErrorContains(t, err, want)
	}
}
