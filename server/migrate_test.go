package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
)

// TestMigrateWithTheSecret: two servers migrate over TCP once the target
// holds the secret the source was armed with; the arm is then used up, and
// the secret is in no log line, no instance and no failure reason.
func TestMigrateWithTheSecret(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	vm := a.running(t)
	id, secret := a.arm(t)
	b.ensureTarget(t, id, a.addr, secret)
	waitState(t, b.rt, StateRunning)
	waitState(t, a.rt, StateDestroyed)
	require.Equal(t, vm.ticks(), b.vms.last().ticks(), "the guest's state came along")
	require.Equal(t, PhaseCompleted, a.outbound(t).Phase)

	// A second use of the same id and secret fails: the source says it
	// handed the VM off already.
	c := newMigRig(t)
	c.ensureTarget(t, id, a.addr, secret)
	reason := c.failure(t)
	require.Contains(t, reason, "handed this migration off already")
	require.Zero(t, c.vms.count(), "nothing was built")

	// Once the source forgot the hand-off, nothing is armed.
	a.expireOutcome(t, id)
	c.ensureTarget(t, id, a.addr, secret)
	reason = c.failure(t)
	require.Contains(t, reason, "HTTP 404 no_such_migration")
	require.Contains(t, reason, reasonNoSuchMigration)
	require.Zero(t, c.vms.count(), "nothing was built")

	for _, g := range []*migRig{a, b, c} {
		require.NotContains(t, g.log.String(), secret, "the secret is never logged")
		inst := g.instance(t)
		require.NotContains(t, inst.FailureReason, secret)
	}
}

// TestFakeTargetWithoutTheSecretGetsNothing: a target that cannot prove
// that it holds the secret gets no byte of the VM, the source never leaves
// running (not one transition), tells it only a code, and stays armed:
// the real target then migrates.
func TestFakeTargetWithoutTheSecretGetsNothing(t *testing.T) {
	a := newMigRig(t)
	a.running(t)
	id, secret := a.arm(t)
	before := a.instance(t)

	cases := map[string]func(c net.Conn, br *bufio.Reader){
		"proof with another secret": func(c net.Conn, br *bufio.Reader) {
			hello := targetHello(id)
			w := helloWelcome(t, c, br, hello)
			p := migration.Proof{Proof: migration.Prove(migration.NewSecret(), migration.RoleTarget, id, hello.Nonce, w.Nonce)}
			sendFrame(t, c, migration.TypeProof, p.Encode())
		},
		"the source's own proof sent back": func(c net.Conn, br *bufio.Reader) {
			w := helloWelcome(t, c, br, targetHello(id))
			sendFrame(t, c, migration.TypeProof, migration.Proof{Proof: w.Proof}.Encode())
		},
		"a proof over other nonces": func(c net.Conn, br *bufio.Reader) {
			hello := targetHello(id)
			helloWelcome(t, c, br, hello)
			p := migration.Proof{Proof: migration.Prove(secret, migration.RoleTarget, id, hello.Nonce, migration.NewNonce())}
			sendFrame(t, c, migration.TypeProof, p.Encode())
		},
		"a proof for another migration": func(c net.Conn, br *bufio.Reader) {
			hello := targetHello(id)
			w := helloWelcome(t, c, br, hello)
			p := migration.Proof{Proof: migration.Prove(secret, migration.RoleTarget, uuid.New(), hello.Nonce, w.Nonce)}
			sendFrame(t, c, migration.TypeProof, p.Encode())
		},
		"Ready instead of a proof": func(c net.Conn, br *bufio.Reader) {
			helloWelcome(t, c, br, targetHello(id))
			sendFrame(t, c, migration.TypeReady, nil)
		},
		"a Hello for another migration": func(c net.Conn, br *bufio.Reader) {
			sendFrame(t, c, migration.TypeHello, targetHello(uuid.New()).Encode())
		},
		"no protocol in common": func(c net.Conn, br *bufio.Reader) {
			h := targetHello(id)
			h.Protocols = []uint32{99}
			sendFrame(t, c, migration.TypeHello, h.Encode())
		},
		"garbage": func(c net.Conn, br *bufio.Reader) { _, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) },
		"hang up after Hello": func(c net.Conn, br *bufio.Reader) {
			helloWelcome(t, c, br, targetHello(id))
			_ = c.(*net.TCPConn).CloseWrite()
		},
	}
	for name, play := range cases {
		t.Run(name, func(t *testing.T) {
			c, br := openStream(t, a.addr, id)
			play(c, br)
			frames := drain(t, c, br)
			requireNothingOfTheVM(t, frames)
			for _, f := range frames {
				if f.Type == migration.TypeAbort {
					ab, err := migration.DecodeAbort(f.Payload)
					require.NoError(t, err)
					require.Empty(t, ab.Reason, "an untrusted target learns only a code")
				}
			}
			require.Eventually(t, func() bool { return a.armFree(id) }, 10*time.Second, time.Millisecond,
				"the arm is kept, free for the next target")
			inst := a.instance(t)
			require.Equal(t, StateRunning, inst.State)
			require.Equal(t, before.Gen, inst.Gen, "the source never changed state")
			require.Nil(t, a.outbound(t), "no migration began")
		})
	}
	require.Contains(t, a.log.String(), "did not prove that it holds the migration secret", "the source says why")

	b := newMigRig(t)
	b.ensureTarget(t, id, a.addr, secret)
	waitState(t, b.rt, StateRunning)
	waitState(t, a.rt, StateDestroyed)
}

// TestFakeSourceCannotFeedTheTarget: a source that cannot prove that it
// holds the secret gets the target to build nothing, and never gets the
// target's proof.
func TestFakeSourceCannotFeedTheTarget(t *testing.T) {
	secret := migration.NewSecret()
	id := uuid.New()
	spec := []byte(`{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":32,"chipset":"i440fx"},"components":{}}}`)
	feed := func(c net.Conn) {
		_ = migration.WriteFrame(c, migration.TypePreamble, migration.Preamble{Envelope: spec}.Encode())
		_ = migration.WriteFrame(c, migration.TypeRAM, migration.RAM{GPA: 0x10000, Data: make([]byte, migration.PageSize)}.Encode())
	}
	cases := map[string]func(hello migration.Hello) *migration.Welcome{
		"proof with another secret": func(h migration.Hello) *migration.Welcome {
			w := migration.Welcome{Protocol: 1, Nonce: migration.NewNonce()}
			w.Proof = migration.Prove(migration.NewSecret(), migration.RoleSource, id, h.Nonce, w.Nonce)
			return &w
		},
		"no proof": func(migration.Hello) *migration.Welcome {
			return &migration.Welcome{Protocol: 1, Nonce: migration.NewNonce()}
		},
		"a proof over another target nonce (a replay)": func(migration.Hello) *migration.Welcome {
			w := migration.Welcome{Protocol: 1, Nonce: migration.NewNonce()}
			w.Proof = migration.Prove(secret, migration.RoleSource, id, migration.NewNonce(), w.Nonce)
			return &w
		},
		"the target's role": func(h migration.Hello) *migration.Welcome {
			w := migration.Welcome{Protocol: 1, Nonce: migration.NewNonce()}
			w.Proof = migration.Prove(secret, migration.RoleTarget, id, h.Nonce, w.Nonce)
			return &w
		},
		"no Welcome at all": func(migration.Hello) *migration.Welcome { return nil },
	}
	for name, welcome := range cases {
		t.Run(name, func(t *testing.T) {
			b := newMigRig(t)
			addr, got := fakeSource(t, func(c net.Conn, br *bufio.Reader) {
				answerUpgrade(c)
				hello, err := readHello(c, br)
				if err != nil {
					return
				}
				if w := welcome(hello); w != nil {
					_ = migration.WriteFrame(c, migration.TypeWelcome, w.Encode())
				}
				feed(c)
			})
			b.ensureTarget(t, id, addr, secret)
			reason := b.failure(t)
			require.Zero(t, b.vms.count(), "the target built nothing")
			if name == "no Welcome at all" {
				require.Contains(t, reason, "did not speak the migration protocol")
			} else {
				require.Contains(t, reason, "the source did not prove that it holds the migration secret")
			}
			frames := <-got
			for _, f := range frames {
				require.NotEqual(t, migration.TypeProof, f.Type, "the target's proof went to a source that did not prove itself")
				require.NotEqual(t, migration.TypeReady, f.Type)
				if f.Type == migration.TypeAbort {
					ab, err := migration.DecodeAbort(f.Payload)
					require.NoError(t, err)
					require.Empty(t, ab.Reason, "an untrusted source learns only a code")
				}
			}
		})
	}
}

// TestWrongSecret: a target given another secret than the source's fails
// with a clear reason, the source runs on, armed, and the target with the
// right secret then migrates.
func TestWrongSecret(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	a.running(t)
	id := uuid.New()
	secret := migration.NewSecret()
	armed, err := a.rt.MigrateExpect(context.Background(), MigrationArm{ID: id, Secret: secret})
	require.NoError(t, err)
	require.Empty(t, armed.Secret, "a secret the caller gave is not answered back")
	before := a.instance(t)

	wrong := migration.NewSecret()
	b.ensureTarget(t, id, a.addr, wrong)
	reason := b.failure(t)
	require.Contains(t, reason, "did not prove that it holds the migration secret")
	require.NotContains(t, reason, secret)
	require.NotContains(t, reason, wrong)
	require.Zero(t, b.vms.count())
	require.Eventually(t, func() bool { return strings.Contains(a.log.String(), "the target refused the migration secret") },
		10*time.Second, time.Millisecond, "the source says why too")
	require.Eventually(t, func() bool { return a.armFree(id) }, 10*time.Second, time.Millisecond)
	inst := a.instance(t)
	require.Equal(t, before.Gen, inst.Gen, "the source never left running")

	// The failed target leaves its server free; with the right secret it
	// migrates.
	b.ensureTarget(t, id, a.addr, secret)
	waitState(t, b.rt, StateRunning)
	waitState(t, a.rt, StateDestroyed)
	for _, g := range []*migRig{a, b} {
		require.NotContains(t, g.log.String(), secret)
		require.NotContains(t, g.log.String(), wrong)
	}
}

// TestExpiredArm: an arm that expired serves nobody, before or during the
// handshake, and the source runs on.
func TestExpiredArm(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	a.running(t)
	id := uuid.New()
	armed, err := a.rt.MigrateExpect(context.Background(), MigrationArm{ID: id, TTL: 90 * time.Second})
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(90*time.Second), armed.ExpiresAt, 5*time.Second)
	before := a.instance(t)

	a.expireArm(t)
	b.ensureTarget(t, id, a.addr, armed.Secret)
	reason := b.failure(t)
	require.Contains(t, reason, "the source refused the upgrade: HTTP 404 no_such_migration")
	require.Contains(t, reason, "expired")

	// Expiring while the target proves itself.
	id, secret := a.arm(t)
	c, br := openStream(t, a.addr, id)
	hello := targetHello(id)
	w := helloWelcome(t, c, br, hello)
	a.expireArm(t)
	sendFrame(t, c, migration.TypeProof, migration.Proof{Proof: migration.Prove(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce)}.Encode())
	frames := drain(t, c, br)
	requireNothingOfTheVM(t, frames)
	require.NotEmpty(t, frames)
	ab, err := migration.DecodeAbort(frames[len(frames)-1].Payload)
	require.NoError(t, err)
	require.Equal(t, migration.AbortNoSuchMigration, ab.Code)

	inst := a.instance(t)
	require.Equal(t, StateRunning, inst.State)
	require.Equal(t, before.Gen, inst.Gen)
}

// TestArmIsUsedOnce: after a target proved itself, the arm is used up,
// even when the migration then fails; the source, back to running, can be
// armed again.
func TestArmIsUsedOnce(t *testing.T) {
	a := newMigRig(t)
	a.running(t)
	id, secret := a.arm(t)
	c, br := openStream(t, a.addr, id)
	proveAsTarget(t, c, br, id, secret)
	require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
	c.Close()
	waitState(t, a.rt, StateRunning)
	require.Eventually(t, func() bool {
		out := a.outboundNow()
		return out != nil && out.Phase == PhaseFailed
	}, 10*time.Second, time.Millisecond)

	// The arm was used up: the id now only tells a target that proves
	// itself that nothing was handed off.
	c, br = openStream(t, a.addr, id)
	proveAsTarget(t, c, br, id, secret)
	f := readFrame(t, c, br)
	require.Equal(t, migration.TypeAbort, f.Type, "the arm was used up")
	ab, err := migration.DecodeAbort(f.Payload)
	require.NoError(t, err)
	require.Contains(t, ab.Reason, "before the hand-off")
	require.False(t, a.armFree(id))

	id2, secret2 := a.arm(t)
	c, br = openStream(t, a.addr, id2)
	proveAsTarget(t, c, br, id2, secret2)
	require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
}

// TestOtherMigrationID: a target of another id than the one armed is
// refused at the upgrade; the source runs on, still armed.
func TestOtherMigrationID(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	a.running(t)
	id, secret := a.arm(t)
	b.ensureTarget(t, uuid.New(), a.addr, secret)
	require.Contains(t, b.failure(t), "HTTP 404 no_such_migration")
	require.True(t, a.armFree(id))
	require.Equal(t, StateRunning, a.instance(t).State)
}

// TestSeveralHandshakesAtOnce: up to maxHandshakes targets may prove
// themselves at once for one arm; one more is refused exactly as an id
// never armed is; once one is done, the next may try, and the one that
// proves itself wins.
func TestSeveralHandshakesAtOnce(t *testing.T) {
	a := newMigRig(t)
	a.running(t)
	a.rt.mc.handshake.set(time.Minute)
	a.rt.mc.idle.set(time.Minute)
	id, secret := a.arm(t)
	var held []net.Conn
	for range maxHandshakes {
		c, _ := openStream(t, a.addr, id)
		held = append(held, c)
	}
	status, body := refusalOf(t, a.addr, id)
	require.Equal(t, http.StatusNotFound, status)
	_, unarmed := refusalOf(t, a.addr, uuid.New())
	require.Equal(t, unarmed, body, "a busy arm answers as no arm")

	held[0].Close()
	require.Eventually(t, func() bool {
		a.rt.mu.Lock()
		defer a.rt.mu.Unlock()
		return a.rt.mig.arm != nil && a.rt.mig.arm.handshakes == maxHandshakes-1
	}, 10*time.Second, time.Millisecond)
	c, br := openStream(t, a.addr, id)
	proveAsTarget(t, c, br, id, secret)
	require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
	a.rt.mu.Lock()
	used := a.rt.mig.arm == nil
	a.rt.mu.Unlock()
	require.True(t, used, "the first to prove itself used the arm up")
}

// TestSilentTargetDuringHandshake: an armed source that gets 8 bytes of a
// frame header and then silence drops the stream within its timeouts,
// never leaves running, and stays armed.
func TestSilentTargetDuringHandshake(t *testing.T) {
	a := newMigRig(t)
	a.running(t)
	id, secret := a.arm(t)
	before := a.instance(t)
	c, br := openStream(t, a.addr, id)
	var hdr [migration.HeaderSize]byte
	hdr[0] = byte(migration.TypeHello)
	binary.BigEndian.PutUint32(hdr[4:], 100)
	_, err := c.Write(hdr[:])
	require.NoError(t, err)
	start := time.Now()
	requireNothingOfTheVM(t, drain(t, c, br))
	require.Less(t, time.Since(start), testHandshake+2*time.Second, "the source gave up within its handshake timeout")
	require.Contains(t, a.log.String(), "stalled")
	require.Eventually(t, func() bool { return a.armFree(id) }, 10*time.Second, time.Millisecond)
	require.Equal(t, before.Gen, a.instance(t).Gen)

	c, br = openStream(t, a.addr, id)
	proveAsTarget(t, c, br, id, secret)
	require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type, "the arm still serves")
}

// TestTricklingPeersAreCutOff: a peer that sends a byte now and then, never
// silent for the idle timeout, still gets no longer than the handshake
// timeout to prove itself, on either side.
func TestTricklingPeersAreCutOff(t *testing.T) {
	trickle := func(c net.Conn, data []byte, stop <-chan struct{}) {
		tick := time.NewTicker(testIdle / 3)
		defer tick.Stop()
		for _, b := range data {
			select {
			case <-tick.C:
			case <-stop:
				return
			}
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
		}
	}
	t.Run("target", func(t *testing.T) {
		a := newMigRig(t)
		a.running(t)
		id, _ := a.arm(t)
		before := a.instance(t)
		c, br := openStream(t, a.addr, id)
		stop := make(chan struct{})
		defer close(stop)
		go trickle(c, bytes.Repeat([]byte{byte(migration.TypeHello), 0, 0, 0, 0, 0, 0, 200}, 30), stop)
		start := time.Now()
		requireNothingOfTheVM(t, drain(t, c, br))
		require.Less(t, time.Since(start), testHandshake+3*time.Second)
		require.Eventually(t, func() bool { return a.armFree(id) }, 10*time.Second, time.Millisecond)
		require.Equal(t, before.Gen, a.instance(t).Gen)
	})
	t.Run("source", func(t *testing.T) {
		b := newMigRig(t)
		stop := make(chan struct{})
		defer close(stop)
		addr, _ := fakeSource(t, func(c net.Conn, _ *bufio.Reader) {
			trickle(c, []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: waggle-migrate\r\nX-Slow: "+strings.Repeat("x", 200)), stop)
		})
		start := time.Now()
		b.ensureTarget(t, uuid.New(), addr, migration.NewSecret())
		require.Contains(t, b.failure(t), "took too long")
		require.Less(t, time.Since(start), testHandshake+3*time.Second)
	})
}

// TestSilentTargetAfterTheProof: a proved target that sends 8 bytes of a
// frame header and then nothing ends the migration within the idle
// timeout; the source runs on, and can reboot and be armed again.
func TestSilentTargetAfterTheProof(t *testing.T) {
	a := newMigRig(t)
	a.running(t)
	for range 2 {
		id, secret := a.arm(t)
		c, br := openStream(t, a.addr, id)
		proveAsTarget(t, c, br, id, secret)
		require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
		require.Equal(t, StateMigrating, a.instance(t).State)
		sendFrame(t, c, migration.TypeReady, nil)
		for readFrame(t, c, br).Type != migration.TypeRoundEnd {
		}
		// The first 8 bytes of a RoundAck, then silence.
		_, err := c.Write([]byte{byte(migration.TypeRoundAck), 0, 0, 0, 0, 0, 0, 4})
		require.NoError(t, err)
		start := time.Now()
		waitState(t, a.rt, StateRunning)
		require.Less(t, time.Since(start), testIdle+2*time.Second)
		out := a.outbound(t)
		require.Equal(t, PhaseFailed, out.Phase)
		require.Contains(t, out.FailureReason, "sent nothing")
	}
	require.NoError(t, request(a.rt, RequestReboot))
	waitState(t, a.rt, StateRunning)
}

// TestSilentTargetWhileBuilding: the wait for the target's VM is bounded
// too.
func TestSilentTargetWhileBuilding(t *testing.T) {
	a := newMigRig(t)
	a.running(t)
	id, secret := a.arm(t)
	c, br := openStream(t, a.addr, id)
	proveAsTarget(t, c, br, id, secret)
	require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
	start := time.Now()
	waitState(t, a.rt, StateRunning)
	require.Less(t, time.Since(start), testBuild+2*time.Second)
	require.Contains(t, a.outbound(t).FailureReason, "sent nothing")
}

// TestStopEndsOutboundMigration: stop ends an outbound migration at once
// (and then the VM), whatever it waits for: the target's Ready, or a write
// the target does not read. The stream timeouts are long here, so only the stop can end
// it.
func TestStopEndsOutboundMigration(t *testing.T) {
	cases := map[string]func(t *testing.T, c net.Conn, br *bufio.Reader, vm *fakeVM){
		"waiting for Ready": func(t *testing.T, c net.Conn, br *bufio.Reader, vm *fakeVM) {
			require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
		},
		"writing RAM the target does not read": func(t *testing.T, c net.Conn, br *bufio.Reader, vm *fakeVM) {
			require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
			sendFrame(t, c, migration.TypeReady, nil)
		},
	}
	for name, play := range cases {
		t.Run(name, func(t *testing.T) {
			a := newMigRig(t)
			vm := a.running(t)
			// 24 MiB of guest RAM to send: more than the socket buffers
			// hold, so the source blocks writing.
			page := make([]byte, 24<<20)
			for i := range page {
				page[i] = byte(i%251 + 1)
			}
			require.NoError(t, vm.WriteGuest(page, 1<<20))
			a.rt.mc.idle.set(time.Minute)
			a.rt.mc.build.set(time.Minute)
			id, secret := a.arm(t)
			c, br := openStream(t, a.addr, id)
			proveAsTarget(t, c, br, id, secret)
			play(t, c, br, vm)
			require.Eventually(t, func() bool {
				out := a.outboundNow()
				return out != nil && (name == "waiting for Ready" || out.BytesSent > 1<<20)
			}, 10*time.Second, time.Millisecond)

			start := time.Now()
			require.NoError(t, request(a.rt, RequestStop))
			waitState(t, a.rt, StateDestroyed)
			require.Less(t, time.Since(start), 5*time.Second)
			require.Contains(t, a.outbound(t).FailureReason, errStopRequested.Error())
		})
	}
}

// TestTargetGivesUpOnASilentSource: a source that goes silent at any point
// of the handshake fails the target within its timeouts.
func TestTargetGivesUpOnASilentSource(t *testing.T) {
	cases := map[string]func(c net.Conn, br *bufio.Reader){
		"no HTTP answer":       func(net.Conn, *bufio.Reader) {},
		"upgraded, then quiet": func(c net.Conn, _ *bufio.Reader) { answerUpgrade(c) },
		"8 bytes of a Welcome header": func(c net.Conn, br *bufio.Reader) {
			answerUpgrade(c)
			_, _ = readHello(c, br)
			_, _ = c.Write([]byte{byte(migration.TypeWelcome), 0, 0, 0, 0, 0, 0, 68})
		},
	}
	for name, serve := range cases {
		t.Run(name, func(t *testing.T) {
			b := newMigRig(t)
			hold := make(chan struct{})
			t.Cleanup(func() { close(hold) })
			addr, _ := fakeSource(t, func(c net.Conn, br *bufio.Reader) {
				serve(c, br)
				<-hold
			})
			start := time.Now()
			b.ensureTarget(t, uuid.New(), addr, migration.NewSecret())
			reason := b.failure(t)
			require.Less(t, time.Since(start), testHandshake+3*time.Second)
			require.Contains(t, reason, "stalled")
			require.Zero(t, b.vms.count())
		})
	}
}

// TestPeerGarbageNeverInFailureReason: whatever a peer answers, the
// target's failure reason is in our own words.
func TestPeerGarbageNeverInFailureReason(t *testing.T) {
	const marker = "GARBAGE-7f3a"
	body := func(status, b string) func(c net.Conn, br *bufio.Reader) {
		return func(c net.Conn, _ *bufio.Reader) {
			_, _ = c.Write([]byte("HTTP/1.1 " + status + "\r\nContent-Type: application/json\r\nContent-Length: " +
				strconv.Itoa(len(b)) + "\r\n\r\n" + b))
		}
	}
	cases := []struct {
		name  string
		serve func(c net.Conn, br *bufio.Reader)
		want  string
	}{
		{"200 with text", body("200 OK", marker), "the source did not answer as a waggle server (HTTP 200)"},
		{"404 with a known code", body("404 Not Found", `{"error_code":"no_such_migration","message":"`+marker+`"}`),
			"the source refused the upgrade: HTTP 404 no_such_migration"},
		{"an unknown code", body("409 Conflict", `{"error_code":"`+marker+`","message":"x"}`),
			"the source did not answer as a waggle server (HTTP 409)"},
		{"a reason phrase", body("502 "+marker, ""), "the source did not answer as a waggle server (HTTP 502)"},
		{"not HTTP", func(c net.Conn, _ *bufio.Reader) { _, _ = c.Write([]byte("SSH-2.0-" + marker + "\r\n")) },
			"no HTTP response"},
		{"a malformed status", func(c net.Conn, _ *bufio.Reader) { _, _ = c.Write([]byte("HTTP/1.1 " + marker + "\r\n\r\n")) },
			"no HTTP response"},
		{"an Abort before the proof", func(c net.Conn, br *bufio.Reader) {
			answerUpgrade(c)
			_, _ = readHello(c, br)
			_ = migration.WriteFrame(c, migration.TypeAbort, migration.Abort{Code: migration.AbortFailed, Reason: marker}.Encode())
		}, "the source aborted the migration"},
		{"bytes after the upgrade", func(c net.Conn, br *bufio.Reader) {
			answerUpgrade(c)
			_, _ = readHello(c, br)
			_, _ = c.Write([]byte(strings.Repeat(marker, 10)))
		}, "did not speak the migration protocol"},
		{"a bad proof, then an Abort", func(c net.Conn, br *bufio.Reader) {
			answerUpgrade(c)
			_, _ = readHello(c, br)
			_ = migration.WriteFrame(c, migration.TypeWelcome, migration.Welcome{Protocol: 1}.Encode())
			_ = migration.WriteFrame(c, migration.TypeAbort, migration.Abort{Code: migration.AbortFailed, Reason: marker}.Encode())
		}, "did not prove"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newMigRig(t)
			addr, _ := fakeSource(t, tc.serve)
			b.ensureTarget(t, uuid.New(), addr, migration.NewSecret())
			reason := b.failure(t)
			require.Contains(t, reason, tc.want)
			require.NotContains(t, reason, marker)
			require.NotContains(t, strings.ToUpper(reason), "GARBAGE")
			require.Zero(t, b.vms.count())
		})
	}
}

// TestTrustedAbortReasonIsSanitized: once the source proved itself, its
// Abort's reason is shown, but only as printable ASCII of bounded length.
func TestTrustedAbortReasonIsSanitized(t *testing.T) {
	b := newMigRig(t)
	secret := migration.NewSecret()
	id := uuid.New()
	addr, _ := fakeSource(t, func(c net.Conn, br *bufio.Reader) {
		answerUpgrade(c)
		hello, err := readHello(c, br)
		if err != nil {
			return
		}
		w := migration.Welcome{Protocol: 1, Nonce: migration.NewNonce()}
		w.Proof = migration.Prove(secret, migration.RoleSource, id, hello.Nonce, w.Nonce)
		_ = migration.WriteFrame(c, migration.TypeWelcome, w.Encode())
		reason := "disk \x1b[31mfull\n" + strings.Repeat("x", 3000)
		_ = migration.WriteFrame(c, migration.TypeAbort, migration.Abort{Code: migration.AbortFailed, Reason: reason}.Encode())
	})
	b.ensureTarget(t, id, addr, secret)
	reason := b.failure(t)
	require.Contains(t, reason, "the source aborted: disk ?[31mfull?xxx")
	require.Less(t, len(reason), 600)
	for _, c := range []byte(reason) {
		require.True(t, c >= 0x20 && c <= 0x7e, "byte %#x", c)
	}
}

// TestSrcAddrOutsideThePeersIsRefused: a source address outside the
// networks the server may dial fails the ensure at once, naming the field;
// nothing is built, nothing is dialed.
func TestSrcAddrOutsideThePeersIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	b := newMigRig(t, func(o *RuntimeOptions) { o.MigrationPeers = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")} })
	for _, addr := range []string{ln.Addr().String(), "localhost:" + portOf(ln), "[::ffff:127.0.0.1]:" + portOf(ln), "0.0.0.0:1"} {
		_, _, err := b.rt.Ensure(context.Background(), EnsureRequest{
			Properties: Properties{ID: uuid.New(), Name: "dst"},
			Migrate:    &MigrateInit{MigrationID: uuid.New(), SrcAddr: addr, Secret: migration.NewSecret()},
		})
		var fe *FieldError
		require.ErrorAs(t, err, &fe, addr)
		require.Equal(t, "migrate.src_addr", fe.Field)
		_, err = b.rt.Instance(context.Background())
		require.ErrorIs(t, err, ErrNoInstance, "nothing was made")
	}
	require.Zero(t, b.vms.count())

	// Over HTTP: 400 invalid_request naming the field.
	r, err := b.c.InstanceEnsureWithBodyWithResponse(context.Background(), "application/json", strings.NewReader(
		`{"properties":{"id":"`+uuid.NewString()+`","name":"dst"},"migrate":{"migration_id":"`+uuid.NewString()+
			`","src_addr":"`+ln.Addr().String()+`","secret":"`+migration.NewSecret()+`"}}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, r.StatusCode(), string(r.Body))
	require.Contains(t, string(r.Body), `"invalid_request"`)
	require.Contains(t, string(r.Body), "migrate.src_addr")
	select {
	case <-accepted:
		t.Fatal("the server dialed a refused address")
	default:
	}
}

// TestTargetEnsureChecksTheSecret: the target's ensure needs a secret of
// the right form, never repeats it, and its idempotence compares it.
func TestTargetEnsureChecksTheSecret(t *testing.T) {
	b := newMigRig(t)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	addr, _ := fakeSource(t, func(net.Conn, *bufio.Reader) { <-hold })
	b.rt.mc.handshake.set(time.Minute)
	b.rt.mc.idle.set(time.Minute)
	req := func(secret string) EnsureRequest {
		return EnsureRequest{Properties: Properties{ID: uuid.MustParse("0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10"), Name: "dst"},
			Migrate: &MigrateInit{MigrationID: uuid.MustParse("7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f"), SrcAddr: addr, Secret: secret}}
	}
	for _, bad := range []string{"", "short", strings.Repeat("A", 42) + "=", strings.Repeat("é", 30)} {
		_, _, err := b.rt.Ensure(context.Background(), req(bad))
		var fe *FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "migrate.secret", fe.Field)
		if bad != "" {
			require.NotContains(t, err.Error(), bad)
		}
	}
	secret := migration.NewSecret()
	inst, created, err := b.rt.Ensure(context.Background(), req(secret))
	require.NoError(t, err)
	require.True(t, created)
	_, created, err = b.rt.Ensure(context.Background(), req(secret))
	require.NoError(t, err)
	require.False(t, created, "the same request, secret included")
	_, _, err = b.rt.Ensure(context.Background(), req(migration.NewSecret()))
	require.ErrorIs(t, err, ErrInstanceExists, "another secret is another request")
	require.NotContains(t, inst.FailureReason, secret)
}

// TestMigrateExpectRules: what arming takes and answers.
func TestMigrateExpectRules(t *testing.T) {
	a := newMigRig(t)
	ctx := context.Background()
	_, err := a.rt.MigrateExpect(ctx, MigrationArm{ID: uuid.New()})
	require.ErrorIs(t, err, ErrNoInstance)
	a.ensure(t, "src")
	_, err = a.rt.MigrateExpect(ctx, MigrationArm{ID: uuid.New()})
	var te *TransitionError
	require.ErrorAs(t, err, &te, "only a running instance can be armed")
	a.run(t)

	id := uuid.New()
	start := time.Now()
	armed, err := a.rt.MigrateExpect(ctx, MigrationArm{ID: id})
	require.NoError(t, err)
	require.Equal(t, id, armed.ID)
	require.Len(t, armed.Secret, 43)
	require.NoError(t, migration.CheckSecret(armed.Secret))
	require.WithinDuration(t, start.Add(DefaultArmTTL), armed.ExpiresAt, 5*time.Second)
	again, err := a.rt.MigrateExpect(ctx, MigrationArm{ID: id})
	require.NoError(t, err)
	require.NotEqual(t, armed.Secret, again.Secret, "each arm has a fresh secret")

	mine := migration.NewSecret()
	armed, err = a.rt.MigrateExpect(ctx, MigrationArm{ID: id, Secret: mine, TTL: MaxArmTTL})
	require.NoError(t, err)
	require.Empty(t, armed.Secret)
	require.WithinDuration(t, time.Now().Add(MaxArmTTL), armed.ExpiresAt, 5*time.Second)

	for _, bad := range []MigrationArm{
		{ID: id, Secret: "tooshort"}, {ID: id, Secret: strings.Repeat("A", 42) + "+"},
		{ID: id, TTL: MaxArmTTL + time.Second}, {ID: id, TTL: -time.Second}, {ID: id, TTL: time.Millisecond}, {},
	} {
		_, err := a.rt.MigrateExpect(ctx, bad)
		var fe *FieldError
		require.ErrorAs(t, err, &fe, "%+v", bad)
		if bad.Secret != "" {
			require.NotContains(t, err.Error(), bad.Secret)
		}
	}
	require.True(t, a.armFree(id), "a refused arm leaves the one before")

	// Arming again replaces the arm: the old id is no longer served.
	other := uuid.New()
	_, err = a.rt.MigrateExpect(ctx, MigrationArm{ID: other})
	require.NoError(t, err)
	_, err = a.rt.MigrateSource(ctx, id)
	require.ErrorIs(t, err, ErrNoSuchMigration)
	serve, err := a.rt.MigrateSource(ctx, other)
	require.NoError(t, err)
	require.Error(t, serve(ctx, nil), "no connection: the handshake ends")
	assert.True(t, a.armFree(other), "and the arm is free again")
	require.Equal(t, StateRunning, a.instance(t).State)
}

// TestSecretNeverAnswered: over HTTP, a secret the caller gave is never
// answered; one the server made is answered once, by the arm; no answer
// about either instance holds it.
func TestSecretNeverAnswered(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	a.running(t)
	ctx := context.Background()
	given := migration.NewSecret()
	id := uuid.New()
	r, err := a.c.InstanceMigrateExpectWithBodyWithResponse(ctx, "application/json",
		strings.NewReader(`{"migration_id":"`+id.String()+`","secret":"`+given+`","ttl_seconds":60}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.StatusCode(), string(r.Body))
	require.NotContains(t, string(r.Body), given)
	require.NotContains(t, string(r.Body), `"secret"`)

	r, err = a.c.InstanceMigrateExpectWithBodyWithResponse(ctx, "application/json",
		strings.NewReader(`{"migration_id":"`+id.String()+`"}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.StatusCode(), string(r.Body))
	require.NotNil(t, r.JSON200.Secret)
	made := *r.JSON200.Secret
	require.NoError(t, migration.CheckSecret(made))

	e, err := b.c.InstanceEnsureWithBodyWithResponse(ctx, "application/json", strings.NewReader(
		`{"properties":{"id":"`+uuid.NewString()+`","name":"dst"},"migrate":{"migration_id":"`+id.String()+
			`","src_addr":"`+a.addr+`","secret":"`+made+`"}}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, e.StatusCode(), string(e.Body))
	require.NotContains(t, string(e.Body), made)
	waitState(t, b.rt, StateRunning)
	waitState(t, a.rt, StateDestroyed)

	for _, g := range []*migRig{a, b} {
		i, err := g.c.InstanceGetWithResponse(ctx)
		require.NoError(t, err)
		st, err := g.c.InstanceMigrationStatusWithResponse(ctx)
		require.NoError(t, err)
		for _, body := range [][]byte{i.Body, st.Body} {
			require.NotContains(t, string(body), made)
			require.NotContains(t, string(body), given)
		}
		require.NotContains(t, g.log.String(), made)
		require.NotContains(t, g.log.String(), given)
	}
}
