package v2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// generate runs the pinned oapi-codegen on doc and returns its output.
func generate(t *testing.T, doc string) []byte {
	t.Helper()
	dir := t.TempDir()
	cfg, err := os.ReadFile("oapi-codegen.yaml")
	require.NoError(t, err)
	out := filepath.Join(dir, "out.go")
	cfgPath := filepath.Join(dir, "cfg.yaml")
	require.NoError(t, os.WriteFile(cfgPath, bytes.Replace(cfg, []byte("output: v2.gen.go"), []byte("output: "+out), 1), 0o644))
	cmd := exec.Command("go", "tool", "oapi-codegen", "-config", cfgPath, doc)
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, string(msg))
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	return data
}

// TestGeneratedCodeIsFresh regenerates from the contract and compares with
// the committed code; then it changes the contract and sees the comparison
// fail, so the freshness check of `make check` can fail.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("runs oapi-codegen")
	}
	committed, err := os.ReadFile("v2.gen.go")
	require.NoError(t, err)
	const doc = "../../../openapi/vmm-server/v2.yaml"
	require.Equal(t, string(committed), string(generate(t, doc)), "gen/ is stale: run make generate")

	src, err := os.ReadFile(doc)
	require.NoError(t, err)
	changed := filepath.Join(t.TempDir(), "v2.yaml")
	require.NoError(t, os.WriteFile(changed, []byte(strings.Replace(string(src), "summary: Get the instance's spec", "summary: Fetch the spec", 1)), 0o644))
	require.NotEqual(t, string(committed), string(generate(t, changed)), "a changed contract must make the committed code stale")
}
