package server

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStorageRootReachesTheVM: the server's storage root is what the VM
// opens its disk files beneath (a runtime that dropped it would leave the
// VMM with no root, or with another one).
func TestStorageRootReachesTheVM(t *testing.T) {
	root := t.TempDir()
	g := newRig(t, fakeGuest{}, func(o *RuntimeOptions) { o.StorageRoot = root })
	_, vm := g.ensure(t, "rooted")
	require.Equal(t, root, vm.cfg.StorageRoot)
}
