package spec

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseKey(t *testing.T) {
	cases := []struct {
		in      string
		isUUID  bool
		str     string
		wantErr string
	}{
		{in: "com1", str: "com1"},
		{in: "disk-0.boot_a", str: "disk-0.boot_a"},
		{in: "0e4ea4d8-4f5e-4e8b-9d0a-8f1f0b6c9a11", isUUID: true, str: "0e4ea4d8-4f5e-4e8b-9d0a-8f1f0b6c9a11"},
		{in: "0E4EA4D8-4F5E-4E8B-9D0A-8F1F0B6C9A11", isUUID: true, str: "0e4ea4d8-4f5e-4e8b-9d0a-8f1f0b6c9a11"},
		{in: "0e4ea4d8-4f5e-4e8b-9d0a-8f1f0b6c9a1g", str: "0e4ea4d8-4f5e-4e8b-9d0a-8f1f0b6c9a1g"}, // not hex: a name
		{in: "", wantErr: "empty"},
		{in: "-lead", wantErr: "start with a letter or digit"},
		{in: "has space", wantErr: "allowed are"},
		{in: "x234567890123456789012345678901234567890123456789012345678901234", wantErr: "longer than 63"},
		{in: "x23456789012345678901234567890123456789012345678901234567890123", str: "x23456789012345678901234567890123456789012345678901234567890123"},
		// The ends of each range of allowed bytes, and the bytes beside them.
		{in: "aAzZ09", str: "aAzZ09"},
		{in: "z", str: "z"},
		{in: "Z", str: "Z"},
		{in: "9", str: "9"},
		{in: "a{", wantErr: "allowed are"},
		{in: "a`", wantErr: "allowed are"},
		{in: "a[", wantErr: "allowed are"},
		{in: "a@", wantErr: "allowed are"},
		{in: "a:", wantErr: "allowed are"},
		{in: "a/", wantErr: "allowed are"},
		{in: "{a", wantErr: "start with a letter or digit"},
		{in: "[a", wantErr: "start with a letter or digit"},
		{in: ":a", wantErr: "start with a letter or digit"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			k, err := ParseKey(c.in)
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.isUUID, k.IsUUID())
			require.Equal(t, c.str, k.String())
			again, err := ParseKey(k.String())
			require.NoError(t, err)
			require.Equal(t, k, again, "String must parse back to the same key")
		})
	}
}

func TestKeyFromUUIDMatchesParse(t *testing.T) {
	u := [16]byte{0x0e, 0x4e, 0xa4, 0xd8, 0x4f, 0x5e, 0x4e, 0x8b, 0x9d, 0x0a, 0x8f, 0x1f, 0x0b, 0x6c, 0x9a, 0x11}
	require.Equal(t, MustKey("0e4ea4d8-4f5e-4e8b-9d0a-8f1f0b6c9a11"), KeyFromUUID(u))
	got, ok := KeyFromUUID(u).UUID()
	require.True(t, ok)
	require.Equal(t, u, got)
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"com1", "0e4ea4d8-4f5e-4e8b-9d0a-8f1f0b6c9a11", "", "-", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		again, err := ParseKey(k.String())
		require.NoError(t, err)
		require.Equal(t, k, again)
	})
}
