package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// The address registered with the control plane is one it can dial: a
// wildcard listen needs -advertise, and -advertise itself is checked.
func TestAdvertiseAddr(t *testing.T) {
	ok := []struct{ listen, advertise, want string }{
		{"127.0.0.1:12300", "", "127.0.0.1:12300"},
		{"[::1]:12300", "", "[::1]:12300"},
		{"10.0.0.7:12300", "", "10.0.0.7:12300"},
		{"[::]:12300", "10.0.0.7:12300", "10.0.0.7:12300"},
		{":12300", "sled7.example:12300", "sled7.example:12300"},
		{"0.0.0.0:12300", "[fd00::7]:12300", "[fd00::7]:12300"},
	}
	for _, c := range ok {
		got, err := advertiseAddr(c.listen, c.advertise)
		require.NoError(t, err, "%+v", c)
		require.Equal(t, c.want, got)
	}
	bad := []struct{ listen, advertise, names string }{
		{":12300", "", "-advertise"},
		{"0.0.0.0:12300", "", "-advertise"},
		{"[::]:12300", "", "-advertise"},
		{"127.0.0.1:12300", "0.0.0.0:12300", "wildcard"},
		{"127.0.0.1:12300", "[::]:1", "wildcard"},
		{"127.0.0.1:12300", "sled7", "-advertise"},
		{"127.0.0.1:12300", "sled7:0", "port"},
		{"127.0.0.1:12300", "sled7:70000", "port"},
	}
	for _, c := range bad {
		_, err := advertiseAddr(c.listen, c.advertise)
		require.Error(t, err, "%+v", c)
		require.Contains(t, err.Error(), c.names, "%+v", c)
	}
}

// A wildcard -listen with a control plane and no -advertise is refused
// before the agent starts, naming the flag.
func TestSledAgentWildcardNeedsAdvertise(t *testing.T) {
	dir := t.TempDir()
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	require.NoError(t, httpkit.WriteTokenFile(dir+"/cp-token", token))
	res := cli(t, "sled-agent", "-listen", ":0", "-root", dir+"/root", "-cpus", "1", "-memory-mib", "64",
		"-control-plane", "http://127.0.0.1:1", "-control-plane-token-file", dir+"/cp-token")
	require.NotZero(t, res.code)
	require.Contains(t, res.stderr, "give -advertise host:port")
}
