package gate

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/corpus"
)

// headCommitBuild builds the waggle of this repository's HEAD commit (not
// the work tree, which others may be editing).
func headCommitBuild(t *testing.T) string {
	t.Helper()
	commit := run(t, repoRoot, "rev-parse", "HEAD^{commit}")
	bin, err := BuildRelease(ctx, repoRoot, corpus.Release{Name: "HEAD", Commit: commit}, t.TempDir())
	require.NoError(t, err)
	return bin
}

// TestFleetDriveOfOneBuild: HEAD's control plane with HEAD's sled agents
// passes every step the machine allows, and says each.
func TestFleetDriveOfOneBuild(t *testing.T) {
	bin := headCommitBuild(t)
	did, err := FleetDrive(ctx, bin, bin, KVMAvailable())
	t.Logf("did: %s", strings.Join(did, "\n"))
	require.NoError(t, err)
	require.Contains(t, did, "both sleds registered and listed active with their capacity")
	require.Empty(t, processesOf(t, bin), "every process of the fleet (and every VMM server its agents started) has ended")
}

// fleetAPIs are the contracts a release of the fleet serves.
var fleetAPIs = []string{"vmm-server/v1", "control-plane/v1", "control-plane-internal/v1", "sled-agent/v1"}

// fleetClone clones this repository at HEAD into a scratch directory and
// locks there (in the work tree only) every contract of fleetAPIs not yet
// locked. It returns the clone and HEAD's commit.
func fleetClone(t *testing.T) (clone, head string) {
	t.Helper()
	head = run(t, repoRoot, "rev-parse", "HEAD^{commit}")
	clone = filepath.Join(t.TempDir(), "waggle")
	run(t, repoRoot, "clone", "-q", "--shared", "--no-checkout", ".", clone)
	run(t, clone, "checkout", "-q", "--detach", head)
	lock := filepath.Join(clone, "openapi", "LOCK")
	data, err := os.ReadFile(lock)
	require.NoError(t, err)
	for _, v := range fleetAPIs {
		p := "openapi/" + v + ".yaml"
		if strings.Contains(string(data), "  "+p+"\n") {
			continue
		}
		contract, err := os.ReadFile(filepath.Join(clone, filepath.FromSlash(p)))
		require.NoError(t, err)
		data = append(data, corpus.Sum(contract)+"  "+p+"\n"...)
	}
	require.NoError(t, os.WriteFile(lock, data, 0o644))
	return clone, head
}

// releaseOnly makes the clone's RELEASES list one release: name at commit,
// serving every contract of fleetAPIs.
func releaseOnly(t *testing.T, clone, name, commit string) {
	t.Helper()
	line := name + "  " + commit + "  " + strings.Join(fleetAPIs, ",") + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(clone, "corpus", "RELEASES"), []byte("# the one release of this test\n"+line), 0o644))
}

// fleetWays are the lines of rep.Ran that a fleet way wrote.
func fleetWays(rep ReleaseReport) []string {
	var ways []string
	for _, r := range rep.Ran {
		if strings.HasPrefix(r, "fleet: ") {
			ways = append(ways, r)
		}
	}
	return ways
}

// TestFleetAcrossReleases releases HEAD's commit, with the control
// plane's contracts, in a scratch clone and runs the gate's releases
// check there: the release's control plane runs with the work tree's
// sled agents and the reverse, each build a process of its own over its
// own PostgreSQL, and each way passes every step the machine allows.
func TestFleetAcrossReleases(t *testing.T) {
	clone, head := fleetClone(t)
	releaseOnly(t, clone, "v0.0.0-fleet", head)
	rep, err := CheckReleases(ctx, clone, t.TempDir())
	t.Logf("%+v", rep)
	require.NoError(t, err)
	require.Equal(t, []string{"v0.0.0-fleet"}, rep.Built)
	ways := fleetWays(rep)
	require.Len(t, ways, 2, "both ways ran: %v", rep.Ran)
	require.Contains(t, ways[0], "fleet: v0.0.0-fleet's control plane with HEAD's sled agents (both sleds registered")
	require.Contains(t, ways[1], "fleet: HEAD's control plane with v0.0.0-fleet's sled agents (both sleds registered")
	for _, w := range ways {
		require.Contains(t, w, "a create with a spec that breaks its version's rules refused with 400 invalid_spec")
		if KVMAvailable() {
			require.Contains(t, w, "the instance migrated to the other sled")
		} else {
			require.Contains(t, w, "unwound at its register step")
		}
	}
	if !KVMAvailable() {
		require.Contains(t, rep.Skipped, "an instance started, migrated between two sleds, stopped and deleted on each release's fleet and HEAD's, both ways (needs /dev/kvm")
	}
}

// TestFleetCatchesRefusedRegistration releases a scratch commit whose
// sled agent registers an address the control plane refuses (a path
// after host:port): the way with the release's sled agents fails at its
// first step and says so, the other way passes, and the gate's releases
// phase fails naming the release, the way and the step.
func TestFleetCatchesRefusedRegistration(t *testing.T) {
	clone, head := fleetClone(t)
	const file = "sledagent/cpclient/cpclient.go"
	src, err := os.ReadFile(filepath.Join(clone, file))
	require.NoError(t, err)
	broken := strings.Replace(string(src), "Address: addr,", `Address: addr + "/planted",`, 1)
	require.NotEqual(t, string(src), broken, "the plant found its line")
	require.NoError(t, os.WriteFile(filepath.Join(clone, file), []byte(broken), 0o644))
	run(t, clone, "add", file)
	run(t, clone, "commit", "-q", "-m", "plant: the sled agent registers an address with a path")
	planted := run(t, clone, "rev-parse", "HEAD")
	// HEAD's build is the work tree's: today's sled agent again.
	run(t, clone, "checkout", "-q", head, "--", file)
	releaseOnly(t, clone, "v0.0.0-planted", planted)

	// The sleds of the planted way never register: wait less for them.
	wait := FleetWait
	FleetWait = 30 * time.Second
	t.Cleanup(func() { FleetWait = wait })
	var out bytes.Buffer
	err = Run(ctx, clone, phase("releases"), &out)
	t.Log(out.String())
	t.Log(err)
	require.Error(t, err)
	require.Contains(t, out.String(), "compat: releases FAIL")
	var fe *FleetError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "v0.0.0-planted", fe.Release)
	require.Equal(t, "HEAD's control plane with v0.0.0-planted's sled agents", fe.Way)
	require.Equal(t, "both sleds registered and listed active with their capacity", fe.Step)
	require.ErrorContains(t, err, "release v0.0.0-planted: HEAD's control plane with v0.0.0-planted's sled agents: both sleds registered")
	require.ErrorContains(t, err, "0 of 2 sleds listed")
	require.ErrorContains(t, err, "400 invalid_request: body.address", "the agents' log, in the message, says why")
	require.Contains(t, out.String(), "fleet: v0.0.0-planted's control plane with HEAD's sled agents (", "the other way passed")
}

// TestFleetLifeFailsNamingItsStep runs the KVM part of the fleet check
// where there is no /dev/kvm: the instance's start cannot run, and the
// check fails at that step, saying how the saga ended and why; the steps
// without a VM before it passed, and no process outlives it.
func TestFleetLifeFailsNamingItsStep(t *testing.T) {
	if KVMAvailable() {
		t.Skip("this machine has /dev/kvm: the instance's life runs, and TestFleetAcrossReleases checks it")
	}
	bin := headCommitBuild(t)
	did, err := FleetDrive(ctx, bin, bin, true)
	t.Log(err)
	var fe *FleetError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "an instance created and started, running on a sled", fe.Step)
	require.ErrorContains(t, err, `the start saga ended unwound (error_code invalid_spec, failed step "register")`)
	require.ErrorContains(t, err, "/dev/kvm")
	require.Contains(t, did, "a create with a spec that breaks its version's rules refused with 400 invalid_spec, nothing stored")
	require.Empty(t, processesOf(t, bin), "every process of the fleet (and every VMM server its agents started) has ended")
}

// processesOf lists the ids of the running processes whose program is bin.
func processesOf(t *testing.T, bin string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == bin {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestFreeRange: a range of free loopback ports below the ephemeral range,
// every port of it free to listen on.
func TestFreeRange(t *testing.T) {
	for range 20 {
		r, err := freeRange(4)
		require.NoError(t, err)
		var lo, hi int
		_, err = fmt.Sscanf(r, "%d-%d", &lo, &hi)
		require.NoError(t, err, r)
		require.Equal(t, lo+3, hi, r)
		require.Less(t, hi, ephemeralLow(), "below the ephemeral range: %s", r)
		for p := lo; p <= hi; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			require.NoError(t, err, "port %d of %s", p, r)
			ln.Close()
		}
	}
}
