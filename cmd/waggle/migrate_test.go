package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/kvmtest"
	"github.com/wagglevm/waggle/server"
	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm/devices"
)

// Live migration between real `waggle server` processes on loopback.
// Helpers named after a value (stateOf, tickCount, outboundPhase, ...)
// fail nothing and serve as Eventually's conditions, which run on another
// goroutine; those that take t (state, ticks, outbound, ...) fail the test
// and serve everywhere else.

// createRunning creates and runs a VM from spec JSON on p and waits until
// the console shows ready.
func createRunning(t *testing.T, p *serverProc, specJSON, ready string) api.InstanceProperties {
	t.Helper()
	ctx := context.Background()
	w, err := specDecode(specJSON)
	require.NoError(t, err)
	props := api.InstanceProperties{Id: uuid.New(), Name: "mig"}
	r, err := p.client.InstanceEnsureWithResponse(ctx, specEnsure(t, props, w))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	s, err := p.client.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode(), string(s.Body))
	serialUntil(t, p.client, ready)
	return props
}

// arm arms src as the source of a new migration, with a secret the server
// makes, and returns the migration's id and the secret.
func arm(t *testing.T, src *serverProc) (uuid.UUID, string) {
	t.Helper()
	id := uuid.New()
	e, err := src.client.InstanceMigrateExpectWithResponse(context.Background(), api.InstanceMigrateExpectRequest{MigrationId: id})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.StatusCode(), string(e.Body))
	require.Equal(t, id, e.JSON200.MigrationId)
	require.True(t, e.JSON200.ExpiresAt.After(time.Now()), "the arm expires in the future: %v", e.JSON200.ExpiresAt)
	require.NotNil(t, e.JSON200.Secret, "a secret the server made is answered, once")
	require.NoError(t, migration.CheckSecret(*e.JSON200.Secret))
	return id, *e.JSON200.Secret
}

// ensureTarget creates dst's instance as the target of migration id from
// srcAddr, with secret and the replacement components (nil: none).
func ensureTarget(t *testing.T, dst *serverProc, props api.InstanceProperties, id uuid.UUID, srcAddr, secret string, replace map[string]api.Component) {
	t.Helper()
	m := api.InstanceMigrateInitiateRequest{MigrationId: id, SrcAddr: srcAddr, Secret: secret}
	if replace != nil {
		m.ReplaceComponents = &replace
	}
	r, err := dst.client.InstanceEnsureWithResponse(context.Background(), targetEnsure(t, props, m))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	require.Equal(t, api.InstanceStateMigrating, r.JSON201.State)
}

// startMigration arms src for a new migration and creates the target on
// dst, which dials srcAddr (src, or a proxy in front of it).
func startMigration(t *testing.T, src, dst *serverProc, srcAddr string, props api.InstanceProperties) {
	t.Helper()
	startMigrationReplacing(t, src, dst, srcAddr, props, nil)
}

// startMigrationReplacing is startMigration with the target's replacement
// components (nil: none).
func startMigrationReplacing(t *testing.T, src, dst *serverProc, srcAddr string, props api.InstanceProperties, replace map[string]api.Component) {
	t.Helper()
	id, secret := arm(t, src)
	ensureTarget(t, dst, props, id, srcAddr, secret, replace)
}

// migrate moves the VM from src to dst (dialing srcAddr, which may be a
// proxy) and waits until the target's migration ends; it returns the
// target's final progress.
func migrate(t *testing.T, src, dst *serverProc, srcAddr string, props api.InstanceProperties) api.MigrationProgress {
	t.Helper()
	startMigration(t, src, dst, srcAddr, props)
	var last api.MigrationProgress // written only by the check that succeeds
	require.Eventually(t, func() bool {
		in := inbound(dst)
		if in == nil || in.Phase != api.MigrationPhaseCompleted && in.Phase != api.MigrationPhaseFailed {
			return false
		}
		last = *in
		return true
	}, 60*time.Second, 10*time.Millisecond)
	return last
}

// stateOf returns p's instance.
func stateOf(p *serverProc) (api.Instance, error) {
	g, err := p.client.InstanceGetWithResponse(context.Background())
	if err != nil {
		return api.Instance{}, err
	}
	if g.JSON200 == nil {
		return api.Instance{}, fmt.Errorf("get the instance: HTTP %d: %s", g.StatusCode(), g.Body)
	}
	return *g.JSON200, nil
}

// inState reports whether p's instance is in state want.
func inState(p *serverProc, want api.InstanceState) bool {
	inst, err := stateOf(p)
	return err == nil && inst.State == want
}

// state returns p's instance.
func state(t *testing.T, p *serverProc) api.Instance {
	t.Helper()
	inst, err := stateOf(p)
	require.NoError(t, err)
	return inst
}

// migrationStatus returns p's migrations; nil when it cannot be read.
func migrationStatus(p *serverProc) *api.MigrationStatus {
	st, err := p.client.InstanceMigrationStatusWithResponse(context.Background())
	if err != nil {
		return nil
	}
	return st.JSON200
}

// inbound is p's inbound migration, nil when there is none (or it cannot
// be read).
func inbound(p *serverProc) *api.MigrationProgress {
	if st := migrationStatus(p); st != nil {
		return st.MigrationIn
	}
	return nil
}

// outboundPhase is the source's migration phase, "" before there is one.
func outboundPhase(p *serverProc) api.MigrationPhase {
	if st := migrationStatus(p); st != nil && st.MigrationOut != nil {
		return st.MigrationOut.Phase
	}
	return ""
}

// outbound returns p's outbound migration, which must exist.
func outbound(t *testing.T, p *serverProc) api.MigrationProgress {
	t.Helper()
	st, err := p.client.InstanceMigrationStatusWithResponse(context.Background())
	require.NoError(t, err)
	require.NotNil(t, st.JSON200, string(st.Body))
	require.NotNil(t, st.JSON200.MigrationOut)
	return *st.JSON200.MigrationOut
}

var tickRE = regexp.MustCompile(`tick (\d+)\n`)

// console returns the serial history of p's instance.
func console(t *testing.T, p *serverProc) string {
	t.Helper()
	out, err := serialHistory(p.client)
	require.NoError(t, err)
	return out
}

// tickNumbers returns the numbers of the complete tick lines in text.
func tickNumbers(text string) []int {
	var out []int
	for _, m := range tickRE.FindAllStringSubmatch(text, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// ticks returns the tick numbers printed so far.
func ticks(t *testing.T, p *serverProc) []int {
	t.Helper()
	return tickNumbers(console(t, p))
}

// tickCount is how many tick lines p's guest printed; -1 when the console
// cannot be read.
func tickCount(p *serverProc) int {
	out, err := serialHistory(p.client)
	if err != nil {
		return -1
	}
	return len(tickNumbers(out))
}

// awaitDestroyed waits until the migration's source has let its VM go: the
// target runs once it has the hand-off, a moment before the source closes
// its VM and flushes the VM's last console bytes.
func awaitDestroyed(t *testing.T, p *serverProc) {
	t.Helper()
	require.Eventually(t, func() bool { return inState(p, api.InstanceStateDestroyed) }, 20*time.Second, 5*time.Millisecond)
}

// requireConsecutive checks that the ticks in text count up by one with no
// gap and no repeat. A migration may split a line between two consoles (the
// guest had written "tick 1" when it paused, and writes "2\n" on the target),
// so callers join the consoles' bytes in order before they look at the ticks.
func requireConsecutive(t *testing.T, text string) []int {
	t.Helper()
	all := tickNumbers(text)
	for i := 1; i < len(all); i++ {
		require.Equal(t, all[i-1]+1, all[i], "ticks in order with none lost or repeated: %v", all)
	}
	return all
}

// requireMovedConsole checks a migration target's console against its
// source's: the console's history moved with the VM, so the target's
// begins with every tick the source printed (the UART's last bytes at the
// pause are printed on the target, which ends the line) and goes on
// counting with none lost or repeated. It returns the target's ticks.
func requireMovedConsole(t *testing.T, onSource, onTarget string) []int {
	t.Helper()
	all := requireConsecutive(t, onTarget)
	src := tickNumbers(onSource)
	require.NotEmpty(t, src, "the source ticked")
	require.GreaterOrEqual(t, len(all), len(src), "the target's console holds the source's history: %v", all)
	require.Equal(t, src, all[:len(src)], "the target's console begins with the source's ticks")
	return all
}

const tickerJSON = `{"board":{"cpus":1,"memory_mb":128,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":"pace_ms=20 dirty_kib=4096"},
 "components":{"com1":{"type":"serial_port","num":"com1"}}}`

// TestMigrateTickerABA: the ticker goes on with exactly the next tick, from
// A to B and back to A.
func TestMigrateTickerABA(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	props := createRunning(t, a, tickerJSON, "tick 3\n")

	last := migrate(t, a, b, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	awaitDestroyed(t, a)
	require.Equal(t, api.InstanceStateRunning, state(t, b).State)
	out := outbound(t, a)
	require.Equal(t, api.MigrationPhaseCompleted, out.Phase)
	require.NotNil(t, out.DowntimeUs)
	require.Positive(t, out.BytesSent)

	// The guest's console continues on B byte for byte where A's ended.
	onA := console(t, a)
	require.Eventually(t, func() bool { return tickCount(b) > len(tickNumbers(onA))+2 }, 10*time.Second, 10*time.Millisecond)
	all := requireMovedConsole(t, onA, console(t, b))
	require.Greater(t, len(all), len(tickNumbers(onA))+2, "B went on ticking")

	// And back: A takes the VM again as a new instance, with a console of
	// its own (the first instance's output is not in it), which goes on
	// where B's ended.
	last = migrate(t, b, a, b.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	awaitDestroyed(t, b)
	onB := console(t, b)
	require.Eventually(t, func() bool { return tickCount(a) > len(tickNumbers(onB))+2 }, 10*time.Second, 10*time.Millisecond)
	nowA := console(t, a)
	all = requireMovedConsole(t, onB, nowA)
	require.Greater(t, len(all), len(tickNumbers(onB))+2, "A went on ticking after the way back")
}

func TestMigrateMemcheckSaysMemOK(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	spec := `{"board":{"cpus":1,"memory_mb":128,"chipset":"i440fx"},"boot":{"image":"memcheck","cmdline":"span_mib=64 pace_ms=50"},
	 "components":{"com1":{"type":"serial_port","num":"com1"}}}`
	props := createRunning(t, a, spec, "mem ok 2\n")
	last := migrate(t, a, b, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	require.Eventually(t, func() bool { return serialCount(b.client, "mem ok") >= 3 }, 20*time.Second, 20*time.Millisecond,
		"the guest checks its memory three times on the target")
	require.NotContains(t, console(t, b), "BAD")
	require.Equal(t, api.InstanceStateRunning, state(t, b).State)
}

func diskSpec(path string) string {
	return fmt.Sprintf(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"disk","cmdline":"sectors=256 pace_ms=50"},
	 "components":{"com1":{"type":"serial_port","num":"com1"},
	  "disk0":{"type":"virtio_disk","backend":"disk0-be","slot":0},
	  "disk0-be":{"type":"file_storage_backend","path":%q}}}`, path)
}

// diskPath is the storage path of the tests' disk file.
const diskPath = "vm/disk.img"

// diskFile makes a 1 MiB disk file at diskPath beneath the storage root
// root and returns its storage path (the spec's, relative to the root).
func diskFile(t *testing.T, root string) string {
	t.Helper()
	full := filepath.Join(root, filepath.FromSlash(diskPath))
	require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o700))
	require.NoError(t, os.WriteFile(full, make([]byte, 1<<20), 0o600))
	return diskPath
}

// TestMigrateDiskDataSurvives: two servers that share their storage root,
// as hosts share storage, migrate a VM whose guest writes its disk and
// checks it again and again; the checks pass on the target.
func TestMigrateDiskDataSurvives(t *testing.T) {
	kvmtest.Require(t)
	shared := t.TempDir()
	a, b := startServerIn(t, shared), startServerIn(t, shared)
	props := createRunning(t, a, diskSpec(diskFile(t, shared)), "disk ok pass 2\n")
	last := migrate(t, a, b, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	require.Eventually(t, func() bool { return serialCount(b.client, "disk ok pass") >= 2 }, 20*time.Second, 20*time.Millisecond,
		"the guest checks its disk twice on the target")
	require.NotContains(t, console(t, b), "BAD")
}

// requireSourceUnharmed checks that a failed migration left the source
// running with the failure and its reason shown, and that the guest runs on.
func requireSourceUnharmed(t *testing.T, a *serverProc, reason string) {
	t.Helper()
	require.Eventually(t, func() bool { return inState(a, api.InstanceStateRunning) }, 20*time.Second, 10*time.Millisecond)
	out := outbound(t, a)
	require.Equal(t, api.MigrationPhaseFailed, out.Phase)
	require.NotEmpty(t, deref(out.FailureReason), "the source says why")
	require.Contains(t, deref(out.FailureReason), reason)
	before := len(ticks(t, a))
	require.Eventually(t, func() bool { return tickCount(a) > before+1 }, 10*time.Second, 10*time.Millisecond, "the guest runs on")
}

func requireTargetFailed(t *testing.T, last api.MigrationProgress, reason string) {
	t.Helper()
	require.Equal(t, api.MigrationPhaseFailed, last.Phase)
	require.NotEmpty(t, deref(last.FailureReason), "the target says why")
	require.Contains(t, deref(last.FailureReason), reason)
}

// migrateAgain shows the VM migrates fine after a failure.
func migrateAgain(t *testing.T, a *serverProc, props api.InstanceProperties) {
	t.Helper()
	c := startServer(t)
	before := console(t, a)
	last := migrate(t, a, c, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	n := len(tickNumbers(before))
	require.Eventually(t, func() bool { return tickCount(c) > n+2 }, 10*time.Second, 10*time.Millisecond)
	requireMovedConsole(t, before, console(t, c))
}

func TestMigrationFailures(t *testing.T) {
	kvmtest.Require(t)

	t.Run("target killed", func(t *testing.T) {
		a := startServer(t)
		b := startServer(t, "WAGGLE_FAILPOINTS="+server.FailStallInPrecopy)
		props := createRunning(t, a, tickerJSON, "tick 2\n")
		startMigration(t, a, b, a.addr, props)
		require.Eventually(t, func() bool { return outboundPhase(a) == api.MigrationPhaseRamPrecopy }, 10*time.Second, 5*time.Millisecond)
		require.NoError(t, b.cmd.Process.Kill())
		requireSourceUnharmed(t, a, "")
		migrateAgain(t, a, props)
	})

	t.Run("connection cut", func(t *testing.T) {
		a, b := startServer(t), startServer(t)
		props := createRunning(t, a, tickerJSON, "tick 2\n")
		proxy := cuttingProxy(t, a.addr, 64<<10)
		last := migrate(t, a, b, proxy, props)
		requireTargetFailed(t, last, "")
		requireSourceUnharmed(t, a, "")
		require.Equal(t, api.InstanceStateFailed, state(t, b).State)
		// The failed target takes the VM on a second try, without the cut.
		last = migrate(t, a, b, a.addr, props)
		require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
		require.Equal(t, api.InstanceStateRunning, state(t, b).State)
	})

	t.Run("spec rejected", func(t *testing.T) {
		// The target's storage root lacks the disk the source's spec
		// names: it cannot build the VM.
		a, b := startServer(t), startServer(t)
		props := createRunning(t, a, diskSpec(diskFile(t, a.root)), "disk ok pass 1\n")
		last := migrate(t, a, b, a.addr, props)
		requireTargetFailed(t, last, "components.disk0-be")
		require.NotContains(t, deref(last.FailureReason), b.root, "the target tells nothing of its storage root")
		require.Eventually(t, func() bool { return inState(a, api.InstanceStateRunning) }, 20*time.Second, 10*time.Millisecond)
		require.Contains(t, deref(outbound(t, a).FailureReason), "components.disk0-be")
		// A target that shares the source's storage takes the VM.
		c := startServerIn(t, a.root)
		last = migrate(t, a, c, a.addr, props)
		require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	})

	t.Run("device import failing", func(t *testing.T) {
		a := startServer(t)
		b := startServer(t, "WAGGLE_FAILPOINTS="+server.FailDeviceImport)
		props := createRunning(t, a, tickerJSON, "tick 2\n")
		last := migrate(t, a, b, a.addr, props)
		requireTargetFailed(t, last, "import the VM's state")
		requireSourceUnharmed(t, a, "import the VM's state")
		migrateAgain(t, a, props)
	})

	t.Run("source told to stop", func(t *testing.T) {
		// Stop means stop: the migration is aborted and the VM stopped,
		// migrating -> stopping -> stopped -> destroyed, answered 204.
		a := startServer(t)
		b := startServer(t, "WAGGLE_FAILPOINTS="+server.FailStallInPrecopy)
		props := createRunning(t, a, tickerJSON, "tick 2\n")
		ctx := context.Background()
		startMigration(t, a, b, a.addr, props)
		require.Eventually(t, func() bool { return outboundPhase(a) == api.MigrationPhaseRamPrecopy }, 10*time.Second, 5*time.Millisecond)
		migrating := state(t, a)
		require.Equal(t, api.InstanceStateMigrating, migrating.State)
		s, err := a.client.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedStop})
		require.NoError(t, err)
		require.Equal(t, http.StatusNoContent, s.StatusCode(), string(s.Body))
		waitState(t, a.client, migrating.Gen, api.InstanceStateDestroyed)
		// Every change since the migration, from the server's history.
		zero := int32(0)
		m, err := a.client.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: migrating.Gen, TimeoutMs: &zero})
		require.NoError(t, err)
		require.NotNil(t, m.JSON200, string(m.Body))
		require.NotNil(t, m.JSON200.History)
		var seen []api.InstanceState
		for _, tr := range *m.JSON200.History {
			seen = append(seen, tr.State)
		}
		require.Equal(t, []api.InstanceState{api.InstanceStateStopping, api.InstanceStateStopped, api.InstanceStateDestroyed}, seen)
		out := outbound(t, a)
		require.Equal(t, api.MigrationPhaseFailed, out.Phase)
		require.Contains(t, deref(out.FailureReason), "stop was requested")
		require.Eventually(t, func() bool {
			in := inbound(b)
			return in != nil && in.Phase == api.MigrationPhaseFailed
		}, 20*time.Second, 10*time.Millisecond, "the stalled target sees the source give up")
		require.Equal(t, api.InstanceStateFailed, state(t, b).State, "the target never ran the VM")
	})

	t.Run("guest powers off during the migration", func(t *testing.T) {
		a := startServer(t)
		b := startServer(t, "WAGGLE_FAILPOINTS="+server.FailStallInPrecopy)
		spec := strings.Replace(tickerJSON, "pace_ms=20 dirty_kib=4096", "pace_ms=20 dirty_kib=4096 ticks=40", 1)
		props := createRunning(t, a, spec, "tick 2\n")
		last := migrate(t, a, b, a.addr, props)
		requireTargetFailed(t, last, "")
		// What the guest asked for happens: it powered off, so the instance
		// is stopped and destroyed, not resumed.
		require.Eventually(t, func() bool { return inState(a, api.InstanceStateDestroyed) }, 20*time.Second, 10*time.Millisecond)
		out := outbound(t, a)
		require.Equal(t, api.MigrationPhaseFailed, out.Phase)
		require.Contains(t, deref(out.FailureReason), "the guest ended during the migration")
	})

	t.Run("stranger guessing the url", func(t *testing.T) {
		a, b := startServer(t), startServer(t)
		props := createRunning(t, a, tickerJSON, "tick 1\n")
		before := state(t, a)

		// Not armed: the source refuses the upgrade, and the target says why.
		ensureTarget(t, b, props, uuid.New(), a.addr, migration.NewSecret(), nil)
		require.Eventually(t, func() bool { return inState(b, api.InstanceStateFailed) }, 10*time.Second, 10*time.Millisecond)
		require.Contains(t, deref(state(t, b).FailureReason), "no_such_migration")

		// Armed, and the stranger has the id (the URL) but not the secret:
		// the source proves itself, the stranger cannot, and nothing moves.
		id, secret := arm(t, a)
		stranger := startServer(t)
		ensureTarget(t, stranger, props, id, a.addr, migration.NewSecret(), nil)
		require.Eventually(t, func() bool { return inState(stranger, api.InstanceStateFailed) }, 10*time.Second, 10*time.Millisecond)
		reason := deref(state(t, stranger).FailureReason)
		require.Contains(t, reason, "did not prove that it holds the migration secret")
		requireLogged(t, a, "the target refused the migration secret")
		after := state(t, a)
		require.Equal(t, api.InstanceStateRunning, after.State)
		require.Equal(t, before.Gen, after.Gen, "the source never left running")
		st := migrationStatus(a)
		require.NotNil(t, st)
		require.Nil(t, st.MigrationOut, "no migration began")

		// The arm is still there for the target that holds the secret.
		holder := startServer(t)
		ensureTarget(t, holder, props, id, a.addr, secret, nil)
		require.Eventually(t, func() bool { return inState(holder, api.InstanceStateRunning) }, 30*time.Second, 10*time.Millisecond)
		require.NotContains(t, a.log.String()+stranger.log.String()+holder.log.String(), secret, "the secret is never logged")
	})
}

// cuttingProxy forwards one connection to addr and cuts it after limit
// bytes from the source.
func cuttingProxy(t *testing.T, addr string, limit int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); io.Copy(up, c) }()
				io.CopyN(c, up, limit) // then cut both ways
				c.Close()
				up.Close()
				wg.Wait()
			}()
		}
	}()
	return ln.Addr().String()
}

// TestTargetWaitsForItsSpec: until the source sends the spec, a migration
// target answers that it waits for it. (No KVM: nothing is built.)
func TestTargetWaitsForItsSpec(t *testing.T) {
	b := startServer(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	require.NoError(t, err)
	defer silent.Close()
	ensureTarget(t, b, api.InstanceProperties{Id: uuid.New(), Name: "waiting"}, uuid.New(), silent.Addr().String(), migration.NewSecret(), nil)
	sp, err := b.client.InstanceSpecGetWithResponse(context.Background())
	require.NoError(t, err)
	require.Equal(t, api.InstanceSpecStatusWaitingForMigrationSource, sp.JSON200.SpecStatus)
	require.Nil(t, sp.JSON200.Spec)
	// Nothing can be asked of it but to wait.
	s, err := b.client.InstanceStatePutWithResponse(context.Background(), api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, s.StatusCode())
	// A source that never answers is given up within the stream's timeouts.
	require.Eventually(t, func() bool { return inState(b, api.InstanceStateFailed) },
		server.HandshakeTimeout+5*time.Second, 50*time.Millisecond)
	require.Contains(t, deref(state(t, b).FailureReason), "the source did not answer")
}

// TestTargetEnsureIsCheckedFirst: a target's ensure whose source is not
// among the server's --migration-peers, or whose secret is not of the
// secrets' form, is refused with 400 naming the field, never echoing the
// secret; nothing is dialed and no instance is left. Loopback is among the
// default peers. (No KVM: a target builds nothing before its source has
// proved itself.)
func TestTargetEnsureIsCheckedFirst(t *testing.T) {
	listen := func() (string, *atomic.Int32) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		var dialed atomic.Int32
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				dialed.Add(1)
				c.Close()
			}
		}()
		return ln.Addr().String(), &dialed
	}
	addr, dialed := listen()
	p := startServerFlags(t, t.TempDir(), []string{"-migration-peers", "10.9.0.0/16"})
	good := migration.NewSecret()
	cases := []struct{ name, src, secret, field string }{
		{"a source outside the peers", addr, good, "migrate.src_addr"},
		{"a short secret", "10.9.1.1:12400", good[:30], "migrate.secret"},
		{"a secret not in base64url", "10.9.1.1:12400", good[:42] + "!", "migrate.secret"},
	}
	for _, c := range cases {
		m := api.InstanceMigrateInitiateRequest{MigrationId: uuid.New(), SrcAddr: c.src, Secret: c.secret}
		r, err := p.client.InstanceEnsureWithResponse(context.Background(), targetEnsure(t, api.InstanceProperties{Id: uuid.New(), Name: "x"}, m))
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, r.StatusCode(), "%s: %s", c.name, r.Body)
		require.Equal(t, "invalid_request", r.JSON400.ErrorCode, c.name)
		require.Contains(t, r.JSON400.Message, c.field, c.name)
		require.NotContains(t, string(r.Body), c.secret, "%s: the secret is never echoed", c.name)
		_, err = stateOf(p)
		require.Error(t, err, "%s: no instance is left", c.name)
	}
	require.Zero(t, dialed.Load(), "a source outside the peers is never dialed")
	require.NotContains(t, p.log.String(), good, "the secret is never logged")

	// With the default peers, loopback is a source: the target dials it.
	addr, dialed = listen()
	q := startServer(t)
	ensureTarget(t, q, api.InstanceProperties{Id: uuid.New(), Name: "x"}, uuid.New(), addr, good, nil)
	require.Eventually(t, func() bool { return dialed.Load() > 0 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return inState(q, api.InstanceStateFailed) }, 20*time.Second, 10*time.Millisecond)
	require.NotContains(t, deref(state(t, q).FailureReason), good)
}

// TestMigrateWithAReplacedBackend: the target amends the source's spec with
// its own disk file (same data, another path beneath its own storage root)
// and the guest's data checks pass on it; a replacement that is not a
// backend, or names nothing, is refused.
func TestMigrateWithAReplacedBackend(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	props := createRunning(t, a, diskSpec(diskFile(t, a.root)), "disk ok sectors=256\n")
	// The guest only reads from now on; the target's host has its own copy.
	data, err := os.ReadFile(filepath.Join(a.root, filepath.FromSlash(diskPath)))
	require.NoError(t, err)
	const other = "copies/disk-b.img"
	require.NoError(t, os.MkdirAll(filepath.Join(b.root, "copies"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(b.root, filepath.FromSlash(other)), data, 0o600))

	ctx := context.Background()
	var backend api.Component
	require.NoError(t, backend.FromFileStorageBackendComponent(api.FileStorageBackendComponent{Type: api.FileStorageBackendComponentTypeFileStorageBackend, Path: other}))
	var serial api.Component
	require.NoError(t, serial.FromSerialPortComponent(api.SerialPortComponent{Type: api.SerialPortComponentTypeSerialPort, Num: api.SerialPortNumberCom2}))

	// Refused at once: a device cannot be replaced.
	r, err := b.client.InstanceEnsureWithResponse(ctx, targetEnsure(t, props, api.InstanceMigrateInitiateRequest{
		MigrationId: uuid.New(), SrcAddr: a.addr, Secret: migration.NewSecret(),
		ReplaceComponents: &map[string]api.Component{"com1": serial}}))
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, r.StatusCode(), string(r.Body))
	require.Contains(t, r.JSON400.Message, "migrate.replace_components.com1")

	startMigrationReplacing(t, a, b, a.addr, props, map[string]api.Component{"disk0-be": backend})
	require.Eventually(t, func() bool { return inState(b, api.InstanceStateRunning) }, 30*time.Second, 10*time.Millisecond)

	sp, err := b.client.InstanceSpecGetWithResponse(ctx)
	require.NoError(t, err)
	require.NotNil(t, sp.JSON200, string(sp.Body))
	be, err := sp.JSON200.Spec.Components["disk0-be"].AsFileStorageBackendComponent()
	require.NoError(t, err)
	require.Equal(t, other, be.Path, "the target runs on its own file")
	require.Eventually(t, func() bool { return serialCount(b.client, "disk ok pass") >= 2 }, 20*time.Second, 20*time.Millisecond,
		"the guest checks its disk twice on the target")
	require.NotContains(t, console(t, b), "BAD")

	// A replacement naming no component of the source's spec fails the
	// migration, and the source runs on.
	c := startServer(t)
	startMigrationReplacing(t, b, c, b.addr, props, map[string]api.Component{"nothing": backend})
	require.Eventually(t, func() bool { return inState(c, api.InstanceStateFailed) }, 20*time.Second, 10*time.Millisecond)
	require.Contains(t, deref(state(t, c).FailureReason), "components.nothing")
	require.Eventually(t, func() bool { return inState(b, api.InstanceStateRunning) }, 20*time.Second, 10*time.Millisecond)
}

// TestStartWithoutUpgradeKeepsTheArming: a plain GET of the start URL is
// refused and uses nothing up: the instance runs on, not "migrating", and
// the armed migration still goes through.
func TestStartWithoutUpgradeKeepsTheArming(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	props := createRunning(t, a, tickerJSON, "tick 1\n")
	id, secret := arm(t, a)

	resp, err := http.Get(fmt.Sprintf("http://%s/v1/instance/migrate/%s/start", a.addr, id))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))
	require.Contains(t, string(body), `"not_upgraded"`)
	require.Equal(t, api.InstanceStateRunning, state(t, a).State)

	ensureTarget(t, b, props, id, a.addr, secret, nil)
	require.Eventually(t, func() bool { return inState(b, api.InstanceStateRunning) }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, api.MigrationPhaseCompleted, outbound(t, a).Phase)
}

// TestMigrateToATargetThatReadsOnlyOlderDeviceState: a target that offers
// only the oldest version of each device's state (as an older build would)
// gets that version from the source, imports it, and the guest goes on;
// from there the VM moves to a current target, which gets the newest.
func TestMigrateToATargetThatReadsOnlyOlderDeviceState(t *testing.T) {
	kvmtest.Require(t)
	uart := devices.ImportableVersions()[devices.UARTStateKind]
	require.Greater(t, len(uart), 1, "the UART has an older state version to show")
	a := startServer(t)
	old := startServer(t, "WAGGLE_FAILPOINTS="+server.FailOldestDeviceVersions)
	props := createRunning(t, a, tickerJSON, "tick 2\n")

	last := migrate(t, a, old, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	requireLogged(t, old, fmt.Sprintf("com1=%s/v%d", devices.UARTStateKind, slices.Min(uart)))
	awaitDestroyed(t, a)
	onA := console(t, a)
	require.Eventually(t, func() bool { return tickCount(old) > len(tickNumbers(onA))+2 }, 10*time.Second, 10*time.Millisecond)
	requireMovedConsole(t, onA, console(t, old))

	current := startServer(t)
	last = migrate(t, old, current, old.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	requireLogged(t, current, fmt.Sprintf("com1=%s/v%d", devices.UARTStateKind, slices.Max(uart)))
	awaitDestroyed(t, old)
	onOld := console(t, old)
	require.Eventually(t, func() bool { return tickCount(current) > len(tickNumbers(onOld))+2 }, 10*time.Second, 10*time.Millisecond)
	requireMovedConsole(t, onOld, console(t, current))
}

// requireLogged waits until the server's log has a line with text (the log
// is read from the process's stderr as it comes).
func requireLogged(t *testing.T, p *serverProc, text string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(p.log.String(), text) }, 10*time.Second, 5*time.Millisecond,
		"the server never logged %q", text)
}
