package main

import (
	"bufio"
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

// createRunning creates and runs a VM from spec JSON on p and waits until
// the console shows ready.
func createRunning(t *testing.T, p *serverProc, specJSON, ready string) api.InstanceProperties {
	t.Helper()
	ctx := context.Background()
	w, err := specDecode(specJSON)
	require.NoError(t, err)
	props := api.InstanceProperties{Id: uuid.New(), Name: "mig"}
	r, err := p.client.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{Properties: props, Spec: &w})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	s, err := p.client.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode(), string(s.Body))
	serialUntil(t, p.client, ready)
	return props
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
	ctx := context.Background()
	id := uuid.New()
	e, err := src.client.InstanceMigrateExpectWithResponse(ctx, api.InstanceMigrateExpectRequest{MigrationId: id})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, e.StatusCode(), string(e.Body))
	mig := &api.InstanceMigrateInitiateRequest{MigrationId: id, SrcAddr: srcAddr}
	if replace != nil {
		mig.ReplaceComponents = &replace
	}
	r, err := dst.client.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{Properties: props, Migrate: mig})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
}

// migrate moves the VM from src to dst (dialing srcAddr, which may be a
// proxy) and waits until the target's migration ends; it returns the
// target's final progress.
func migrate(t *testing.T, src, dst *serverProc, srcAddr string, props api.InstanceProperties) api.MigrationProgress {
	t.Helper()
	ctx := context.Background()
	startMigration(t, src, dst, srcAddr, props)
	var last api.MigrationProgress
	require.Eventually(t, func() bool {
		st, err := dst.client.InstanceMigrationStatusWithResponse(ctx)
		if err != nil || st.JSON200 == nil || st.JSON200.MigrationIn == nil {
			return false
		}
		last = *st.JSON200.MigrationIn
		return last.Phase == api.MigrationPhaseCompleted || last.Phase == api.MigrationPhaseFailed
	}, 60*time.Second, 10*time.Millisecond)
	return last
}

func state(t *testing.T, p *serverProc) api.Instance {
	t.Helper()
	g, err := p.client.InstanceGetWithResponse(context.Background())
	require.NoError(t, err)
	require.NotNil(t, g.JSON200, string(g.Body))
	return *g.JSON200
}

func outbound(t *testing.T, p *serverProc) api.MigrationProgress {
	t.Helper()
	st, err := p.client.InstanceMigrationStatusWithResponse(context.Background())
	require.NoError(t, err)
	require.NotNil(t, st.JSON200)
	require.NotNil(t, st.JSON200.MigrationOut)
	return *st.JSON200.MigrationOut
}

// outboundPhase is the source's migration phase, "" before there is one.
func outboundPhase(p *serverProc) api.MigrationPhase {
	st, err := p.client.InstanceMigrationStatusWithResponse(context.Background())
	if err != nil || st.JSON200 == nil || st.JSON200.MigrationOut == nil {
		return ""
	}
	return st.JSON200.MigrationOut.Phase
}

var tickRE = regexp.MustCompile(`tick (\d+)\n`)

// console returns the server's serial history, which spans every instance it has run.
func console(t *testing.T, p *serverProc) string {
	t.Helper()
	r, err := p.client.InstanceSerialHistoryGetWithResponse(context.Background(), &api.InstanceSerialHistoryGetParams{})
	require.NoError(t, err)
	require.NotNil(t, r.JSON200, "serial history: %s", r.Body)
	return string(r.JSON200.Data)
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

// awaitDestroyed waits until the migration's source has let its VM go: the
// target runs once it has the hand-off, a moment before the source closes
// its VM and flushes the VM's last console bytes.
func awaitDestroyed(t *testing.T, p *serverProc) {
	t.Helper()
	require.Eventually(t, func() bool { return state(t, p).State == api.InstanceStateDestroyed }, 20*time.Second, 5*time.Millisecond)
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
	require.Equal(t, api.InstanceStateDestroyed, state(t, a).State)
	require.Equal(t, api.InstanceStateRunning, state(t, b).State)
	out := outbound(t, a)
	require.Equal(t, api.MigrationPhaseCompleted, out.Phase)
	require.NotNil(t, out.DowntimeUs)
	require.Positive(t, out.BytesSent)

	// The guest's console continues on B byte for byte where A's ended.
	awaitDestroyed(t, a)
	onA := console(t, a)
	serialUntil(t, b.client, "tick ")
	require.Eventually(t, func() bool { return len(ticks(t, b)) >= 3 }, 10*time.Second, 10*time.Millisecond)
	all := requireConsecutive(t, onA+console(t, b))
	require.Greater(t, len(all), len(tickNumbers(onA))+2, "B went on ticking")

	// And back: A takes the VM again as a new instance. A's console keeps
	// what the first instance printed, then what the returning one prints.
	last = migrate(t, b, a, b.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	awaitDestroyed(t, b)
	onB := console(t, b)
	require.Eventually(t, func() bool {
		return len(ticks(t, a)) > len(tickNumbers(onA))+2
	}, 10*time.Second, 10*time.Millisecond)
	nowA := console(t, a)
	require.True(t, strings.HasPrefix(nowA, onA), "A's console keeps the first instance's output")
	all = requireConsecutive(t, onA+onB+nowA[len(onA):])
	require.Greater(t, len(all), len(tickNumbers(onA+onB))+2, "A went on ticking after the way back")
}

func TestMigrateMemcheckSaysMemOK(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	spec := `{"board":{"cpus":1,"memory_mb":128,"chipset":"i440fx"},"boot":{"image":"memcheck","cmdline":"span_mib=64 pace_ms=50"},
	 "components":{"com1":{"type":"serial_port","num":"com1"}}}`
	props := createRunning(t, a, spec, "mem ok 2\n")
	last := migrate(t, a, b, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	out := serialUntil(t, b.client, "mem ok")
	require.Eventually(t, func() bool {
		out = serialUntil(t, b.client, "mem ok")
		return strings.Count(out, "mem ok") >= 3
	}, 20*time.Second, 20*time.Millisecond)
	require.NotContains(t, out, "BAD")
	require.Equal(t, api.InstanceStateRunning, state(t, b).State)
}

func diskSpec(path string) string {
	return fmt.Sprintf(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"disk","cmdline":"sectors=256 pace_ms=50"},
	 "components":{"com1":{"type":"serial_port","num":"com1"},
	  "disk0":{"type":"virtio_disk","backend":"disk0-be","slot":0},
	  "disk0-be":{"type":"file_storage_backend","path":%q}}}`, path)
}

func diskFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o644))
	return path
}

func TestMigrateDiskDataSurvives(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	props := createRunning(t, a, diskSpec(diskFile(t)), "disk ok pass 2\n")
	last := migrate(t, a, b, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	require.Eventually(t, func() bool {
		return strings.Count(serialUntil(t, b.client, "disk ok pass"), "disk ok pass") >= 2
	}, 20*time.Second, 20*time.Millisecond)
	require.NotContains(t, serialUntil(t, b.client, "disk ok"), "BAD")
}

// requireSourceUnharmed checks that a failed migration left the source
// running with the failure and its reason shown, and that the guest runs on.
func requireSourceUnharmed(t *testing.T, a *serverProc, reason string) {
	t.Helper()
	require.Eventually(t, func() bool { return state(t, a).State == api.InstanceStateRunning }, 20*time.Second, 10*time.Millisecond)
	out := outbound(t, a)
	require.Equal(t, api.MigrationPhaseFailed, out.Phase)
	require.NotEmpty(t, deref(out.FailureReason), "the source says why")
	require.Contains(t, deref(out.FailureReason), reason)
	before := ticks(t, a)
	require.Eventually(t, func() bool { return len(ticks(t, a)) > len(before)+1 }, 10*time.Second, 10*time.Millisecond, "the guest runs on")
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
	before := ticks(t, a)
	last := migrate(t, a, c, a.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	require.Eventually(t, func() bool { return len(ticks(t, c)) > 0 }, 10*time.Second, 10*time.Millisecond)
	require.Greater(t, ticks(t, c)[0], before[len(before)-1])
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
		a, b := startServer(t), startServer(t)
		path := diskFile(t)
		props := createRunning(t, a, diskSpec(path), "disk ok pass 1\n")
		// The target cannot open the disk the spec names.
		require.NoError(t, os.Rename(path, path+".away"))
		last := migrate(t, a, b, a.addr, props)
		requireTargetFailed(t, last, "components.disk0-be")
		require.Eventually(t, func() bool { return state(t, a).State == api.InstanceStateRunning }, 20*time.Second, 10*time.Millisecond)
		require.Contains(t, deref(outbound(t, a).FailureReason), "components.disk0-be")
		require.NoError(t, os.Rename(path+".away", path))
		c := startServer(t)
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
		a := startServer(t)
		b := startServer(t, "WAGGLE_FAILPOINTS="+server.FailStallInPrecopy)
		props := createRunning(t, a, tickerJSON, "tick 2\n")
		ctx := context.Background()
		startMigration(t, a, b, a.addr, props)
		require.Eventually(t, func() bool { return outboundPhase(a) == api.MigrationPhaseRamPrecopy }, 10*time.Second, 5*time.Millisecond)
		s, err := a.client.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedStop})
		require.NoError(t, err)
		require.Equal(t, http.StatusConflict, s.StatusCode())
		require.Contains(t, s.JSON409.Message, "aborted")
		requireSourceUnharmed(t, a, "stop was requested")
		require.Eventually(t, func() bool {
			st, err := b.client.InstanceMigrationStatusWithResponse(ctx)
			return err == nil && st.JSON200.MigrationIn != nil && st.JSON200.MigrationIn.Phase == api.MigrationPhaseFailed
		}, 20*time.Second, 10*time.Millisecond)
		migrateAgain(t, a, props)
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
		require.Eventually(t, func() bool { return state(t, a).State == api.InstanceStateDestroyed }, 20*time.Second, 10*time.Millisecond)
		out := outbound(t, a)
		require.Equal(t, api.MigrationPhaseFailed, out.Phase)
		require.Contains(t, deref(out.FailureReason), "the guest ended during the migration")
	})

	t.Run("stranger guessing the url", func(t *testing.T) {
		a, b := startServer(t), startServer(t)
		props := createRunning(t, a, tickerJSON, "tick 1\n")
		// Not armed: the source refuses, and the target says why.
		r, err := b.client.InstanceEnsureWithResponse(context.Background(), api.InstanceEnsureRequest{
			Properties: props, Migrate: &api.InstanceMigrateInitiateRequest{MigrationId: uuid.New(), SrcAddr: a.addr}})
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, r.StatusCode())
		require.Eventually(t, func() bool { return state(t, b).State == api.InstanceStateFailed }, 10*time.Second, 10*time.Millisecond)
		require.Contains(t, deref(state(t, b).FailureReason), "no_such_migration")
		require.Equal(t, api.InstanceStateRunning, state(t, a).State)
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

// TestRogueSourceCannotHarmTheTarget: a source that sends a bad stream
// ends the migration with a clear error on the target, which aborts and
// says why.
func TestRogueSourceCannotHarmTheTarget(t *testing.T) {
	kvmtest.Require(t)
	const goodEnv = `{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"components":{"com1":{"type":"serial_port","num":"com1"}}}}`
	cases := []struct {
		name, envelope string
		afterReady     func(w io.Writer)
		want           string
	}{
		{"pages outside guest RAM", goodEnv, func(w io.Writer) {
			migration.WriteFrame(w, migration.TypeRAM, migration.RAM{GPA: 1 << 40, Data: make([]byte, migration.PageSize)}.Encode())
		}, "outside guest RAM"},
		{"spec fails validation", `{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":0,"memory_mb":64,"chipset":"i440fx"},"components":{}}}`,
			nil, "board.cpus"},
		{"unknown spec version", `{"spec_version":"vmm-server/v99","spec":{}}`, nil, "unknown spec_version"},
		{"device of unknown kind", goodEnv, func(w io.Writer) {
			migration.WriteFrame(w, migration.TypeDevice, migration.Device{Key: "com1", Kind: "floppy", Version: 1}.Encode())
		}, `cannot import "floppy"`},
		{"device of unknown version", goodEnv, func(w io.Writer) {
			migration.WriteFrame(w, migration.TypeDevice, migration.Device{Key: "com1", Kind: "uart16550a", Version: 99}.Encode())
		}, "version 99"},
		{"unknown frame type", goodEnv, func(w io.Writer) { w.Write([]byte{77, 0, 0, 0, 0, 0, 0, 0}) }, "unknown type 77"},
		{"oversized length", goodEnv, func(w io.Writer) { w.Write([]byte{5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}) }, "over the"},
		{"truncated frame", goodEnv, func(w io.Writer) {
			w.Write([]byte{5, 0, 0, 0, 0, 0, 0x10, 0})
			w.(*net.TCPConn).CloseWrite()
		}, "truncated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := startServer(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			got := make(chan string, 1)
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				br := bufio.NewReader(conn)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", server.MigrateUpgradeProtocol)
				if _, err := migration.ReadFrame(br, nil); err != nil { // Hello
					return
				}
				migration.WriteFrame(conn, migration.TypeWelcome, migration.Welcome{Protocol: 1}.Encode())
				migration.WriteFrame(conn, migration.TypePreamble, migration.Preamble{Envelope: []byte(c.envelope)}.Encode())
				f, err := migration.ReadFrame(br, nil)
				if err == nil && f.Type == migration.TypeReady && c.afterReady != nil {
					c.afterReady(conn)
					f, err = migration.ReadFrame(br, nil)
				}
				if err == nil && f.Type == migration.TypeAbort {
					a, _ := migration.DecodeAbort(f.Payload)
					got <- a.Reason
				}
			}()
			r, err := b.client.InstanceEnsureWithResponse(context.Background(), api.InstanceEnsureRequest{
				Properties: api.InstanceProperties{Id: uuid.New(), Name: "x"},
				Migrate:    &api.InstanceMigrateInitiateRequest{MigrationId: uuid.New(), SrcAddr: ln.Addr().String()}})
			require.NoError(t, err)
			require.Equal(t, http.StatusCreated, r.StatusCode())
			select {
			case reason := <-got:
				require.Contains(t, reason, c.want, "the target's Abort says why")
			case <-time.After(20 * time.Second):
				t.Fatal("the target did not abort")
			}
			require.Eventually(t, func() bool { return state(t, b).State == api.InstanceStateFailed }, 10*time.Second, 10*time.Millisecond)
			require.Contains(t, deref(state(t, b).FailureReason), c.want)
			st, err := b.client.InstanceMigrationStatusWithResponse(context.Background())
			require.NoError(t, err)
			require.Equal(t, api.MigrationPhaseFailed, st.JSON200.MigrationIn.Phase)
		})
	}
}

// TestRogueTargetCannotHarmTheSource: garbage after the upgrade ends the
// migration with a clear error and the source runs on.
func TestRogueTargetCannotHarmTheSource(t *testing.T) {
	kvmtest.Require(t)
	a := startServer(t)
	props := createRunning(t, a, tickerJSON, "tick 1\n")
	for _, garbage := range [][]byte{
		{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, // oversized length
		{42, 0, 0, 0, 0, 0, 0, 0},            // unknown type
		{1, 0, 0},                            // truncated header
	} {
		id := uuid.New()
		_, err := a.client.InstanceMigrateExpectWithResponse(context.Background(), api.InstanceMigrateExpectRequest{MigrationId: id})
		require.NoError(t, err)
		c, err := net.Dial("tcp", a.addr)
		require.NoError(t, err)
		fmt.Fprintf(c, "GET /v1/instance/migrate/%s/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", id, server.MigrateUpgradeProtocol)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		c.Write(garbage)
		if len(garbage) < migration.HeaderSize {
			c.(*net.TCPConn).CloseWrite()
		}
		require.Eventually(t, func() bool { return outboundPhase(a) == api.MigrationPhaseFailed }, 10*time.Second, 10*time.Millisecond)
		c.Close()
		require.Eventually(t, func() bool { return state(t, a).State == api.InstanceStateRunning }, 10*time.Second, 10*time.Millisecond)
	}
	require.Contains(t, deref(outbound(t, a).FailureReason), "truncated")
	migrateAgain(t, a, props)
}

// TestTargetWaitsForItsSpec: until the source sends the spec, a migration
// target answers that it waits for it.
func TestTargetWaitsForItsSpec(t *testing.T) {
	kvmtest.Require(t)
	b := startServer(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	require.NoError(t, err)
	defer silent.Close()
	r, err := b.client.InstanceEnsureWithResponse(context.Background(), api.InstanceEnsureRequest{
		Properties: api.InstanceProperties{Id: uuid.New(), Name: "waiting"},
		Migrate:    &api.InstanceMigrateInitiateRequest{MigrationId: uuid.New(), SrcAddr: silent.Addr().String()}})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode())
	require.Equal(t, api.InstanceStateMigrating, r.JSON201.State)
	sp, err := b.client.InstanceSpecGetWithResponse(context.Background())
	require.NoError(t, err)
	require.Equal(t, api.InstanceSpecStatusWaitingForMigrationSource, sp.JSON200.SpecStatus)
	require.Nil(t, sp.JSON200.Spec)
	// Nothing can be asked of it but to wait.
	s, err := b.client.InstanceStatePutWithResponse(context.Background(), api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, s.StatusCode())
}

// TestMigrateWithAReplacedBackend: the target amends the source's spec with
// its own disk file (same data, another path) and the guest's data checks
// pass on it; a replacement that is not a backend, or names nothing, is
// refused.
func TestMigrateWithAReplacedBackend(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	path := diskFile(t)
	props := createRunning(t, a, diskSpec(path), "disk ok sectors=256\n")
	// The guest only reads from now on; the target's host has its own copy.
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	other := filepath.Join(t.TempDir(), "copy.img")
	require.NoError(t, os.WriteFile(other, data, 0o644))

	ctx := context.Background()
	var backend api.Component
	require.NoError(t, backend.FromFileStorageBackendComponent(api.FileStorageBackendComponent{Path: other}))
	var serial api.Component
	require.NoError(t, serial.FromSerialPortComponent(api.SerialPortComponent{Num: api.SerialPortNumberCom2}))

	// Refused at once: a device cannot be replaced.
	r, err := b.client.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{Properties: props,
		Migrate: &api.InstanceMigrateInitiateRequest{MigrationId: uuid.New(), SrcAddr: a.addr,
			ReplaceComponents: &map[string]api.Component{"com1": serial}}})
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, r.StatusCode(), string(r.Body))
	require.Contains(t, r.JSON400.Message, "migrate.replace_components.com1")

	startMigrationReplacing(t, a, b, a.addr, props, map[string]api.Component{"disk0-be": backend})
	require.Eventually(t, func() bool { return state(t, b).State == api.InstanceStateRunning }, 30*time.Second, 10*time.Millisecond)

	sp, err := b.client.InstanceSpecGetWithResponse(ctx)
	require.NoError(t, err)
	be, err := sp.JSON200.Spec.Components["disk0-be"].AsFileStorageBackendComponent()
	require.NoError(t, err)
	require.Equal(t, other, be.Path, "the target runs on its own file")
	require.Eventually(t, func() bool {
		return strings.Count(serialUntil(t, b.client, "disk ok pass"), "disk ok pass") >= 2
	}, 20*time.Second, 20*time.Millisecond)
	require.NotContains(t, serialUntil(t, b.client, "disk ok"), "BAD")

	// A replacement naming no component of the source's spec fails the
	// migration, and the source runs on.
	c := startServer(t)
	startMigrationReplacing(t, b, c, b.addr, props, map[string]api.Component{"nothing": backend})
	require.Eventually(t, func() bool { return state(t, c).State == api.InstanceStateFailed }, 20*time.Second, 10*time.Millisecond)
	require.Contains(t, deref(state(t, c).FailureReason), "components.nothing")
	require.Eventually(t, func() bool { return state(t, b).State == api.InstanceStateRunning }, 20*time.Second, 10*time.Millisecond)
}

// upgradeToSource opens the migration stream of an armed source as a
// target would, and returns it with its reader.
func upgradeToSource(t *testing.T, a *serverProc, id uuid.UUID) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", a.addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /v1/instance/migrate/%s/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", id, server.MigrateUpgradeProtocol)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return c, br
}

// TestStartWithoutUpgradeKeepsTheArming: a plain GET of the start URL is
// refused and uses nothing up: the instance runs on, not "migrating", and
// the armed migration still goes through.
func TestStartWithoutUpgradeKeepsTheArming(t *testing.T) {
	kvmtest.Require(t)
	a, b := startServer(t), startServer(t)
	props := createRunning(t, a, tickerJSON, "tick 1\n")
	ctx := context.Background()
	id := uuid.New()
	e, err := a.client.InstanceMigrateExpectWithResponse(ctx, api.InstanceMigrateExpectRequest{MigrationId: id})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, e.StatusCode(), string(e.Body))

	resp, err := http.Get(fmt.Sprintf("http://%s/v1/instance/migrate/%s/start", a.addr, id))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))
	require.Contains(t, string(body), `"not_upgraded"`)
	require.Equal(t, api.InstanceStateRunning, state(t, a).State)

	r, err := b.client.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{
		Properties: props, Migrate: &api.InstanceMigrateInitiateRequest{MigrationId: id, SrcAddr: a.addr}})
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	require.Eventually(t, func() bool { return state(t, b).State == api.InstanceStateRunning }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, api.MigrationPhaseCompleted, outbound(t, a).Phase)
}

// TestRoundsReportPagesLeft plays the target by hand and reads the source's
// rounds: each RoundEnd says how many pages were already dirty again, and
// the next round sends those (zero pages included) and those the guest
// dirtied while the target acknowledged; the final one, sent while paused,
// likewise. Then the "target" hangs up before
// the hand-off, and the source runs on.
func TestRoundsReportPagesLeft(t *testing.T) {
	kvmtest.Require(t)
	a := startServer(t)
	// 32 MiB dirtied every 20 ms: the rounds do not converge, so the source
	// goes round after round until its limit, then pauses.
	createRunning(t, a, strings.Replace(tickerJSON, "dirty_kib=4096", "dirty_kib=32768", 1), "tick 2\n")
	id := uuid.New()
	_, err := a.client.InstanceMigrateExpectWithResponse(context.Background(), api.InstanceMigrateExpectRequest{MigrationId: id})
	require.NoError(t, err)
	c, br := upgradeToSource(t, a, id)

	hello := migration.Hello{MigrationID: id, Protocols: migration.Supported, SpecVersions: []string{"vmm-server/v1"}}
	for kind, vs := range devices.ImportableVersions() {
		hello.Devices = append(hello.Devices, migration.DeviceVersions{Kind: kind, Versions: vs})
	}
	require.NoError(t, migration.WriteFrame(c, migration.TypeHello, hello.Encode()))
	var ends []migration.RoundEnd
	for done := false; !done; {
		f, err := migration.ReadFrame(br, nil)
		require.NoError(t, err)
		switch f.Type {
		case migration.TypePreamble:
			require.NoError(t, migration.WriteFrame(c, migration.TypeReady, nil))
			// Read slowly at first and answer each round late, so that
			// every round outlasts the guest's 20 ms dirtying period.
			time.Sleep(50 * time.Millisecond)
		case migration.TypeRoundEnd:
			end, err := migration.DecodeRoundEnd(f.Payload)
			require.NoError(t, err)
			ends = append(ends, end)
			if end.Final {
				done = true
				continue
			}
			time.Sleep(30 * time.Millisecond)
			require.NoError(t, migration.WriteFrame(c, migration.TypeRoundAck, migration.RoundAck{Round: end.Round}.Encode()))
		}
	}
	c.Close()
	t.Logf("rounds: %+v", ends)

	require.Greater(t, len(ends), 3, "round 0, dirty rounds and the final round: %+v", ends)
	require.Positive(t, ends[0].PagesSent, "round 0 sends the guest's pages")
	require.Positive(t, ends[0].PagesLeft, "the guest dirtied pages during round 0, which lasted over 50 ms")
	for i := 1; i < len(ends); i++ {
		require.Equal(t, uint32(i), ends[i].Round)
		require.GreaterOrEqual(t, ends[i].PagesSent, ends[i-1].PagesLeft, "rounds %+v", ends)
		require.Equal(t, i == len(ends)-1, ends[i].Final, "only the last round is final: %+v", ends)
	}
	require.Zero(t, ends[len(ends)-1].PagesLeft)
	requireSourceUnharmed(t, a, "")
	out := outbound(t, a)
	require.Equal(t, int64(len(ends)), int64(out.Rounds))
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
	require.Eventually(t, func() bool { return len(ticks(t, old)) >= 3 }, 10*time.Second, 10*time.Millisecond)
	requireConsecutive(t, console(t, a)+console(t, old))

	current := startServer(t)
	last = migrate(t, old, current, old.addr, props)
	require.Equal(t, api.MigrationPhaseCompleted, last.Phase, deref(last.FailureReason))
	requireLogged(t, current, fmt.Sprintf("com1=%s/v%d", devices.UARTStateKind, slices.Max(uart)))
	awaitDestroyed(t, old)
	require.Eventually(t, func() bool { return len(ticks(t, current)) >= 3 }, 10*time.Second, 10*time.Millisecond)
	requireConsecutive(t, console(t, a)+console(t, old)+console(t, current))
}

// requireLogged waits until the server's log has a line with text (the log
// is read from the process's stderr as it comes).
func requireLogged(t *testing.T, p *serverProc, text string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(p.log.String(), text) }, 10*time.Second, 5*time.Millisecond,
		"the server never logged %q", text)
}
