package server

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
)

// TestLostHandOffIsAskedAgain: a target that loses the source's Commit asks
// the source again, on a new stream where both prove themselves once more,
// and runs the VM only if the source says it handed the VM off.
func TestLostHandOffIsAskedAgain(t *testing.T) {
	a := newMigRig(t, func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailDropCommit: true} })
	b := newMigRig(t)
	a.running(t)
	id, secret := a.arm(t)
	b.ensureTarget(t, id, a.addr, secret)
	waitState(t, b.rt, StateRunning)
	waitState(t, a.rt, StateDestroyed)
	require.Contains(t, b.log.String(), "the hand-off was lost but the source completed")
	// Wait until the source is done with the target's ask (its stream may
	// still be closing when the target runs).
	require.Eventually(t, func() bool {
		o, ok := a.outcome(id)
		return ok && o.handedOff && o.handshakes == 0
	}, 10*time.Second, time.Millisecond)

	// A stranger asking gets no Commit.
	c, br := openStream(t, a.addr, id)
	hello := targetHello(id)
	w := helloWelcome(t, c, br, hello)
	sendFrame(t, c, migration.TypeProof, migration.Proof{Proof: migration.Prove(migration.NewSecret(), migration.RoleTarget, id, hello.Nonce, w.Nonce)}.Encode())
	frames := drain(t, c, br)
	require.NotEmpty(t, frames)
	for _, f := range frames {
		require.Equal(t, migration.TypeAbort, f.Type)
	}
	// The target that holds the secret does.
	c, br = openStream(t, a.addr, id)
	proveAsTarget(t, c, br, id, secret)
	require.Equal(t, migration.TypeCommit, readFrame(t, c, br).Type)

	// Once the answer's time is over, the migration is unknown.
	a.expireOutcome(t, id)
	_, _, status := upgradeTo(t, a.addr, id)
	require.Equal(t, 404, status)
}

// TestNoHandOffNoRun: a source whose migration failed before the hand-off
// answers a target that asks, once both proved themselves, that nothing
// was handed off, at once; a stranger asking learns nothing.
func TestNoHandOffNoRun(t *testing.T) {
	a, b := newMigRig(t), newMigRig(t)
	a.running(t)
	id, secret := a.arm(t)
	c, br := openStream(t, a.addr, id)
	proveAsTarget(t, c, br, id, secret)
	require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
	c.Close()
	waitState(t, a.rt, StateRunning)
	require.Eventually(t, func() bool {
		o, ok := a.outcome(id)
		return ok && !o.handedOff
	}, 10*time.Second, time.Millisecond)

	// A stranger gets an Abort that says only its code.
	c, br = openStream(t, a.addr, id)
	hello := targetHello(id)
	w := helloWelcome(t, c, br, hello)
	sendFrame(t, c, migration.TypeProof, migration.Proof{Proof: migration.Prove(migration.NewSecret(), migration.RoleTarget, id, hello.Nonce, w.Nonce)}.Encode())
	frames := drain(t, c, br)
	require.Len(t, frames, 1)
	ab, err := migration.DecodeAbort(frames[0].Payload)
	require.NoError(t, err)
	require.Equal(t, migration.AbortSecretRefused, ab.Code)
	require.Empty(t, ab.Reason)

	tg := &target{r: b.rt, id: id, src: netip.MustParseAddrPort(strings.Replace(a.addr, "localhost", "127.0.0.1", 1)), secret: secret}
	start := time.Now()
	done, err := tg.handedOff(time.Now())
	require.NoError(t, err)
	require.False(t, done)
	require.Less(t, time.Since(start), time.Second, "the source's proved answer: no retries")
}
