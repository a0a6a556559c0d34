package controlplane_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/model"
	sledapi "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/internal/kvmtest"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
)

// A real ticker VM started through a sled agent shows up running in the
// database; stopped through the agent, it goes through stopping to its
// end, and the control plane retires it: no VMM, no reservation left, the
// instance stopped.
func TestRealVmmLifecycleReachesTheDatabase(t *testing.T) {
	kvmtest.Require(t)
	f := newFleet(t, 0)
	s := f.addSledDialing(vmmclient.New(nil))
	ctx := context.Background()
	in := f.instance("real")
	id := f.start(in, s)
	f.waitVmm(id, "running", inState("running"))

	stop, err := s.client.VmmStatePutWithResponse(ctx, id, sledapi.VmmStateChangeRequest{Requested: sledapi.VmmStateRequestedStop})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, stop.StatusCode(), string(stop.Body))
	v := f.waitVmm(id, "destroyed and retired", func(v model.Vmm) bool { return v.Runtime.State == model.VmmDestroyed && v.TimeRetired != nil })
	require.Greater(t, v.Runtime.Gen, model.Generation(2))
	got, err := f.store.Instance(ctx, in.ID)
	require.NoError(t, err)
	require.Equal(t, model.InstanceNoVmm, got.Runtime.State)
	require.Equal(t, model.VisibleStopped, model.Derive(got.Runtime, nil))
	reserved, err := f.store.Reserved(ctx, s.id)
	require.NoError(t, err)
	require.Equal(t, model.Resources{}, reserved)
}
