package strictjson

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecode(t *testing.T) {
	var v struct{ A int }
	require.NoError(t, Decode([]byte(`{"A":1}`), &v))
	require.Equal(t, 1, v.A)
	require.ErrorContains(t, Decode([]byte(`{"A":1,"B":2}`), &v), `unknown field "B"`)
	require.ErrorIs(t, Decode([]byte(`{"A":1} {}`), &v), ErrTrailingData)
	require.Error(t, Decode([]byte(`{"A":`), &v))
}
