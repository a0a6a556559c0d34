package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/pgembed"
)

var (
	cpListening   = regexp.MustCompile(`waggle control-plane listening"? addr=(\S+)`)
	sledListening = regexp.MustCompile(`waggle sled-agent listening"? addr=(\S+)`)
)

// A real control plane process, on the PostgreSQL it embeds, hears a real
// sled agent process register its sled; stopped and started again on the
// same directory, it finds its database as it left it.
func TestControlPlaneProcessHearsASledAgent(t *testing.T) {
	if !pgembed.Available() {
		t.Skip("no PostgreSQL binaries on this host (make deps installs them)")
	}
	// PostgreSQL runs as another account when the tests run as root: the
	// directory must let it through (t.TempDir's parents do not).
	base, err := os.MkdirTemp("", "waggle-cp-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	tokenFile := filepath.Join(base, "cp-token")
	require.NoError(t, httpkit.WriteTokenFile(tokenFile, token)) // makes base 0700
	require.NoError(t, os.Chmod(base, 0o711))

	cpArgs := []string{"control-plane", "-listen", "127.0.0.1:0", "-api-listen", "127.0.0.1:0", "-auth-token-file", tokenFile,
		"-data-dir", filepath.Join(base, "cp"), "-sled-agent-token-file", testTokenFile}
	cp, cpLog, cpExited, cpAddr := startDaemon(t, cpArgs, []string{"DATABASE_URL="}, cpListening)
	_, _, _, sledAddr := startDaemon(t, []string{"sled-agent", "-listen", "127.0.0.1:0", "-auth-token-file", testTokenFile,
		"-root", filepath.Join(base, "sled"), "-cpus", "2", "-memory-mib", "512", "-vmm-ports", "13500-13520",
		"-control-plane", "http://" + cpAddr, "-control-plane-token-file", tokenFile}, nil, sledListening)
	sledID, err := os.ReadFile(filepath.Join(base, "sled", "sled-id"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return strings.Contains(cpLog.String(), "sled registered") && strings.Contains(cpLog.String(), strings.TrimSpace(string(sledID))) &&
			strings.Contains(cpLog.String(), sledAddr)
	}, 20*time.Second, 20*time.Millisecond, "the control plane never heard the sled register")
	require.NotContains(t, cpLog.String(), token, "the control plane logged its token")

	// Stopped, it stops its PostgreSQL too; started again, it finds its
	// cluster and its schema.
	stopProc(cp, cpExited)
	require.Contains(t, cpLog.String(), "postgres stopped")
	_, cpLog2, _, _ := startDaemon(t, cpArgs, []string{"DATABASE_URL="}, cpListening)
	require.NotContains(t, cpLog2.String(), "initdb", "a restarted control plane made a new cluster")
}
