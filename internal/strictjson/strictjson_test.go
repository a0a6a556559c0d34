package strictjson

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDecode(t *testing.T) {
	var v struct{ A int }
	require.NoError(t, Decode([]byte(`{"A":1}`), &v))
	require.Equal(t, 1, v.A)
	require.NoError(t, Decode([]byte(" {\"A\":2} \n\t"), &v), "white space around the value is fine")
	require.Equal(t, 2, v.A)
	require.ErrorContains(t, Decode([]byte(`{"A":1,"B":2}`), &v), `unknown field "B"`)
	require.Error(t, Decode([]byte(`{"A":`), &v))
	for _, trailing := range []string{`{"A":1} {}`, `{"A":1}]`, `{"A":1}}`, `{"A":1} x`, `{"A":1},`} {
		require.ErrorIs(t, Decode([]byte(trailing), &v), ErrTrailingData, trailing)
	}
}

func TestSingle(t *testing.T) {
	for _, ok := range []string{`{}`, `[1,2]`, `"s"`, `3`, " null \n"} {
		require.NoError(t, Single([]byte(ok)), ok)
	}
	for _, trailing := range []string{`{} {}`, `{}]`, `[1]]`, `{} garbage`, `1 2`} {
		require.ErrorIs(t, Single([]byte(trailing)), ErrTrailingData, trailing)
	}
	for _, bad := range []string{``, `{`, `{"a":}`, `nul`} {
		err := Single([]byte(bad))
		require.Error(t, err, bad)
		require.NotErrorIs(t, err, ErrTrailingData, bad)
	}
}
