package sledagent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sa "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/internal/kvmtest"
)

// These tests run VMs: they need /dev/kvm and skip without it. Each drives
// real `waggle sled-agent` processes, which run real `waggle server`
// processes, through the sled-agent v1 API, with a control-plane stand-in
// that pulls every VMM's state back after each ring.

func tickerBody(name string) string {
	return fmt.Sprintf(`{"instance":{"id":%q,"name":%q},
 "spec":{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":32,"chipset":"i440fx"},
 "boot":{"image":"ticker","cmdline":"pace_ms=20"},"components":{"com1":{"type":"serial_port","num":"com1"}}}}}`,
		uuid.New().String(), name)
}

// vmmState reads a VMM's state through the agent's API; the zero state
// when it cannot (for Eventually's conditions: it fails nothing).
func vmmState(c *sa.ClientWithResponses, id uuid.UUID) sa.SledVmmState {
	resp, err := c.VmmStateGetWithResponse(context.Background(), id)
	if err != nil || resp.JSON200 == nil {
		return sa.SledVmmState{}
	}
	return *resp.JSON200
}

// serialEnd is how many bytes the VMM's console has written; -1 when it
// cannot be read.
func serialEnd(c *sa.ClientWithResponses, id uuid.UUID) int64 {
	n := int64(1)
	resp, err := c.VmmSerialHistoryGetWithResponse(context.Background(), id, &sa.VmmSerialHistoryGetParams{MostRecent: &n})
	if err != nil || resp.JSON200 == nil {
		return -1
	}
	return resp.JSON200.End
}

// ticking says whether the VMM's console grows.
func ticking(t *testing.T, c *sa.ClientWithResponses, id uuid.UUID) {
	t.Helper()
	start := serialEnd(c, id)
	assert.Eventually(t, func() bool { return serialEnd(c, id) > start }, 20*time.Second, 10*time.Millisecond, "VMM %s ticks", id)
}

// registerRunning registers n tickers on the agent and runs them.
func registerRunning(t *testing.T, p *agentProc, n int) []uuid.UUID {
	t.Helper()
	c := agentClient(t, p.url, p.token)
	var ids []uuid.UUID
	for i := range n {
		id := uuid.New()
		status, body := call(t, "PUT", p.url+"/v1/vmms/"+id.String(), p.token, tickerBody(fmt.Sprintf("ticker-%d", i)))
		require.Equal(t, 201, status, "%v", body)
		status, body = call(t, "PUT", p.url+"/v1/vmms/"+id.String()+"/state", p.token, `{"requested":"run"}`)
		require.Equal(t, 200, status, "%v", body)
		ids = append(ids, id)
	}
	for _, id := range ids {
		assert.Eventually(t, func() bool { return vmmState(c, id).State == sa.VmmStateRunning }, 30*time.Second, 10*time.Millisecond, "VMM %s runs", id)
	}
	return ids
}

// registryPid reads a VMM's pid from an agent's registry on disk.
func registryPid(t *testing.T, root string, id uuid.UUID) int {
	return pidOf(t, filepath.Join(root, "agent"), id)
}

// killAllVMMs kills the VMM processes of an agent root at the end.
func killAllVMMs(t *testing.T, root string) {
	t.Cleanup(func() {
		data, err := os.ReadFile(filepath.Join(root, "agent", "registry.json"))
		if err != nil {
			return
		}
		var reg struct {
			VMMs []struct {
				Pid int `json:"pid"`
			} `json:"vmms"`
		}
		if json.Unmarshal(data, &reg) == nil {
			for _, v := range reg.VMMs {
				_ = syscall.Kill(-v.Pid, syscall.SIGKILL)
			}
		}
	})
}

// Twenty ticker VMMs on one sled, each ticking; kill -9 of one makes it
// failed (vmm_process_exited, signal 9), the doorbell rings and the
// control plane pulls the failure; the others tick on.
func TestKVMTwentyTickersAndKill(t *testing.T) {
	kvmtest.Require(t)
	cp := newControlPlane(t)
	cp.up()
	root := t.TempDir()
	killAllVMMs(t, root)
	p := startAgentProc(t, root, "", cp)
	c := agentClient(t, p.url, p.token)
	cp.agent = c
	ids := registerRunning(t, p, 20)
	for _, id := range ids {
		ticking(t, c, id)
	}
	victim := ids[7]
	require.NoError(t, syscall.Kill(registryPid(t, root, victim), syscall.SIGKILL))
	assert.Eventually(t, func() bool { return vmmState(c, victim).State == sa.VmmStateFailed }, 20*time.Second, 10*time.Millisecond)
	st := vmmState(c, victim)
	require.NotNil(t, st.FailureReason)
	require.Equal(t, sa.VmmFailureKindVmmProcessExited, st.FailureReason.Kind)
	require.Contains(t, st.FailureReason.Message, "signal 9")
	assert.Eventually(t, func() bool { return cp.pulledGen(victim) == st.Gen }, 20*time.Second, 10*time.Millisecond, "the control plane pulled the failure")
	for _, id := range ids {
		if id != victim {
			require.Equal(t, sa.VmmStateRunning, vmmState(c, id).State)
			ticking(t, c, id)
		}
	}
	// Terminal stays until unregistered.
	status, _ := call(t, "GET", p.url+"/v1/vmms/"+victim.String()+"/state", p.token, "")
	require.Equal(t, 200, status)
	status, _ = call(t, "DELETE", p.url+"/v1/vmms/"+victim.String(), p.token, "")
	require.Equal(t, 204, status)
}

// kill -9 of the agent: its VMMs run on; a restarted agent adopts them all
// (same states and generations), and follows them on.
func TestKVMAgentKilledAndRestarted(t *testing.T) {
	kvmtest.Require(t)
	cp := newControlPlane(t)
	cp.up()
	root := t.TempDir()
	killAllVMMs(t, root)
	p := startAgentProc(t, root, "", cp)
	c := agentClient(t, p.url, p.token)
	ids := registerRunning(t, p, 4)
	gens := map[uuid.UUID]int64{}
	for _, id := range ids {
		gens[id] = vmmState(c, id).Gen
	}
	p.kill9(t)
	for _, id := range ids {
		require.True(t, alive(registryPid(t, root, id)), "VMM processes outlive the agent")
	}
	p2 := startAgentProc(t, root, "", cp)
	c2 := agentClient(t, p2.url, p2.token)
	cp.agent = c2
	for _, id := range ids {
		st := vmmState(c2, id)
		require.Equal(t, sa.VmmStateRunning, st.State, "adopted")
		require.Equal(t, gens[id], st.Gen, "nothing changed while no agent ran")
		ticking(t, c2, id)
	}
	status, _ := call(t, "PUT", p2.url+"/v1/vmms/"+ids[0].String()+"/state", p2.token, `{"requested":"stop"}`)
	require.Equal(t, 200, status)
	assert.Eventually(t, func() bool { return vmmState(c2, ids[0]).State == sa.VmmStateDestroyed }, 30*time.Second, 10*time.Millisecond,
		"the adopted VMM is watched through its state monitor")
	assert.Eventually(t, func() bool { return cp.pulledGen(ids[0]) == vmmState(c2, ids[0]).Gen }, 20*time.Second, 10*time.Millisecond)
}

// A control plane that is down while VMMs change, then up: every change
// arrives (the state pulled back is the newest), coalesced.
func TestKVMControlPlaneDownThenUp(t *testing.T) {
	kvmtest.Require(t)
	cp := newControlPlane(t) // down
	root := t.TempDir()
	killAllVMMs(t, root)
	p := startAgentProc(t, root, "", cp)
	c := agentClient(t, p.url, p.token)
	cp.agent = c
	ids := registerRunning(t, p, 3)
	for _, id := range ids {
		status, _ := call(t, "PUT", p.url+"/v1/vmms/"+id.String()+"/state", p.token, `{"requested":"reboot"}`)
		require.Equal(t, 200, status)
	}
	for _, id := range ids {
		assert.Eventually(t, func() bool { st := vmmState(c, id); return st.State == sa.VmmStateRunning && st.Gen >= 5 }, 30*time.Second, 10*time.Millisecond)
		require.Zero(t, cp.ringsOf(id))
	}
	cp.up()
	for _, id := range ids {
		want := vmmState(c, id).Gen
		assert.Eventually(t, func() bool { return cp.pulledGen(id) == want }, 30*time.Second, 10*time.Millisecond, "nothing lost: %s", id)
		require.Less(t, int64(cp.ringsOf(id)), want, "coalesced: fewer rings than changes")
	}
}

// Two sled agents on loopback; a VMM migrates from one to the other through
// their APIs: arm the source (the secret answered once), register the
// target with the source VMM's address; the target runs with its inbound
// migration completed, the source is destroyed with its outbound one
// completed, and both doorbells rang.
func TestKVMMigrationBetweenAgents(t *testing.T) {
	kvmtest.Require(t)
	cp := newControlPlane(t)
	cp.up()
	rootA, rootB := t.TempDir(), t.TempDir()
	killAllVMMs(t, rootA)
	killAllVMMs(t, rootB)
	a := startAgentProc(t, rootA, "", cp)
	b := startAgentProc(t, rootB, "", cp)
	ca, cb := agentClient(t, a.url, a.token), agentClient(t, b.url, b.token)
	src := registerRunning(t, a, 1)[0]
	ticking(t, ca, src)
	vmmA, err := ca.VmmGetWithResponse(context.Background(), src)
	require.NoError(t, err)
	require.NotNil(t, vmmA.JSON200)

	mid := uuid.New()
	status, body := call(t, "PUT", a.url+"/v1/vmms/"+src.String()+"/state", a.token,
		fmt.Sprintf(`{"requested":"migrate_source","migration_id":%q}`, mid))
	require.Equal(t, 200, status, "%v", body)
	secret := body["migration"].(map[string]any)["secret"].(string)
	require.NotEmpty(t, secret)
	require.Equal(t, "pending", body["state"].(map[string]any)["migration_out"].(map[string]any)["state"])

	dst := uuid.New()
	inst := vmmA.JSON200.Instance
	target := fmt.Sprintf(`{"instance":{"id":%q,"name":%q},"migrate":{"src_addr":%q,"migration_id":%q,"secret":%q,"resources":{"cpus":1,"memory_mib":32}}}`,
		inst.Id, inst.Name, vmmA.JSON200.Addr, mid, secret)
	status, body = call(t, "PUT", b.url+"/v1/vmms/"+dst.String(), b.token, target)
	require.Equal(t, 201, status, "%v", body)
	require.NotContains(t, fmt.Sprint(body), secret, "the secret is not echoed")

	assert.Eventually(t, func() bool {
		st := vmmState(cb, dst)
		return st.State == sa.VmmStateRunning && st.MigrationIn != nil && st.MigrationIn.State == sa.MigrationStateCompleted
	}, 60*time.Second, 10*time.Millisecond, "the target runs")
	assert.Eventually(t, func() bool {
		st := vmmState(ca, src)
		return st.State == sa.VmmStateDestroyed && st.MigrationOut != nil && st.MigrationOut.State == sa.MigrationStateCompleted
	}, 60*time.Second, 10*time.Millisecond, "the source is destroyed, its migration completed")
	ticking(t, cb, dst)
	require.Equal(t, mid, vmmState(cb, dst).MigrationIn.MigrationId)
	assert.Eventually(t, func() bool { return cp.ringsOf(src) > 0 && cp.ringsOf(dst) > 0 }, 10*time.Second, 10*time.Millisecond)
	status, _ = call(t, "DELETE", a.url+"/v1/vmms/"+src.String(), a.token, "")
	require.Equal(t, 204, status, "a destroyed source is unregistered")
	inv, err := ca.InventoryGetWithResponse(context.Background())
	require.NoError(t, err)
	require.Zero(t, inv.JSON200.Cpus.Reserved)
}
