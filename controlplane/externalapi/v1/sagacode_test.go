package v1

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	api "github.com/wagglevm/waggle/gen/control-plane/v1"
)

// A saga's error code goes on the wire as it is; a saga with none has
// none; a code this version's contract does not list (a newer build's)
// goes as internal, never as a value the contract refuses.
func TestSagaErrorCodeToV1(t *testing.T) {
	for _, c := range controlplane.SagaErrorCodes {
		got := SagaToV1(controlplane.SagaView{State: controlplane.SagaUnwound, Error: "step x: y", ErrorCode: c})
		require.NotNil(t, got.ErrorCode)
		require.Equal(t, string(c), string(*got.ErrorCode))
	}
	require.Nil(t, SagaToV1(controlplane.SagaView{State: controlplane.SagaDone}).ErrorCode)
	got := SagaToV1(controlplane.SagaView{State: controlplane.SagaStuck, Error: "z", ErrorCode: "from_the_future"})
	require.NotNil(t, got.ErrorCode)
	require.Equal(t, api.SagaErrorCodeInternal, *got.ErrorCode)
}
