package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/server/migration"
)

// MigrateExpect arms the running instance as the source of one migration,
// binding a one-time secret (the caller's, or a fresh one that only the
// answer carries) with an expiry to its id. Arming again replaces the arm.
func (r *Runtime) MigrateExpect(_ context.Context, arm MigrationArm) (ArmedMigration, error) {
	ttl, err := checkArm(arm)
	if err != nil {
		return ArmedMigration{}, err
	}
	out := ArmedMigration{ID: arm.ID}
	secret := arm.Secret
	if secret == "" {
		secret = migration.NewSecret()
		out.Secret = secret
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		return ArmedMigration{}, ErrNoInstance
	}
	if r.inst.State != StateRunning || r.machine == nil {
		return ArmedMigration{}, &TransitionError{State: r.inst.State, Requested: "migrate"}
	}
	out.ExpiresAt = time.Now().Add(ttl)
	if o := r.outcomes.liveLocked(arm.ID, time.Now()); o != nil && !o.handedOff {
		delete(r.outcomes, arm.ID) // armed again after it failed
	}
	r.mig.arm = &migrationArm{id: arm.ID, secret: secret, expires: out.ExpiresAt}
	r.log.Info("armed as a migration source", "migration", arm.ID, "expires", out.ExpiresAt)
	return out, nil
}

// MigrateSource returns the function that serves the stream of migration
// id: that of the arm, or, for a target that lost the end of the stream,
// the outcome kept. It is the only operation a caller without credentials
// may call, so before the proof it tells nothing: whether there is no
// instance, no such arm, an arm of another id, an expired one, or too many
// handshakes in progress, the refusal is the same ErrNoSuchMigration. Nothing
// changes yet: serve first has the target prove that it holds the secret
// (and proves it holds it too); only then is the instance's state checked,
// the arm used up and the migration started. A target that fails the
// proof, stalls or hangs up leaves the instance running and the arm as it
// was.
func (r *Runtime) MigrateSource(_ context.Context, id uuid.UUID) (func(context.Context, net.Conn) error, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if o := r.outcomes.liveLocked(id, now); o != nil {
		if o.handshakes >= maxHandshakes {
			return nil, ErrNoSuchMigration
		}
		o.handshakes++
		return func(_ context.Context, conn net.Conn) error { return r.serveOutcome(o, conn) }, nil
	}
	a := r.mig.arm
	if r.req == nil || !a.live(now) || a.id != id || a.handshakes >= maxHandshakes {
		return nil, ErrNoSuchMigration
	}
	a.handshakes++
	return func(_ context.Context, conn net.Conn) error { return r.serveSource(a, conn) }, nil
}

// serveSource runs the source's side of the stream of the migration armed
// by a: the handshake, then the migration.
func (r *Runtime) serveSource(a *migrationArm, conn net.Conn) error {
	if conn == nil {
		r.endHandshake(&a.handshakes)
		return errors.New("the connection could not be upgraded to the migration stream")
	}
	sc := newStreamConn(conn, r.mc.idle.get())
	sc.setLimits(r.mc.idle.get(), time.Now().Add(r.mc.handshake.get()))
	p := newPeer("target", sc, nil)
	hello, err := sourceHandshake(p, a.id, a.secret)
	if err != nil {
		p.abort(err)
		r.endHandshake(&a.handshakes)
		r.log.Warn("migration handshake failed; the instance runs on, still armed", "migration", a.id,
			"remote", conn.RemoteAddr().String(), "err", err)
		return err
	}
	ctx, src, err := r.beginOutbound(a, p)
	if err != nil {
		p.abort(err)
		r.log.Warn("migration refused after the handshake", "migration", a.id, "err", err)
		return err
	}
	sc.setLimits(r.mc.idle.get(), time.Time{})
	return src.run(ctx, hello)
}

// endHandshake counts one handshake of an arm or an outcome as over.
func (r *Runtime) endHandshake(n *int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*n--
}

// beginOutbound uses the arm up, if it is still the instance's and alive
// (of the targets that prove themselves at once, the first wins), checks
// the instance's state, and starts the outbound migration: the instance is
// migrating until it ends, and a stop (or the guest's end) aborts it
// through the context.
func (r *Runtime) beginOutbound(a *migrationArm, p *peer) (context.Context, *source, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a.handshakes--
	if r.mig.arm != a || !a.live(time.Now()) {
		return nil, nil, refusal(migration.AbortNoSuchMigration, "the arm of migration %s expired, was used or was replaced during the handshake", a.id)
	}
	if r.inst.State != StateRunning || r.machine == nil {
		return nil, nil, fmt.Errorf("the source cannot migrate an instance that is %s", r.inst.State)
	}
	r.mig.arm = nil // one use
	r.mig.out = &MigrationProgress{MigrationID: a.id, Phase: PhaseNegotiate}
	r.setStateLocked(StateMigrating, "")
	ctx, cancel := context.WithCancelCause(context.Background())
	r.mig.abortOut = cancel
	stop := context.AfterFunc(ctx, func() { p.conn.stop(context.Cause(ctx)) })
	src := &source{r: r, id: a.id, secret: a.secret, m: r.machine, spec: *r.spec, p: p, start: time.Now(),
		done: func() { stop(); cancel(nil) }}
	return ctx, src, nil
}

// errNotHandedOff is what a source tells a target that asks, after the
// proofs, about a migration that failed before the hand-off.
var errNotHandedOff = errors.New("the migration failed at the source before the hand-off; the VM runs there")

// serveOutcome answers a target that lost the end of the stream of
// migration o and asks again: once it has proved that it holds the secret
// (and we have), it gets the Commit it missed, or, if the migration failed
// before the hand-off, an Abort that says so.
func (r *Runtime) serveOutcome(o *outcome, conn net.Conn) error {
	defer r.endHandshake(&o.handshakes)
	if conn == nil {
		return errors.New("the connection could not be upgraded to the migration stream")
	}
	sc := newStreamConn(conn, r.mc.idle.get())
	sc.setLimits(r.mc.idle.get(), time.Now().Add(r.mc.handshake.get()))
	p := newPeer("target", sc, nil)
	if _, err := sourceHandshake(p, o.id, o.secret); err != nil {
		p.abort(err)
		r.log.Warn("migration outcome asked without proof", "migration", o.id, "err", err)
		return err
	}
	if !o.handedOff {
		r.log.Info("telling the target again that the migration failed before the hand-off", "migration", o.id)
		p.abort(errNotHandedOff)
		return nil
	}
	r.log.Info("telling the target again that the migration was handed off", "migration", o.id)
	return p.sendNow(migration.TypeCommit, migration.Commit{}.Encode())
}
