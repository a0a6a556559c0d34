package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm"
)

// Tests of what a stranger can learn from, or do to, the unauthenticated
// migration endpoint, and of a hand-off that the target lost.

// refusalOf asks for migration id's stream at addr, which must be refused,
// and returns the status and the Error body without its request_id.
func refusalOf(t *testing.T, addr string, id uuid.UUID) (int, map[string]any) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	fmt.Fprintf(c, "GET /v1/instance/migrate/%s/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
		id, MigrateUpgradeProtocol)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	require.NotEqual(t, http.StatusSwitchingProtocols, resp.StatusCode, "the stream of %s was upgraded", id)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(raw, &body), "%s", raw)
	require.NotEmpty(t, body["request_id"])
	delete(body, "request_id")
	return resp.StatusCode, body
}

// TestUpgradeRefusalsTellNothing: before any proof, a caller without
// credentials gets the same answer whether there is no instance, no arm,
// an arm of another id, an expired one, an instance that is not running,
// or an arm busy with other handshakes: 404 no_such_migration, one message.
func TestUpgradeRefusalsTellNothing(t *testing.T) {
	type answer struct {
		status int
		body   map[string]any
	}
	got := map[string]answer{}
	ask := func(name, addr string, id uuid.UUID) {
		status, body := refusalOf(t, addr, id)
		got[name] = answer{status, body}
	}

	empty := newMigRig(t)
	ask("no instance", empty.addr, uuid.New())

	created := newMigRig(t)
	created.ensure(t, "created")
	ask("created, not running", created.addr, uuid.New())

	a := newMigRig(t)
	a.running(t)
	ask("running, not armed", a.addr, uuid.New())
	id, _ := a.arm(t)
	ask("armed, another id", a.addr, uuid.New())
	a.expireArm(t)
	ask("armed, expired", a.addr, id)

	a.rt.mc.handshake.set(time.Minute)
	a.rt.mc.idle.set(time.Minute)
	id, _ = a.arm(t)
	for range maxHandshakes {
		openStream(t, a.addr, id)
	}
	ask("armed, busy", a.addr, id)

	s := newMigRig(t)
	s.running(t)
	sid, ssecret := s.arm(t)
	require.NoError(t, request(s.rt, RequestStop))
	waitState(t, s.rt, StateDestroyed)
	ask("stopped", s.addr, uuid.New())

	want := answer{http.StatusNotFound, map[string]any{"error_code": CodeNoSuchMigration, "message": ErrNoSuchMigration.Error()}}
	for name, g := range got {
		require.Equal(t, want, g, name)
	}

	// The arm of the stopped instance, if it was kept, says why it cannot
	// serve only to a target that proved itself.
	status, _, conn := upgradeMigration(t, s.addr, sid)
	if status == http.StatusSwitchingProtocols {
		br := bufio.NewReader(conn)
		hello := targetHello(sid)
		w := helloWelcome(t, conn, br, hello)
		sendFrame(t, conn, migration.TypeProof, migration.Proof{Proof: migration.Prove(migration.NewSecret(), migration.RoleTarget, sid, hello.Nonce, w.Nonce)}.Encode())
		frames := drain(t, conn, br)
		require.Len(t, frames, 1)
		ab, err := migration.DecodeAbort(frames[0].Payload)
		require.NoError(t, err)
		require.Equal(t, migration.AbortSecretRefused, ab.Code)
		require.Empty(t, ab.Reason, "a stranger learns no state")

		_, _, conn = upgradeMigration(t, s.addr, sid)
		br = bufio.NewReader(conn)
		proveAsTarget(t, conn, br, sid, ssecret)
		f := readFrame(t, conn, br)
		require.Equal(t, migration.TypeAbort, f.Type)
		ab, err = migration.DecodeAbort(f.Payload)
		require.NoError(t, err)
		require.Contains(t, ab.Reason, "cannot migrate an instance that is destroyed")
	} else {
		require.Equal(t, http.StatusNotFound, status, "a refusal like any other")
	}
}

// TestSilentStrangerDoesNotKeepTheTargetOut: a stranger who knows the id
// holds a stream open in silence; the real target migrates meanwhile.
func TestSilentStrangerDoesNotKeepTheTargetOut(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	vm := a.running(t)
	a.rt.mc.handshake.set(time.Minute)
	a.rt.mc.idle.set(time.Minute)
	id, secret := a.arm(t)
	stranger, br := openStream(t, a.addr, id)

	b.ensureTarget(t, id, a.addr, secret)
	waitState(t, b.rt, StateRunning)
	waitState(t, a.rt, StateDestroyed)
	require.Equal(t, vm.ticks(), b.vms.last().ticks())

	// The stranger, still there, gets nothing of the VM.
	require.NoError(t, stranger.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err := br.ReadByte()
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "the source sent the stranger nothing: %v", err)
}

// TestTargetRetriesARefusedUpgrade: a target whose source's arm is busy
// (every handshake slot held by strangers) tries again, with backoff, and
// migrates once a slot is free.
func TestTargetRetriesARefusedUpgrade(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	a.running(t)
	a.rt.mc.handshake.set(time.Minute)
	a.rt.mc.idle.set(time.Minute)
	b.rt.mc.retry.set(300 * time.Millisecond)
	id, secret := a.arm(t)
	var held []net.Conn
	for range maxHandshakes {
		c, _ := openStream(t, a.addr, id)
		held = append(held, c)
	}
	b.ensureTarget(t, id, a.addr, secret)
	require.Eventually(t, func() bool {
		return strings.Contains(b.log.String(), "the source refused the upgrade; trying again")
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, StateMigrating, b.instance(t).State)
	held[0].Close()
	waitState(t, b.rt, StateRunning)
	waitState(t, a.rt, StateDestroyed)
}

// flakyProxy forwards TCP connections to a server; while down, it closes
// each new connection at once (the ones forwarded go on).
type flakyProxy struct {
	addr string
	down atomic.Bool
	// spare is how many connections still pass while down (the
	// migration's own stream, opened before the outage is to show).
	spare   atomic.Int32
	refused atomic.Int32
}

func newFlakyProxy(t *testing.T, to string) *flakyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	p := &flakyProxy{addr: ln.Addr().String()}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() && p.spare.Add(-1) < 0 {
				p.refused.Add(1)
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

// lostHandOff migrates from a (which drops the Commit) to b through a
// proxy that goes down once the migration started: b lost the hand-off and
// cannot ask. It returns the proxy and b's VM, once b asked in vain asks
// times (the target once gave up after 3).
func lostHandOff(t *testing.T, a, b *migRig, asks int32) (*flakyProxy, *fakeVM) {
	t.Helper()
	vm := a.running(t)
	p := newFlakyProxy(t, a.addr)
	// Down from the start but for the migration's own stream: a migration
	// quicker than the test would otherwise ask again, and be answered,
	// before the outage began.
	p.spare.Store(1)
	p.down.Store(true)
	id, secret := a.arm(t)
	b.ensureTarget(t, id, p.addr, secret)
	waitState(t, a.rt, StateDestroyed)
	require.Eventually(t, func() bool { return p.refused.Load() >= asks }, 30*time.Second, time.Millisecond,
		"the target asks again and again")
	require.Equal(t, vm.ticks(), b.vms.last().ticks())
	return p, b.vms.last()
}

// TestHandOffSurvivesAnOutage: a target that lost the Commit, with its
// source unreachable for a while (6 asks, where the target once gave up
// after 3), asks until the source answers, and runs.
func TestHandOffSurvivesAnOutage(t *testing.T) {
	a := newMigRig(t, func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailDropCommit: true} })
	b := newMigRig(t)
	p, vm := lostHandOff(t, a, b, 6)
	require.Equal(t, StateMigrating, b.instance(t).State, "still asking")
	require.False(t, vm.closed())
	p.down.Store(false)
	waitState(t, b.rt, StateRunning)
	require.Contains(t, b.log.String(), "the hand-off was lost but the source completed")
}

// TestHandOffSurvivesANewInstance: the source keeps the outcome of a
// hand-off across a new ensure, which once erased it.
func TestHandOffSurvivesANewInstance(t *testing.T) {
	a := newMigRig(t, func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailDropCommit: true} })
	b := newMigRig(t)
	p, _ := lostHandOff(t, a, b, 4)
	a.ensure(t, "next")
	a.run(t)
	p.down.Store(false)
	waitState(t, b.rt, StateRunning)
}

// TestUnknownHandOffKeepsTheVM: a target that could not learn the outcome
// of the hand-off in the source's answer time fails, says so, and keeps
// its VM (paused, not closed), which goes only with the instance.
func TestUnknownHandOffKeepsTheVM(t *testing.T) {
	a := newMigRig(t, func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailDropCommit: true} })
	b := newMigRig(t)
	b.rt.mc.outcome.set(time.Second)
	_, vm := lostHandOff(t, a, b, 4)
	reason := b.failure(t)
	require.Contains(t, reason, "the outcome of the hand-off is unknown")
	require.Contains(t, reason, "paused, not closed, and may be the only copy")
	b.rt.mu.Lock()
	kept, closing := b.rt.machine == VM(vm), b.rt.closing
	b.rt.mu.Unlock()
	require.True(t, kept, "the failed instance holds the VM")
	require.Zero(t, closing, "nothing is being closed")
	require.False(t, vm.closed())
	vm.mu.Lock()
	phase := vm.phase
	vm.mu.Unlock()
	require.Equal(t, vmm.PhaseCreated, phase, "the VM was never resumed")

	// A new instance lets it go.
	b.ensure(t, "next")
	assert.Eventually(t, vm.closed, 10*time.Second, time.Millisecond)
}

// TestUpgradeAnswerIsBounded: a source that answers the upgrade with
// endless headers costs the target at most maxUpgradeAnswer bytes before
// the target hangs up.
func TestUpgradeAnswerIsBounded(t *testing.T) {
	b := newMigRig(t)
	b.rt.mc.handshake.set(time.Minute)
	b.rt.mc.idle.set(time.Minute)
	wrote := make(chan int64, 8)
	addr, _ := fakeSource(t, func(c net.Conn, _ *bufio.Reader) {
		line := []byte("X-Pad: " + strings.Repeat("x", 1000) + "\r\n")
		n, _ := c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n"))
		total := int64(n)
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for total < 256<<20 {
			n, err := c.Write(line)
			total += int64(n)
			if err != nil {
				break
			}
		}
		wrote <- total
	})
	b.ensureTarget(t, uuid.New(), addr, migration.NewSecret())
	reason := b.failure(t)
	require.Contains(t, reason, fmt.Sprintf("longer than %d bytes", maxUpgradeAnswer))
	// What the target did not read stayed in the socket buffers.
	require.Less(t, <-wrote, int64(32<<20))
}

// TestBusyOutcomeIsNoAnswer: a target that asks for a lost hand-off while
// strangers hold every slot of the source's answer is refused as if the
// source knew nothing; that refusal, before any proof, is no answer, and
// the target asks again until it gets the source's.
func TestBusyOutcomeIsNoAnswer(t *testing.T) {
	a := newMigRig(t, func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailDropCommit: true} })
	b := newMigRig(t)
	b.rt.mc.retry.set(100 * time.Millisecond)
	p, _ := lostHandOff(t, a, b, 1)
	a.rt.mc.handshake.set(time.Minute)
	a.rt.mc.idle.set(time.Minute)
	var id uuid.UUID
	a.rt.mu.Lock()
	for k := range a.rt.outcomes {
		id = k
	}
	a.rt.mu.Unlock()
	var held []net.Conn
	for range maxHandshakes {
		c, _ := openStream(t, a.addr, id)
		held = append(held, c)
	}
	p.down.Store(false)
	require.Eventually(t, func() bool {
		return strings.Contains(b.log.String(), "HTTP 404 no_such_migration")
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, StateMigrating, b.instance(t).State)
	held[0].Close()
	waitState(t, b.rt, StateRunning)
}
