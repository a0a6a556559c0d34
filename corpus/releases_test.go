package corpus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTodaysReleases: RELEASES parses, and each release serves only
// released versions (ReadReleases checks them against openapi/LOCK).
func TestTodaysReleases(t *testing.T) {
	rels, err := ReadReleases(root)
	require.NoError(t, err)
	require.NotEmpty(t, rels)
	require.Equal(t, "v0.1.0", rels[0].Name)
	require.Equal(t, []Version{{"vmm-server", 1}}, rels[0].Versions)
}

func TestParseReleases(t *testing.T) {
	commit, commit2 := strings.Repeat("ab", 20), strings.Repeat("cd", 20)
	good := "# header\n\nv0.1.0  " + commit + "  vmm-server/v1\nv0.2.0 " + commit2 + " vmm-server/v1,vmm-server/v2\n"
	rels, err := ParseReleases("R", []byte(good))
	require.NoError(t, err)
	require.Len(t, rels, 2)
	require.Equal(t, Release{Name: "v0.1.0", Commit: commit, Versions: []Version{{"vmm-server", 1}}, Line: 3}, rels[0])
	require.Equal(t, []Version{{"vmm-server", 1}, {"vmm-server", 2}}, rels[1].Versions)

	for line, want := range map[string]string{
		"v0.1.0 " + commit:                                                 "R line 2: want",
		"v0.1.0 abc123 vmm-server/v1":                                      "R line 2: release v0.1.0: commit \"abc123\" is not a full",
		"v0.1.0 " + strings.ToUpper(commit) + " vmm-server/v1":             "not a full 40-digit lower-case",
		"v/1 " + commit + " vmm-server/v1":                                 "R line 2: release name \"v/1\"",
		"v0.1.0 " + commit2 + " vmm-server/1":                              "R line 2: release v0.1.0: \"vmm-server/1\" is not an API version",
		"v0.0.9 " + commit2 + " vmm-server/v1":                             "R line 2: release v0.0.9 is already listed on line 1",
		"v0.1.0 " + commit + " vmm-server/v1":                              "R line 2: release v0.1.0: commit " + commit + " is already released as v0.0.9 on line 1",
		"v0.1.0 " + commit2 + " vmm-server/v1,sled-agent/v1,vmm-server/v1": "R line 2: release v0.1.0 lists vmm-server/v1 twice",
	} {
		_, err := ParseReleases("R", []byte("v0.0.9 "+commit+" vmm-server/v1\n"+line+"\n"))
		require.ErrorContains(t, err, want, "line %q", line)
	}
}

// TestReleaseOfAnUnreleasedVersion: a release may only serve versions that
// openapi/LOCK lists.
func TestReleaseOfAnUnreleasedVersion(t *testing.T) {
	r := copyRoot(t, "# nothing released\n")
	line := "v0.1.0  " + strings.Repeat("0", 40) + "  vmm-server/v1\n"
	require.NoError(t, os.WriteFile(filepath.Join(r, Dir, ReleasesName), []byte(line), 0o644))
	_, err := ReadReleases(r)
	require.ErrorContains(t, err, "corpus/RELEASES line 1: release v0.1.0 serves vmm-server/v1, which openapi/LOCK does not list as released")
	r = copyRoot(t, lockV1)
	require.NoError(t, os.WriteFile(filepath.Join(r, Dir, ReleasesName), []byte(line), 0o644))
	rels, err := ReadReleases(r)
	require.NoError(t, err)
	require.Len(t, rels, 1)
}
