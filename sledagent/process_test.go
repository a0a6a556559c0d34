package sledagent_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// agentProc is a `waggle sled-agent` process.
type agentProc struct {
	cmd   *exec.Cmd
	url   string
	token string
	log   *bytes.Buffer
	done  chan struct{}
}

// startAgentProc starts `waggle sled-agent` over root, listening on addr
// ("" for a free port), its doorbell pointed at cp (nil: none).
func startAgentProc(t *testing.T, root, addr string, cp *controlPlane, extra ...string) *agentProc {
	t.Helper()
	if addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr = ln.Addr().String()
		ln.Close()
	}
	tokenPath := filepath.Join(root, "agent-token")
	token, err := httpkit.ReadTokenFile(tokenPath)
	if err != nil {
		token, err = httpkit.GenerateToken()
		require.NoError(t, err)
		require.NoError(t, httpkit.WriteTokenFile(tokenPath, token))
	}
	lo, hi := portRange(40)
	args := []string{"sled-agent", "-listen", addr, "-auth-token-file", tokenPath, "-root", filepath.Join(root, "agent"),
		"-vmm-ports", strconv.Itoa(lo) + "-" + strconv.Itoa(hi), "-cpus", "32", "-memory-mib", "65536",
		// Generous: twenty VMM servers starting beside twenty running VMs
		// take seconds each on a slow host (nested, or emulated).
		"-vmm-start-timeout", "90s"}
	if cp != nil {
		cpToken := filepath.Join(root, "cp-token")
		if _, err := os.Stat(cpToken); err != nil {
			require.NoError(t, httpkit.WriteTokenFile(cpToken, cp.token))
		}
		args = append(args, "-control-plane", cp.url(), "-control-plane-token-file", cpToken)
	}
	args = append(args, extra...)
	cmd := exec.Command(waggleBin, args...)
	var log bytes.Buffer
	cmd.Stderr = &log
	require.NoError(t, cmd.Start())
	p := &agentProc{cmd: cmd, url: "http://" + addr, token: token, log: &log, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("sled agent's log:\n%s", log.String())
		}
	})
	c := agentClient(t, p.url, token)
	assert.Eventually(t, func() bool {
		resp, err := c.InventoryGetWithResponse(context.Background())
		return err == nil && resp.JSON200 != nil
	}, 20*time.Second, 10*time.Millisecond, "the agent answers")
	return p
}

// kill9 kills the agent process with SIGKILL and waits for it.
func (p *agentProc) kill9(t *testing.T) {
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
}

// `waggle sled-agent` as a process: it registers its sled with the
// control plane, answers its inventory with the capacity of its flags, a
// refused ensure leaves nothing, and after kill -9 and a restart it is the
// same sled with the same registry.
func TestAgentProcess(t *testing.T) {
	cp := newControlPlane(t)
	cp.up()
	root := t.TempDir()
	p := startAgentProc(t, root, "", cp)
	c := agentClient(t, p.url, p.token)
	inv, err := c.InventoryGetWithResponse(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 32, inv.JSON200.Cpus.Total)
	require.EqualValues(t, 65536, inv.JSON200.MemoryMib.Free)
	sled := inv.JSON200.SledId
	assert.Eventually(t, func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		reg, ok := cp.sleds[sled]
		return ok && reg.Capacity.Cpus == 32 && len(reg.ApiVersions) == 1 && reg.ApiVersions[0] == "v1" &&
			reg.Address == p.url[len("http://"):]
	}, 10*time.Second, 10*time.Millisecond, "the sled registered itself")

	body := `{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"disk"},
 "spec":{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},
 "components":{"d":{"type":"virtio_disk","backend":"b","slot":0},"b":{"type":"file_storage_backend","path":"none.img"}}}}}`
	status, resp := call(t, "PUT", p.url+"/v1/vmms/"+uuid.New().String(), p.token, body)
	require.Equal(t, 409, status, "%v", resp)
	require.Equal(t, "vmm_refused", resp["error_code"])
	require.Zero(t, procsUnder(t, filepath.Join(root, "agent", "vmms")), "no VMM process left")
	entries, err := os.ReadDir(filepath.Join(root, "agent", "vmms"))
	require.NoError(t, err)
	require.Empty(t, entries)

	p.kill9(t)
	p2 := startAgentProc(t, root, "", cp)
	inv, err = agentClient(t, p2.url, p2.token).InventoryGetWithResponse(context.Background())
	require.NoError(t, err)
	require.Equal(t, sled, inv.JSON200.SledId, "the same sled after a restart")
	require.Zero(t, inv.JSON200.Cpus.Reserved)
}

// Bad command lines exit 2 with the reason.
func TestAgentProcessBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"sled-agent", "-vmm-ports", "9-2"},
		{"sled-agent", "-sled-id", "nope"},
		{"sled-agent", "-vmm-start-timeout", "0s"},
		{"sled-agent", "-control-plane", "http://127.0.0.1:1"},
		{"sled-agent", "stray"},
	} {
		out, err := exec.Command(waggleBin, args...).CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v: %s", args, out)
		require.NotEqual(t, 0, ee.ExitCode(), "%v: %s", args, out)
		require.NotContains(t, string(out), "panic")
	}
}
