package internalapi_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/cpclient"
)

const testTimeout = 10 * time.Second

// The sled agent's own client of this API talks to this server: a ring
// for a known VMM is nil, for an unknown one ErrBellUnknownVmm (which
// makes the agent ring again a few times), a 503 neither; a registration
// arrives whole.
func TestSledAgentClient(t *testing.T) {
	known := uuid.New()
	rt := newFake(known)
	url, _ := serve(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	c, err := cpclient.New(url, func() (string, error) { return token, nil })
	require.NoError(t, err)
	require.NoError(t, c.Ring(ctx, known))
	require.ErrorIs(t, c.Ring(ctx, uuid.New()), sledagent.ErrBellUnknownVmm)

	sled := uuid.New()
	require.NoError(t, c.Register(ctx, sled, "10.1.2.3:12300", []string{"v1"}, sledagent.Resources{CPUs: 8, MemoryMiB: 4096}))
	_, sleds := rt.calls()
	require.Equal(t, []model.Sled{{ID: sled, Address: "10.1.2.3:12300", APIVersions: []string{"v1"},
		Capacity: model.Resources{CPUs: 8, MemoryMiB: 4096}}}, sleds)

	rt.fail = fmt.Errorf("db: %w", controlplane.ErrUnavailable)
	err = c.Ring(ctx, known)
	require.Error(t, err)
	require.False(t, errors.Is(err, sledagent.ErrBellUnknownVmm), "a 503 is not an unknown VMM: %v", err)
	require.ErrorContains(t, err, "503")
	require.Error(t, c.Register(ctx, sled, "10.1.2.3:12300", []string{"v1"}, sledagent.Resources{CPUs: 8, MemoryMiB: 4096}))

	rt.fail = nil
	wrong, err := cpclient.New(url, func() (string, error) { return "another-token", nil })
	require.NoError(t, err)
	err = wrong.Ring(ctx, known)
	require.Error(t, err)
	require.False(t, errors.Is(err, sledagent.ErrBellUnknownVmm))
	require.ErrorContains(t, err, "401")

	// A refused registration says what the control plane said: its code
	// and the field at fault, so that the agent's log tells what to fix.
	err = c.Register(ctx, sled, "0.0.0.0:12300", []string{"v1"}, sledagent.Resources{CPUs: 8, MemoryMiB: 4096})
	require.ErrorContains(t, err, "400 invalid_request: body.address")
	require.NotContains(t, err.Error(), token, "the token is never in an error")
}
