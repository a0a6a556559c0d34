package v2

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/spec"
)

// TestProblemsComeInOneOrder: the same bad spec, or the same bad
// replacements, give the same message every time (map iteration must not
// leak into it).
func TestProblemsComeInOneOrder(t *testing.T) {
	w := api.InstanceSpec{Board: api.Board{Cpus: 1, MemoryMb: 64, Chipset: api.ChipsetI440fx}, Components: map[string]api.Component{}}
	replace := map[string]api.Component{}
	for i := range 12 {
		var bad api.Component
		require.NoError(t, bad.FromVirtioDiskComponent(api.VirtioDiskComponent{Backend: fmt.Sprintf("missing-%d", i), Slot: int32(20 + i)}))
		w.Components[fmt.Sprintf("disk%d", i)] = bad
		replace[fmt.Sprintf("disk%d", i)] = bad
	}
	_, first := ToSpec(w)
	require.Error(t, first)
	require.Greater(t, strings.Count(first.Error(), ";"), 5, "many problems: %v", first)
	_, firstReplace := ReplacementsToSpec(replace)
	require.Error(t, firstReplace)
	for range 50 {
		_, err := ToSpec(w)
		require.Equal(t, first.Error(), err.Error())
		_, err = ReplacementsToSpec(replace)
		require.Equal(t, firstReplace.Error(), err.Error())
	}
}

// TestPathRuleIsTheHubs: the contract's pattern for a storage path is the
// hub's rule, so the HTTP layer and the spec builder agree on every path.
func TestPathRuleIsTheHubs(t *testing.T) {
	all, err := schemas()
	require.NoError(t, err)
	path := all["FileStorageBackendComponent"].Value.Properties["path"].Value
	require.Equal(t, spec.StoragePathPattern, path.Pattern)
	require.Equal(t, uint64(spec.MaxStoragePathLen), *path.MaxLength)
}
