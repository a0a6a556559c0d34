package v1_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestClientServesOtherModules builds examples/go-client, a module of its
// own that requires this one, and checks that the generated client is all
// of waggle it compiles in: a program that drives VMM servers must not pull
// the VMM, the server or the conversions into its build.
func TestClientServesOtherModules(t *testing.T) {
	dir, err := filepath.Abs("../../../examples/go-client")
	require.NoError(t, err)
	build := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "client"), ".")
	build.Dir = dir
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build the example module:\n%s", out)

	list := exec.Command("go", "list", "-deps", ".")
	list.Dir = dir
	out, err = list.Output()
	require.NoError(t, err)
	var ours []string
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/wagglevm/waggle/") {
			ours = append(ours, pkg)
		}
	}
	require.Equal(t, []string{"github.com/wagglevm/waggle/gen/vmm-server/v1"}, ours,
		"the example compiles in only the generated client of this module")
}
