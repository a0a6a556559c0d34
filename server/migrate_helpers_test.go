package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
)

// Helpers of the migration tests: rigs with short stream timeouts, a
// hand-played target and a hand-played source.

// Shortened stream timeouts of the migration tests.
const (
	testIdle      = 300 * time.Millisecond
	testHandshake = 600 * time.Millisecond
	testBuild     = 2 * time.Second
	testRetry     = 20 * time.Millisecond
)

// lockedBuffer is a log sink that tests read while the server writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// migRig is a rig for migration tests: short stream timeouts, every log
// line (debug included) kept.
type migRig struct {
	*rig
	log *lockedBuffer
}

func newMigRig(t testing.TB, opt ...func(*RuntimeOptions)) *migRig {
	t.Helper()
	log := &lockedBuffer{}
	opt = append([]func(*RuntimeOptions){func(o *RuntimeOptions) {
		o.Log = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}}, opt...)
	g := newRig(t, fakeGuest{}, opt...)
	g.rt.mc.idle.set(testIdle)
	g.rt.mc.handshake.set(testHandshake)
	g.rt.mc.build.set(testBuild)
	g.rt.mc.retry.set(testRetry)
	return &migRig{rig: g, log: log}
}

// running ensures an instance, runs it, lets its guest tick once and
// returns its VM.
func (g *migRig) running(t *testing.T) *fakeVM {
	t.Helper()
	_, vm := g.ensure(t, "src")
	g.run(t)
	vm.step()
	waitOutput(t, g.rt, "tick 1\n")
	return vm
}

// arm arms the source for a fresh migration and returns its id and the
// secret the server made.
func (g *migRig) arm(t *testing.T) (uuid.UUID, string) {
	t.Helper()
	id := uuid.New()
	armed, err := g.rt.MigrateExpect(context.Background(), MigrationArm{ID: id})
	require.NoError(t, err)
	require.NoError(t, migration.CheckSecret(armed.Secret))
	return id, armed.Secret
}

// instance returns the instance now.
func (g *migRig) instance(t *testing.T) Instance {
	t.Helper()
	inst, err := g.rt.Instance(context.Background())
	require.NoError(t, err)
	return inst
}

// outbound returns the source's outbound migration, nil if none.
func (g *migRig) outbound(t *testing.T) *MigrationProgress {
	t.Helper()
	st, err := g.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	return st.Out
}

// outboundNow is outbound for Eventually's conditions, which must fail
// nothing: nil also when the status cannot be read.
func (g *migRig) outboundNow() *MigrationProgress {
	st, err := g.rt.MigrationStatus(context.Background())
	if err != nil {
		return nil
	}
	return st.Out
}

// armFree reports whether the source is armed for id, with no handshake
// in progress.
func (g *migRig) armFree(id uuid.UUID) bool {
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	a := g.rt.mig.arm
	return a != nil && a.id == id && a.handshakes == 0
}

// outcome returns a copy of the outcome the source keeps of migration id,
// and whether it keeps one.
func (g *migRig) outcome(id uuid.UUID) (outcome, bool) {
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	o := g.rt.outcomes.liveLocked(id, time.Now())
	if o == nil {
		return outcome{}, false
	}
	return *o, true
}

// expireOutcome makes the outcome kept of migration id expired, as time
// would.
func (g *migRig) expireOutcome(t *testing.T, id uuid.UUID) {
	t.Helper()
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	o := g.rt.outcomes[id]
	require.NotNil(t, o)
	o.expires = time.Now().Add(-time.Millisecond)
}

// expireArm makes the source's arm expired, as time would.
func (g *migRig) expireArm(t *testing.T) {
	t.Helper()
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	require.NotNil(t, g.rt.mig.arm)
	g.rt.mig.arm.expires = time.Now().Add(-time.Millisecond)
}

// ensureTarget creates g's instance as the target of migration id from
// src with secret.
func (g *migRig) ensureTarget(t *testing.T, id uuid.UUID, src, secret string) {
	t.Helper()
	_, created, err := g.rt.Ensure(context.Background(), EnsureRequest{
		Properties: Properties{ID: uuid.New(), Name: "dst"},
		Migrate:    &MigrateInit{MigrationID: id, SrcAddr: src, Secret: secret},
	})
	require.NoError(t, err)
	require.True(t, created)
}

// failure waits until g's instance failed and returns its failure reason,
// after checking that the inbound migration's says the same.
func (g *migRig) failure(t *testing.T) string {
	t.Helper()
	inst := waitState(t, g.rt, StateFailed)
	st, err := g.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.NotNil(t, st.In)
	require.Equal(t, PhaseFailed, st.In.Phase)
	require.Contains(t, inst.FailureReason, st.In.FailureReason)
	return inst.FailureReason
}

// upgradeTo opens the migration stream of migration id at addr as a target
// would, and returns the connection, its reader and the status answered.
func upgradeTo(t *testing.T, addr string, id uuid.UUID) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /v1/instance/migrate/%s/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
		id, MigrateUpgradeProtocol)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	return c, br, resp.StatusCode
}

// openStream opens the migration stream, which must be upgraded.
func openStream(t *testing.T, addr string, id uuid.UUID) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br, status := upgradeTo(t, addr, id)
	require.Equal(t, http.StatusSwitchingProtocols, status)
	return c, br
}

// sendFrame writes one frame.
func sendFrame(t *testing.T, w net.Conn, typ migration.Type, payload []byte) {
	t.Helper()
	require.NoError(t, migration.WriteFrame(w, typ, payload))
}

// readFrame reads one frame within 10 s.
func readFrame(t *testing.T, c net.Conn, br *bufio.Reader) migration.Frame {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	f, err := migration.ReadFrame(br, nil)
	require.NoError(t, err)
	return f
}

// drain reads frames until the stream ends (within 10 s) and returns them.
func drain(t *testing.T, c net.Conn, br *bufio.Reader) []migration.Frame {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	var out []migration.Frame
	for {
		f, err := migration.ReadFrame(br, nil)
		if err != nil {
			require.NotErrorIs(t, err, errSilentPeer)
			var ne net.Error
			if errors.As(err, &ne) {
				require.False(t, ne.Timeout(), "the stream was not ended within 10 s")
			}
			return out
		}
		out = append(out, f)
	}
}

// vmFrames are the frames that carry the VM.
var vmFrames = []migration.Type{migration.TypePreamble, migration.TypeRAM, migration.TypeZero, migration.TypeDevice,
	migration.TypeMachine, migration.TypeStateDone, migration.TypeCommit}

// requireNothingOfTheVM fails if frames carry any of the VM.
func requireNothingOfTheVM(t *testing.T, frames []migration.Frame) {
	t.Helper()
	for _, f := range frames {
		require.NotContains(t, vmFrames, f.Type, "the source sent %s", f.Type)
	}
}

// targetHello is a target's Hello for id, with a fresh nonce.
func targetHello(id uuid.UUID) migration.Hello {
	return migration.Hello{MigrationID: id, Nonce: migration.NewNonce(), Protocols: migration.Supported,
		SpecVersions: []string{"vmm-server/v1"}}
}

// helloWelcome sends hello and reads the source's Welcome.
func helloWelcome(t *testing.T, c net.Conn, br *bufio.Reader, hello migration.Hello) migration.Welcome {
	t.Helper()
	sendFrame(t, c, migration.TypeHello, hello.Encode())
	f := readFrame(t, c, br)
	require.Equal(t, migration.TypeWelcome, f.Type)
	w, err := migration.DecodeWelcome(f.Payload)
	require.NoError(t, err)
	return w
}

// proveAsTarget plays a target that holds secret through the handshake,
// checking the source's proof, and returns once its own proof is sent.
func proveAsTarget(t *testing.T, c net.Conn, br *bufio.Reader, id uuid.UUID, secret string) {
	t.Helper()
	hello := targetHello(id)
	w := helloWelcome(t, c, br, hello)
	require.True(t, migration.CheckProof(secret, migration.RoleSource, id, hello.Nonce, w.Nonce, w.Proof),
		"the source proves that it holds the secret")
	proof := migration.Proof{Proof: migration.Prove(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce)}
	sendFrame(t, c, migration.TypeProof, proof.Encode())
}

// fakeSource listens on loopback for targets, reads each one's upgrade
// request and hands the connection to serve (a target may dial again: each
// stream is served so); it returns the address and a channel that yields
// every frame the first stream to end carried after serve returned
// (until the target hung up).
func fakeSource(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (string, <-chan []migration.Frame) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	got := make(chan []migration.Frame, 1)
	one := func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		serve(c, br)
		var frames []migration.Frame
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			f, err := migration.ReadFrame(br, nil)
			if err != nil {
				break
			}
			f.Payload = bytes.Clone(f.Payload)
			frames = append(frames, f)
		}
		select {
		case got <- frames:
		default:
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go one(c)
		}
	}()
	return ln.Addr().String(), got
}

// answerUpgrade answers the target's upgrade.
func answerUpgrade(c net.Conn) {
	fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", MigrateUpgradeProtocol)
}

// readHello reads the target's Hello.
func readHello(c net.Conn, br *bufio.Reader) (migration.Hello, error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := migration.ReadFrame(br, nil)
	if err != nil {
		return migration.Hello{}, err
	}
	if f.Type != migration.TypeHello {
		return migration.Hello{}, fmt.Errorf("got %s, not Hello", f.Type)
	}
	return migration.DecodeHello(f.Payload)
}

// portOf is the port ln listens on.
func portOf(ln net.Listener) string { return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) }
