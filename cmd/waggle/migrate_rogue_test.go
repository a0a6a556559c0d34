package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
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

// Hand-played peers against real `waggle server` processes: a target or a
// source played frame by frame. A peer that holds the migration's secret
// goes through the handshake as a server would (package migration: Hello,
// Welcome with the source's proof, Proof with the target's) and misbehaves
// after it; a stranger, who has the id but not the secret, gets nothing.

// upgradeToSource opens the migration stream of an armed source as a
// target would, and returns it with its reader. The stream needs no
// bearer token: it is proved by the secret.
func upgradeToSource(t *testing.T, a *serverProc, id uuid.UUID) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", a.addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	// No wait below may outlast the test's patience.
	require.NoError(t, c.SetDeadline(time.Now().Add(2*time.Minute)))
	fmt.Fprintf(c, "GET /v1/instance/migrate/%s/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", id, server.MigrateUpgradeProtocol)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return c, br
}

// targetHello is the Hello of a current target of migration id: a fresh
// nonce, and every device state version this build imports.
func targetHello(id uuid.UUID) migration.Hello {
	hello := migration.Hello{MigrationID: id, Nonce: migration.NewNonce(), Protocols: migration.Supported,
		SpecVersions: []string{"vmm-server/v1"}}
	for kind, vs := range devices.ImportableVersions() {
		hello.Devices = append(hello.Devices, migration.DeviceVersions{Kind: kind, Versions: vs})
	}
	return hello
}

// proveToSource plays a target that holds secret through the handshake:
// it sends a Hello, checks the source's proof in its Welcome and answers
// with its own. The source sends the VM from here.
func proveToSource(t *testing.T, c net.Conn, br *bufio.Reader, id uuid.UUID, secret string) {
	t.Helper()
	hello := targetHello(id)
	require.NoError(t, migration.WriteFrame(c, migration.TypeHello, hello.Encode()))
	f, err := migration.ReadFrame(br, nil)
	require.NoError(t, err)
	require.Equal(t, migration.TypeWelcome, f.Type)
	w, err := migration.DecodeWelcome(f.Payload)
	require.NoError(t, err)
	require.True(t, migration.CheckProof(secret, migration.RoleSource, id, hello.Nonce, w.Nonce, w.Proof),
		"the source proves that it holds the secret")
	proof := migration.Proof{Proof: migration.Prove(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce)}
	require.NoError(t, migration.WriteFrame(c, migration.TypeProof, proof.Encode()))
}

// readUntilEnd reads frames until the peer ends the stream and returns
// their types, and the last Abort, if any.
func readUntilEnd(br *bufio.Reader) ([]migration.Type, *migration.Abort) {
	var types []migration.Type
	var abort *migration.Abort
	for {
		f, err := migration.ReadFrame(br, nil)
		if err != nil {
			return types, abort
		}
		types = append(types, f.Type)
		if f.Type == migration.TypeAbort {
			if a, err := migration.DecodeAbort(f.Payload); err == nil {
				abort = &a
			}
		}
	}
}

// vmFrames are the frames that carry some of the VM.
var vmFrames = []migration.Type{migration.TypePreamble, migration.TypeRAM, migration.TypeZero, migration.TypeDevice,
	migration.TypeMachine, migration.TypeStateDone, migration.TypeCommit}

// requireNothingOfTheVM fails if a peer sent any frame that carries the VM.
func requireNothingOfTheVM(t *testing.T, types []migration.Type) {
	t.Helper()
	for _, typ := range types {
		require.NotContains(t, vmFrames, typ, "the source sent %s to a peer that did not prove itself", typ)
	}
}

// TestRogueTargetCannotHarmTheSource: bytes that are not the protocol,
// from a stranger before the handshake, get nothing of the VM, leave the
// source running as it was and armed; the same bytes from a target that
// proved it holds the secret end that migration with a clear error, and
// the source runs on. Either way the VM then migrates.
func TestRogueTargetCannotHarmTheSource(t *testing.T) {
	kvmtest.Require(t)
	a := startServer(t)
	props := createRunning(t, a, tickerJSON, "tick 1\n")
	garbage := []struct {
		name  string
		bytes []byte
		want  string // in the source's failure reason, after the handshake
	}{
		{"oversized length", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, "over the"},
		{"unknown type", []byte{42, 0, 0, 0, 0, 0, 0, 0}, "unknown type 42"},
		{"truncated header", []byte{1, 0, 0}, "truncated"},
	}
	send := func(t *testing.T, c net.Conn, b []byte) {
		_, err := c.Write(b)
		require.NoError(t, err)
		if len(b) < migration.HeaderSize {
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
		}
	}

	t.Run("before the handshake", func(t *testing.T) {
		before := state(t, a)
		id, secret := arm(t, a)
		for _, g := range garbage {
			c, br := upgradeToSource(t, a, id)
			send(t, c, g.bytes)
			types, abort := readUntilEnd(br) // until the source hangs up
			c.Close()
			requireNothingOfTheVM(t, types)
			if abort != nil {
				require.Empty(t, abort.Reason, "%s: a stranger learns only a code", g.name)
			}
			after := state(t, a)
			require.Equal(t, api.InstanceStateRunning, after.State, g.name)
			require.Equal(t, before.Gen, after.Gen, "%s: the source never left running", g.name)
			st := migrationStatus(a)
			require.NotNil(t, st)
			require.Nil(t, st.MigrationOut, "%s: no migration began", g.name)
		}
		// A stranger that upgrades and says nothing is cut off within the
		// handshake's timeout, and changes nothing either.
		c, br := upgradeToSource(t, a, id)
		start := time.Now()
		types, _ := readUntilEnd(br)
		c.Close()
		requireNothingOfTheVM(t, types)
		require.Less(t, time.Since(start), server.HandshakeTimeout+5*time.Second, "the source hung up on a silent stranger")
		require.Equal(t, before.Gen, state(t, a).Gen)

		// The arm was kept for the target that holds the secret.
		c, br = upgradeToSource(t, a, id)
		proveToSource(t, c, br, id, secret)
		f, err := migration.ReadFrame(br, nil)
		require.NoError(t, err)
		require.Equal(t, migration.TypePreamble, f.Type)
		c.Close()
		requireSourceUnharmed(t, a, "")
	})

	t.Run("after the handshake", func(t *testing.T) {
		for _, g := range garbage {
			id, secret := arm(t, a) // each proof uses its arm up
			c, br := upgradeToSource(t, a, id)
			proveToSource(t, c, br, id, secret)
			f, err := migration.ReadFrame(br, nil)
			require.NoError(t, err)
			require.Equal(t, migration.TypePreamble, f.Type)
			send(t, c, g.bytes) // instead of Ready
			readUntilEnd(br)
			c.Close()
			require.Eventually(t, func() bool { return outboundPhase(a) == api.MigrationPhaseFailed }, 10*time.Second, 10*time.Millisecond)
			requireSourceUnharmed(t, a, g.want)
		}
	})
	migrateAgain(t, a, props)
}

// TestRogueSourceCannotHarmTheTarget: a source that proves it holds the
// secret and then sends a bad stream ends the migration with a clear error
// on the target, which aborts and says why; a source that cannot prove it
// gets the target to build nothing, and neither its proof nor a reason.
// Only the cases where the target builds a VM (it answers Ready) need KVM.
func TestRogueSourceCannotHarmTheTarget(t *testing.T) {
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
			if c.afterReady != nil {
				kvmtest.Require(t)
			}
			b := startServer(t)
			id, secret := uuid.New(), migration.NewSecret()
			addr, told := fakeSource(t, func(conn *net.TCPConn, br *bufio.Reader) string {
				return playSource(conn, br, id, secret, c.envelope, c.afterReady)
			})
			ensureTarget(t, b, api.InstanceProperties{Id: uuid.New(), Name: "x"}, id, addr, secret, nil)
			select {
			case reason := <-told:
				require.Contains(t, reason, c.want, "the target's Abort says why")
			case <-time.After(30 * time.Second):
				t.Fatal("the target did not abort")
			}
			require.Eventually(t, func() bool { return inState(b, api.InstanceStateFailed) }, 10*time.Second, 10*time.Millisecond)
			require.Contains(t, deref(state(t, b).FailureReason), c.want)
			in := inbound(b)
			require.NotNil(t, in)
			require.Equal(t, api.MigrationPhaseFailed, in.Phase)
		})
	}

	t.Run("a source without the secret", func(t *testing.T) {
		b := startServer(t)
		id, secret := uuid.New(), migration.NewSecret()
		addr, told := fakeSource(t, func(conn *net.TCPConn, br *bufio.Reader) string {
			hello, problem := readHello(br)
			if problem != "" {
				return problem
			}
			// A proof with a secret of its own, then the VM regardless.
			w := migration.Welcome{Protocol: migration.ProtocolV1, Nonce: migration.NewNonce()}
			w.Proof = migration.Prove(migration.NewSecret(), migration.RoleSource, id, hello.Nonce, w.Nonce)
			migration.WriteFrame(conn, migration.TypeWelcome, w.Encode())
			migration.WriteFrame(conn, migration.TypePreamble, migration.Preamble{Envelope: []byte(goodEnv)}.Encode())
			migration.WriteFrame(conn, migration.TypeRAM, migration.RAM{GPA: 0x10000, Data: make([]byte, migration.PageSize)}.Encode())
			types, abort := readUntilEnd(br)
			switch {
			case slices.Contains(types, migration.TypeProof):
				return "the target sent its proof to a source that did not prove itself"
			case slices.Contains(types, migration.TypeReady):
				return "the target built a VM from an unproved source's spec"
			case abort == nil:
				return "no abort" // the target hung up (its Abort may be lost to a reset)
			case abort.Reason != "":
				return "the target told an unproved source a reason: " + abort.Reason
			}
			return "abort " + abort.Code.String()
		})
		ensureTarget(t, b, api.InstanceProperties{Id: uuid.New(), Name: "x"}, id, addr, secret, nil)
		select {
		case got := <-told:
			require.Contains(t, []string{"abort " + migration.AbortSecretRefused.String(), "no abort"}, got)
		case <-time.After(30 * time.Second):
			t.Fatal("the target did not abort")
		}
		require.Eventually(t, func() bool { return inState(b, api.InstanceStateFailed) }, 10*time.Second, 10*time.Millisecond)
		require.Contains(t, deref(state(t, b).FailureReason), "the source did not prove that it holds the migration secret")
		sp, err := b.client.InstanceSpecGetWithResponse(context.Background())
		require.NoError(t, err)
		if sp.JSON200 != nil {
			require.Nil(t, sp.JSON200.Spec, "the target took no spec from an unproved source")
		}
	})
}

// fakeSource listens on loopback for one target and hands its connection,
// once it has read the upgrade request and answered it, to play, whose
// answer (what the target said, or what went wrong) comes on the channel.
func fakeSource(t *testing.T, play func(conn *net.TCPConn, br *bufio.Reader) string) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	told := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			told <- "accept: " + err.Error()
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(time.Minute))
		br := bufio.NewReader(conn)
		if _, err := http.ReadRequest(br); err != nil {
			told <- "read the upgrade request: " + err.Error()
			return
		}
		fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", server.MigrateUpgradeProtocol)
		told <- play(conn.(*net.TCPConn), br)
	}()
	return ln.Addr().String(), told
}

// readHello reads the target's Hello; problem says what went wrong.
func readHello(br *bufio.Reader) (hello migration.Hello, problem string) {
	f, err := migration.ReadFrame(br, nil)
	if err != nil {
		return hello, "read the Hello: " + err.Error()
	}
	if f.Type != migration.TypeHello {
		return hello, "the target sent " + f.Type.String() + ", not Hello"
	}
	if hello, err = migration.DecodeHello(f.Payload); err != nil {
		return hello, "decode the Hello: " + err.Error()
	}
	return hello, ""
}

// playSource plays a source that holds secret: it checks the target's
// Hello, proves itself, checks the target's proof, sends envelope and,
// after the target's Ready, lets afterReady write. It returns the reason
// of the target's Abort, or what went wrong.
func playSource(conn *net.TCPConn, br *bufio.Reader, id uuid.UUID, secret, envelope string, afterReady func(io.Writer)) string {
	hello, problem := readHello(br)
	if problem != "" {
		return problem
	}
	if uuid.UUID(hello.MigrationID) != id {
		return fmt.Sprintf("the target asked for migration %s, not %s", uuid.UUID(hello.MigrationID), id)
	}
	w := migration.Welcome{Protocol: migration.ProtocolV1, Nonce: migration.NewNonce()}
	w.Proof = migration.Prove(secret, migration.RoleSource, id, hello.Nonce, w.Nonce)
	if err := migration.WriteFrame(conn, migration.TypeWelcome, w.Encode()); err != nil {
		return "send the Welcome: " + err.Error()
	}
	f, err := migration.ReadFrame(br, nil)
	if err != nil || f.Type != migration.TypeProof {
		return fmt.Sprintf("no Proof from the target: %v %v", f.Type, err)
	}
	p, err := migration.DecodeProof(f.Payload)
	if err != nil || !migration.CheckProof(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce, p.Proof) {
		return "the target's proof does not hold"
	}
	if err := migration.WriteFrame(conn, migration.TypePreamble, migration.Preamble{Envelope: []byte(envelope)}.Encode()); err != nil {
		return "send the Preamble: " + err.Error()
	}
	f, err = migration.ReadFrame(br, nil)
	if err == nil && f.Type == migration.TypeReady && afterReady != nil {
		afterReady(conn)
		f, err = migration.ReadFrame(br, nil)
	}
	if err != nil {
		return "no Abort from the target: " + err.Error()
	}
	if f.Type != migration.TypeAbort {
		return "the target sent " + f.Type.String() + ", not Abort"
	}
	a, err := migration.DecodeAbort(f.Payload)
	if err != nil {
		return "decode the Abort: " + err.Error()
	}
	return a.Reason
}

// TestRoundsReportPagesLeft plays the target by hand and reads the source's
// rounds: each RoundEnd says how many pages were already dirty again, and
// the next round sends those (zero pages included) and those the guest
// dirtied while the target acknowledged; the final one, sent while paused,
// likewise. Then the "target" hangs up before the hand-off, and the source
// runs on.
func TestRoundsReportPagesLeft(t *testing.T) {
	kvmtest.Require(t)
	a := startServer(t)
	// 32 MiB dirtied every 20 ms: the rounds do not converge, so the source
	// goes round after round until its limit, then pauses.
	createRunning(t, a, strings.Replace(tickerJSON, "dirty_kib=4096", "dirty_kib=32768", 1), "tick 2\n")
	id, secret := arm(t, a)
	c, br := upgradeToSource(t, a, id)
	proveToSource(t, c, br, id, secret)

	var ends []migration.RoundEnd
	for done := false; !done; {
		f, err := migration.ReadFrame(br, nil)
		require.NoError(t, err)
		switch f.Type {
		case migration.TypePreamble:
			require.NoError(t, migration.WriteFrame(c, migration.TypeReady, nil))
			// Pacing, not synchronisation: read slowly at first and answer
			// each round late, so that every round outlasts the guest's
			// 20 ms dirtying period (and stays far below the source's
			// stream idle timeout).
			time.Sleep(50 * time.Millisecond)
		case migration.TypeRoundEnd:
			end, err := migration.DecodeRoundEnd(f.Payload)
			require.NoError(t, err)
			ends = append(ends, end)
			if end.Final {
				done = true
				continue
			}
			time.Sleep(30 * time.Millisecond) // pacing, as above
			require.NoError(t, migration.WriteFrame(c, migration.TypeRoundAck, migration.RoundAck{Round: end.Round}.Encode()))
		case migration.TypeAbort:
			ab, _ := migration.DecodeAbort(f.Payload)
			t.Fatalf("the source aborted: %s %s", ab.Code, ab.Reason)
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
