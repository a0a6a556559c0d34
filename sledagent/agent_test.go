package sledagent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/sledagent/vmmclient"
)

var bigSled = sledagent.Resources{CPUs: 64, MemoryMiB: 1 << 20}

func ensureReq(t testing.TB, fp string) sledagent.EnsureRequest {
	s := tickerSpec(t)
	return sledagent.EnsureRequest{Properties: sledagent.Properties{ID: uuid.New(), Name: "ticker"}, Spec: &s,
		Resources: sledagent.ResourcesOf(s), Fingerprint: fp}
}

func stateOf(a *sledagent.Agent, id uuid.UUID) sledagent.SledVmmState {
	st, _ := a.State(id)
	return st
}

// A VMM whose process is killed becomes failed with vmm_process_exited and
// the signal; its generation grows; the doorbell rings; the other VMM
// runs on. Real processes; the instance is faked (no KVM here).
func TestKilledVMMProcessFails(t *testing.T) {
	f, bell := newFakes(), newBell()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, bell, bigSled)
	defer a.Close()
	ctx := context.Background()
	ids := []uuid.UUID{uuid.New(), uuid.New()}
	var pids []int
	for _, id := range ids {
		v, created, err := a.Ensure(ctx, id, ensureReq(t, id.String()))
		require.NoError(t, err)
		require.True(t, created)
		pids = append(pids, pidOf(t, root, id))
		killVMMs(t, pids[len(pids)-1])
		f.At(v.Addr).Set(sledagent.StateRunning, "")
	}
	for _, id := range ids {
		assert.Eventually(t, func() bool { return stateOf(a, id).State == sledagent.StateRunning }, 10*time.Second, 5*time.Millisecond)
	}
	for _, pid := range pids {
		require.Equal(t, pid, sessionOf(t, pid), "each VMM process leads a session of its own, so that it outlives the agent")
	}
	before := stateOf(a, ids[0])
	rings := bell.count(ids[0])
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
	assert.Eventually(t, func() bool { return stateOf(a, ids[0]).State == sledagent.StateFailed }, 10*time.Second, 5*time.Millisecond)
	st := stateOf(a, ids[0])
	require.NotNil(t, st.Failure)
	require.Equal(t, sledagent.FailureProcessExited, st.Failure.Kind)
	require.Contains(t, st.Failure.Message, "signal 9")
	require.Greater(t, st.Gen, before.Gen)
	assert.Eventually(t, func() bool { return bell.count(ids[0]) > rings }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, sledagent.StateRunning, stateOf(a, ids[1]).State, "the other VMM runs on")
	require.True(t, alive(pids[1]))
	// Terminal stays until unregistered, then goes with its reservation.
	inv := a.Inventory()
	require.EqualValues(t, 2, inv.CPUs.Reserved)
	require.Equal(t, sledagent.StateFailed, stateOf(a, ids[0]).State)
	require.NoError(t, a.Unregister(ctx, ids[0], false))
	require.EqualValues(t, 1, a.Inventory().CPUs.Reserved)
	_, err := a.State(ids[0])
	require.ErrorIs(t, err, sledagent.ErrNoSuchVmm)
}

// The agent closes (as if killed), one VMM dies meanwhile, another agent
// over the same root adopts the survivor (its process, token and state)
// and marks the dead one failed; every VMM rings once more.
func TestAdoptionAfterAgentRestart(t *testing.T) {
	f, bell := newFakes(), newBell()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, bell, bigSled)
	ctx := context.Background()
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	addrs := map[uuid.UUID]string{}
	pids := map[uuid.UUID]int{}
	for _, id := range ids {
		v, _, err := a.Ensure(ctx, id, ensureReq(t, id.String()))
		require.NoError(t, err)
		addrs[id], pids[id] = v.Addr, pidOf(t, root, id)
		killVMMs(t, pids[id])
		f.At(v.Addr).Set(sledagent.StateRunning, "")
		assert.Eventually(t, func() bool { return stateOf(a, id).State == sledagent.StateRunning }, 10*time.Second, 5*time.Millisecond)
	}
	genBefore := stateOf(a, ids[0]).Gen
	require.NoError(t, a.Close())
	for _, id := range ids {
		require.True(t, alive(pids[id]), "VMM processes outlive the agent")
	}
	// One dies while no agent runs; another's token file is replaced, so
	// that it no longer answers with the token the registry points to.
	require.NoError(t, syscall.Kill(pids[ids[1]], syscall.SIGKILL))
	assert.Eventually(t, func() bool { return !alive(pids[ids[1]]) }, 10*time.Second, 5*time.Millisecond)
	other, err := httpkit.GenerateToken()
	require.NoError(t, err)
	tokenPath := filepath.Join(root, "vmms", ids[2].String(), "token")
	require.NoError(t, os.Remove(tokenPath))
	require.NoError(t, httpkit.WriteTokenFile(tokenPath, other))

	bell2 := newBell()
	a2 := newAgent(t, root, f.Dial, bell2, bigSled)
	defer a2.Close()
	st := stateOf(a2, ids[0])
	require.Equal(t, sledagent.StateRunning, st.State, "adopted with its state")
	require.Equal(t, genBefore, st.Gen)
	for _, id := range ids[1:] {
		st := stateOf(a2, id)
		require.Equal(t, sledagent.StateFailed, st.State, "VMM %s", id)
		require.Equal(t, sledagent.FailureProcessExited, st.Failure.Kind)
	}
	require.Contains(t, stateOf(a2, ids[1]).Failure.Message, "gone when the agent restarted")
	require.Contains(t, stateOf(a2, ids[2]).Failure.Message, "did not answer with its token")
	assert.Eventually(t, func() bool { return !alive(pids[ids[2]]) }, 10*time.Second, 5*time.Millisecond, "a process that does not answer is killed")
	for _, id := range ids {
		assert.Eventually(t, func() bool { return bell2.count(id) >= 1 }, 10*time.Second, 5*time.Millisecond, "rang after restart: %s", id)
	}
	// The adopted VMM is watched: its changes and its death are seen.
	f.At(addrs[ids[0]]).Set(sledagent.StateRebooting, "")
	assert.Eventually(t, func() bool { return stateOf(a2, ids[0]).State == sledagent.StateRebooting }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, syscall.Kill(pids[ids[0]], syscall.SIGKILL))
	assert.Eventually(t, func() bool { return stateOf(a2, ids[0]).State == sledagent.StateFailed }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, sledagent.FailureProcessExited, stateOf(a2, ids[0]).Failure.Kind)
	require.EqualValues(t, 3, a2.Inventory().CPUs.Reserved, "reservations survive the restart")
}

// Every ensure the VMM server refuses (here: a disk file that does not
// exist beneath the VMM's storage root, refused on any host; without KVM
// every spec is refused) answers the server's 4xx code and leaves no
// process, directory, port or reservation behind.
func TestRefusedEnsureLeavesNothing(t *testing.T) {
	root := t.TempDir()
	a := newAgent(t, root, vmmclient.New(nil), nil, bigSled)
	defer a.Close()
	s, err := specFromJSON(`{"board":{"cpus":2,"memory_mb":64,"chipset":"i440fx"},"components":{"disk0":{"type":"virtio_disk","backend":"be","slot":0},"be":{"type":"file_storage_backend","path":"missing.img"}}}`)
	require.NoError(t, err)
	before := procsUnder(t, root)
	for range 3 {
		id := uuid.New()
		_, _, err = a.Ensure(context.Background(), id, sledagent.EnsureRequest{
			Properties: sledagent.Properties{ID: uuid.New(), Name: "x"}, Spec: &s, Resources: sledagent.ResourcesOf(s), Fingerprint: "x"})
		var re *sledagent.RefusedError
		require.ErrorAs(t, err, &re)
		require.GreaterOrEqual(t, re.Status, 400)
		require.Less(t, re.Status, 500)
		require.Equal(t, "vm_error", re.Code)
		_, err = a.Get(id)
		require.ErrorIs(t, err, sledagent.ErrNoSuchVmm)
		entries, err := os.ReadDir(filepath.Join(root, "vmms"))
		require.NoError(t, err)
		require.Empty(t, entries, "no VMM directory left")
		inv := a.Inventory()
		require.Zero(t, inv.CPUs.Reserved)
		require.Zero(t, inv.MemoryMiB.Reserved)
		require.Equal(t, before, procsUnder(t, root), "no VMM process left")
	}
}

// procsUnder counts the processes whose command line names root.
func procsUnder(t *testing.T, root string) int {
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(data), root) && alive(atoi(e.Name())) {
			n++
		}
	}
	return n
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// A VMM beyond the sled's free CPUs or memory is refused with what is free,
// before any process starts; unregistering releases the reservation.
func TestCapacity(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, nil, sledagent.Resources{CPUs: 2, MemoryMiB: 200})
	defer a.Close()
	ctx := context.Background()
	first := uuid.New()
	_, _, err := a.Ensure(ctx, first, ensureReq(t, "a")) // 1 CPU, 64 MiB
	require.NoError(t, err)
	killVMMs(t, pidOf(t, root, first))
	req := ensureReq(t, "b")
	req.Resources = sledagent.Resources{CPUs: 2, MemoryMiB: 64}
	_, _, err = a.Ensure(ctx, uuid.New(), req)
	var ce *sledagent.CapacityError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, sledagent.Resources{CPUs: 1, MemoryMiB: 136}, ce.Free)
	require.Contains(t, err.Error(), "1 CPUs and 136 MiB free")
	req.Resources = sledagent.Resources{CPUs: 1, MemoryMiB: 137}
	_, _, err = a.Ensure(ctx, uuid.New(), req)
	require.ErrorAs(t, err, &ce, "memory counts too")
	entries, _ := os.ReadDir(filepath.Join(root, "vmms"))
	require.Len(t, entries, 1, "a refused VMM got no directory")
	require.ErrorIs(t, a.Unregister(ctx, first, false), sledagent.ErrNotTerminal)
	require.NoError(t, a.Unregister(ctx, first, true))
	inv := a.Inventory()
	require.Zero(t, inv.CPUs.Reserved)
	require.EqualValues(t, 2, inv.CPUs.Free)
	require.EqualValues(t, 200, inv.MemoryMiB.Free)
	req.Resources = sledagent.Resources{CPUs: 2, MemoryMiB: 200}
	id := uuid.New()
	_, _, err = a.Ensure(ctx, id, req)
	require.NoError(t, err, "the whole sled is free again")
	killVMMs(t, pidOf(t, root, id))
}

// Idempotency: the same registration answers the VMM; another for the
// same id is refused; neither starts a second process.
func TestEnsureIdempotent(t *testing.T) {
	f := newFakes()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, nil, bigSled)
	defer a.Close()
	ctx := context.Background()
	id := uuid.New()
	v1, created, err := a.Ensure(ctx, id, ensureReq(t, "same"))
	require.NoError(t, err)
	require.True(t, created)
	pid := pidOf(t, root, id)
	killVMMs(t, pid)
	v2, created, err := a.Ensure(ctx, id, ensureReq(t, "same"))
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, v1.Addr, v2.Addr)
	_, _, err = a.Ensure(ctx, id, ensureReq(t, "other"))
	require.ErrorIs(t, err, sledagent.ErrVmmExists)
	require.Equal(t, pid, pidOf(t, root, id))
	require.Equal(t, 1, f.At(v1.Addr).Ensured())
	require.EqualValues(t, 1, a.Inventory().CPUs.Reserved)
	require.False(t, errors.Is(err, sledagent.ErrNoSuchVmm))
}

// sessionOf reads a process's session id from /proc.
func sessionOf(t *testing.T, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	i := strings.LastIndexByte(string(data), ')')
	fields := strings.Fields(string(data[i+2:]))
	// state ppid pgrp session ...
	sid, err := strconv.Atoi(fields[3])
	require.NoError(t, err)
	return sid
}

// A destroyed VMM stays registered with its final state (its process
// ending then is no news) until it is unregistered, which needs no force
// and kills its process; the registry is never left half-written.
func TestDestroyedStaysUntilUnregistered(t *testing.T) {
	f, bell := newFakes(), newBell()
	root := t.TempDir()
	a := newAgent(t, root, f.Dial, bell, bigSled)
	defer a.Close()
	ctx := context.Background()
	id := uuid.New()
	v, _, err := a.Ensure(ctx, id, ensureReq(t, "d"))
	require.NoError(t, err)
	pid := pidOf(t, root, id)
	killVMMs(t, pid)
	inst := f.At(v.Addr)
	inst.Set(sledagent.StateStopping, "")
	inst.Set(sledagent.StateDestroyed, "")
	assert.Eventually(t, func() bool { return stateOf(a, id).State == sledagent.StateDestroyed }, 10*time.Second, 5*time.Millisecond)
	final := stateOf(a, id)
	require.Nil(t, final.Failure)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	assert.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 5*time.Millisecond)
	require.Never(t, func() bool { return stateOf(a, id) != final }, 300*time.Millisecond, 10*time.Millisecond,
		"a terminal VMM keeps its final state")
	require.Len(t, a.List(), 1)
	leftovers, err := filepath.Glob(filepath.Join(root, "registry.json.tmp-*"))
	require.NoError(t, err)
	require.Empty(t, leftovers)
	require.NoError(t, a.Unregister(ctx, id, false))
	require.Empty(t, a.List())
	_, err = os.Stat(filepath.Join(root, "vmms", id.String()))
	require.True(t, os.IsNotExist(err), "its directory is removed")

	// Another VMM destroyed while its process runs: unregistering kills it.
	id2 := uuid.New()
	v2, _, err := a.Ensure(ctx, id2, ensureReq(t, "e"))
	require.NoError(t, err)
	pid2 := pidOf(t, root, id2)
	killVMMs(t, pid2)
	f.At(v2.Addr).Set(sledagent.StateDestroyed, "")
	assert.Eventually(t, func() bool { return stateOf(a, id2).State == sledagent.StateDestroyed }, 10*time.Second, 5*time.Millisecond)
	require.True(t, alive(pid2))
	require.NoError(t, a.Unregister(ctx, id2, false))
	assert.Eventually(t, func() bool { return !alive(pid2) }, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, a.Inventory().CPUs.Reserved)
}
