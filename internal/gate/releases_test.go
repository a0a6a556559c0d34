package gate

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/corpus"
)

// fakeWaggle is a module whose cmd/waggle prints which release it is.
func fakeWaggle(say string) map[string]string {
	return map[string]string{
		"go.mod":              "module example.com/fakewaggle\n\ngo 1.26.0\n",
		"cmd/waggle/main.go":  "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"" + say + "\") }\n",
		"cmd/waggle/extra.go": "package main\n",
	}
}

func TestBuildReleaseFromItsCommit(t *testing.T) {
	repo := newRepo(t)
	first := commitAll(t, repo, fakeWaggle("release one"), "one")
	commitAll(t, repo, fakeWaggle("release two"), "two") // HEAD moves on; the release stays at its commit
	bin, err := BuildRelease(ctx, repo, corpus.Release{Name: "v0.1.0", Commit: first}, t.TempDir())
	require.NoError(t, err)
	out, err := exec.Command(bin).Output()
	require.NoError(t, err)
	require.Equal(t, "release one\n", string(out))
	// The work tree is untouched.
	data, err := os.ReadFile(filepath.Join(repo, "cmd/waggle/main.go"))
	require.NoError(t, err)
	require.Contains(t, string(data), "release two")
}

func TestBuildReleaseThatDoesNotBuild(t *testing.T) {
	repo := newRepo(t)
	files := fakeWaggle("x")
	files["cmd/waggle/main.go"] = "package main\n\nfunc main() { undefined() }\n"
	c := commitAll(t, repo, files, "broken")
	_, err := BuildRelease(ctx, repo, corpus.Release{Name: "v0.1.0", Commit: c}, t.TempDir())
	require.ErrorContains(t, err, "release v0.1.0: build waggle from")
	require.ErrorContains(t, err, "undefined")
}

func TestBuildReleaseWithMissingCommit(t *testing.T) {
	repo := newRepo(t)
	commitAll(t, repo, fakeWaggle("x"), "one")
	missing := strings.Repeat("1", 40)
	_, err := BuildRelease(ctx, repo, corpus.Release{Name: "v0.1.0", Commit: missing}, t.TempDir())
	var mc *MissingCommitError
	require.True(t, errors.As(err, &mc), "got %v", err)
	require.False(t, mc.Shallow)
	require.ErrorContains(t, err, "release v0.1.0: commit "+missing+" is not in this clone")
	require.ErrorContains(t, err, "git fetch --unshallow")
}

// TestBuildReleaseInShallowClone: the release's commit is older than a
// depth-1 clone holds; the error says the clone is shallow and how to fix it.
func TestBuildReleaseInShallowClone(t *testing.T) {
	repo := newRepo(t)
	first := commitAll(t, repo, fakeWaggle("one"), "one")
	commitAll(t, repo, fakeWaggle("two"), "two")
	shallow := filepath.Join(t.TempDir(), "clone")
	run(t, filepath.Dir(shallow), "clone", "-q", "--depth", "1", "file://"+repo, shallow)
	_, err := BuildRelease(ctx, shallow, corpus.Release{Name: "v0.1.0", Commit: first}, t.TempDir())
	var mc *MissingCommitError
	require.True(t, errors.As(err, &mc), "got %v", err)
	require.True(t, mc.Shallow)
	require.ErrorContains(t, err, "(this clone is shallow)")
	require.ErrorContains(t, err, "git fetch --unshallow")
}

// TestReleasesNeedKVMToMigrate: with a release listed, the builds run
// here; the checks that run VMs are skipped with the reason where /dev/kvm
// is missing, and fail (not built yet) where it is present, never passing
// unchecked.
func TestReleasesNeedKVMToMigrate(t *testing.T) {
	repo := newRepo(t)
	files := fakeWaggle("release one")
	files["openapi/LOCK"] = strings.Repeat("0", 64) + "  openapi/vmm-server/v1.yaml\n"
	c := commitAll(t, repo, files, "one")
	commitAll(t, repo, map[string]string{"corpus/RELEASES": "v0.1.0  " + c + "  vmm-server/v1\n"}, "release")
	rep, err := CheckReleases(ctx, repo, t.TempDir())
	require.Equal(t, 1, rep.Releases)
	require.Equal(t, []string{"v0.1.0"}, rep.Built)
	if KVMAvailable() {
		require.ErrorIs(t, err, ErrReleaseMigrationNotBuilt)
		return
	}
	require.NoError(t, err)
	require.Contains(t, rep.Skipped, "/dev/kvm")
}

func TestReleasesFileMalformed(t *testing.T) {
	repo := newRepo(t)
	commitAll(t, repo, map[string]string{
		"openapi/LOCK":    "# none\n",
		"corpus/RELEASES": "# header\nv0.1.0 abc vmm-server/v1\n",
	}, "bad")
	_, err := CheckReleases(ctx, repo, t.TempDir())
	require.ErrorContains(t, err, "corpus/RELEASES line 2")
}
