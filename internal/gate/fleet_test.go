package gate

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/corpus"
)

// headCommitBuild builds the waggle of this repository's HEAD commit (not
// the work tree, which others may be editing).
func headCommitBuild(t *testing.T) string {
	t.Helper()
	commit := run(t, repoRoot, "rev-parse", "HEAD^{commit}")
	bin, err := BuildRelease(ctx, repoRoot, corpus.Release{Name: "HEAD", Commit: commit}, t.TempDir())
	require.NoError(t, err)
	return bin
}

// TestFleetDriveOfOneBuild: HEAD's control plane with HEAD's sled agents
// passes every step the machine allows, and says each.
func TestFleetDriveOfOneBuild(t *testing.T) {
	bin := headCommitBuild(t)
	did, err := FleetDrive(ctx, bin, bin, KVMAvailable())
	t.Logf("did: %s", strings.Join(did, "\n"))
	require.NoError(t, err)
	require.Contains(t, did, "both sleds registered and listed active with their capacity")
}
