package controlplane_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/externalapi"
	cpapi "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
)

// A start that the sled's VMM server refuses (no KVM here: every real
// build fails), asked through the external API over real HTTP: the saga
// the API shows ends unwound with error_code invalid_spec, the code an
// error answer has for a spec refused, beside its error for people (the
// server's own code, vmm_refused, in its words); the instance is stopped.
func TestSagaErrorCodeThroughTheAPI(t *testing.T) {
	f := newSagaFleet(t, 0)
	f.addSledDialing(vmmclient.New(nil))
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	h, err := externalapi.NewHandler(f.ops(), httpkit.HandlerOptions{Log: quiet(), Auth: httpkit.BearerToken(token)})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cl, err := cpapi.NewClientWithResponses(srv.URL+"/v1", cpapi.WithRequestEditorFn(httpkit.BearerAuth(token)))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	start := true
	created, err := cl.InstanceCreateWithResponse(ctx, cpapi.InstanceCreate{Name: "refused-api", Start: &start,
		Spec: cpapi.SpecEnvelope{SpecVersion: "vmm-server/v1", Spec: tickerSpecMap(t)}})
	require.NoError(t, err)
	require.NotNil(t, created.JSON201, "%d %s", created.StatusCode(), created.Body)
	require.NotNil(t, created.JSON201.Saga)
	require.Nil(t, created.JSON201.Saga.ErrorCode, "a saga under way has no error code")

	var last cpapi.Saga
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		r, err := cl.SagaGetWithResponse(ctx, created.JSON201.Saga.Id)
		if !assert.NoError(c, err) || !assert.NotNil(c, r.JSON200, "%d %s", r.StatusCode(), r.Body) {
			return
		}
		last = *r.JSON200
		assert.Contains(c, []cpapi.SagaState{cpapi.SagaStateUnwound, cpapi.SagaStateDone, cpapi.SagaStateStuck}, last.State)
	}, 50*time.Second, 20*time.Millisecond, "the saga never ended")
	require.Equal(t, cpapi.SagaStateUnwound, last.State)
	require.NotNil(t, last.ErrorCode)
	require.Equal(t, cpapi.SagaErrorCodeInvalidSpec, *last.ErrorCode)
	require.NotNil(t, last.Error)
	require.Contains(t, *last.Error, "vmm_refused")

	got, err := cl.InstanceGetWithResponse(ctx, "refused-api")
	require.NoError(t, err)
	require.NotNil(t, got.JSON200)
	require.Equal(t, cpapi.InstanceStateStopped, got.JSON200.State)
	f.requireNoLeaks()
}

// tickerSpecMap is tickerSpec as the envelope of the API carries it.
func tickerSpecMap(t testing.TB) map[string]any {
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(tickerSpec), &m))
	return m
}
