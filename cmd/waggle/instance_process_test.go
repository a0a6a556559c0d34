package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/pgembed"
)

var cpAPIListening = regexp.MustCompile(`waggle control-plane external API listening"? addr=(\S+)`)

// A real control plane process serves its external API on -api-listen with
// a token of its own, generated where the CLI finds it; the CLI creates,
// lists, gets and deletes an instance there, and a name used twice is
// refused with what to do.
func TestControlPlaneProcessExternalAPI(t *testing.T) {
	if !pgembed.Available() {
		t.Skip("no PostgreSQL binaries on this host (make deps installs them)")
	}
	fastSagaPolls(t)
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // the daemon writes its token there, the CLI reads it
	t.Setenv("WAGGLE_CONTROL_PLANE_TOKEN_FILE", "")
	base, err := os.MkdirTemp("", "waggle-cp-api-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	tokenFile := filepath.Join(base, "cp-token")
	require.NoError(t, httpkit.WriteTokenFile(tokenFile, token))
	require.NoError(t, os.Chmod(base, 0o711))

	_, cpLog, _, api := startDaemon(t, []string{"control-plane", "-listen", "127.0.0.1:0", "-api-listen", "127.0.0.1:0",
		"-auth-token-file", tokenFile, "-data-dir", filepath.Join(base, "cp"), "-sled-agent-token-file", testTokenFile},
		[]string{"DATABASE_URL="}, cpAPIListening)
	apiTokenPath, err := httpkit.DefaultTokenPath(api)
	require.NoError(t, err)
	apiToken, err := httpkit.ReadTokenFile(apiTokenPath)
	require.NoError(t, err, "the external API's generated token is where the CLI looks")
	require.NotEqual(t, token, apiToken, "the external API has a token of its own")

	res := cli(t, "sled", "list", "-server", api)
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "no sleds")

	res = cli(t, "instance", "create", "-server", api, "-spec", "../../examples/ticker.json", "-name", "ticker")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "created instance ticker")
	res = cli(t, "instance", "create", "-server", api, "-spec", "../../examples/ticker.json", "-name", "ticker")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "an instance named ticker exists already")

	res = cli(t, "instance", "list", "-server", api)
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "ticker")
	res = cli(t, "instance", "get", "-server", api, "ticker")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "stopped")

	res = cli(t, "instance", "start", "-server", api, "ticker")
	require.Equal(t, 1, res.code, "no sled has room: %s", res.stdout)
	require.Contains(t, res.stderr+res.stdout, "sled")

	res = cli(t, "instance", "delete", "-server", api, "ticker")
	require.Equal(t, 0, res.code, "%s\n%s", res.stdout, res.stderr)
	require.Contains(t, res.stdout, "delete ticker: done")
	res = cli(t, "instance", "get", "-server", api, "ticker")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "waggle instance list")
	require.NotContains(t, cpLog.String(), apiToken, "the control plane logged its token")
}
