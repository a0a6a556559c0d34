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
	r.mig.arm = &migrationArm{id: arm.ID, secret: secret, expires: out.ExpiresAt}
	r.log.Info("armed as a migration source", "migration", arm.ID, "expires", out.ExpiresAt)
	return out, nil
}

// MigrateSource checks that the source is armed for migration id and that
// no other target is proving itself for it, and returns the function that
// serves the stream. Nothing changes yet: serve first has the target
// prove that it holds the arm's secret (and proves it holds it too), and
// only then uses the arm up and starts the migration. A target that fails
// the proof, stalls or hangs up leaves the instance running and the arm as
// it was.
func (r *Runtime) MigrateSource(_ context.Context, id uuid.UUID) (func(context.Context, net.Conn) error, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		return nil, ErrNoInstance
	}
	if h := r.mig.handedOff; h.live(time.Now()) && h.id == id {
		if h.handshaking {
			return nil, &TransitionError{State: r.inst.State, Requested: "migrate",
				Note: "another target is proving itself for this migration; try again in a few seconds"}
		}
		h.handshaking = true
		return func(_ context.Context, conn net.Conn) error { return r.serveOutcome(h, conn) }, nil
	}
	a := r.mig.arm
	if !a.live(time.Now()) || a.id != id {
		return nil, ErrNoSuchMigration
	}
	if r.inst.State != StateRunning || r.machine == nil {
		return nil, &TransitionError{State: r.inst.State, Requested: "migrate"}
	}
	if a.handshaking {
		return nil, &TransitionError{State: r.inst.State, Requested: "migrate",
			Note: "another target is proving itself for this migration; try again in a few seconds"}
	}
	a.handshaking = true
	return func(_ context.Context, conn net.Conn) error { return r.serveSource(a, conn) }, nil
}

// serveSource runs the source's side of the stream of the migration armed
// by a: the handshake, then the migration.
func (r *Runtime) serveSource(a *migrationArm, conn net.Conn) error {
	if conn == nil {
		r.endHandshake(a)
		return errors.New("the connection could not be upgraded to the migration stream")
	}
	sc := newStreamConn(conn, r.mc.idle.get())
	sc.setLimits(r.mc.idle.get(), time.Now().Add(r.mc.handshake.get()))
	p := newPeer("target", sc, nil)
	hello, err := sourceHandshake(p, a.id, a.secret)
	if err != nil {
		p.abort(err)
		r.endHandshake(a)
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

// endHandshake frees the arm for the next target's handshake.
func (r *Runtime) endHandshake(a *migrationArm) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a.handshaking = false
}

// beginOutbound uses the arm up, if it is still the instance's and alive,
// and starts the outbound migration: the instance is migrating until it
// ends, and a stop (or the guest's end) aborts it through the context.
func (r *Runtime) beginOutbound(a *migrationArm, p *peer) (context.Context, *source, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a.handshaking = false
	if r.mig.arm != a || !a.live(time.Now()) {
		return nil, nil, refusal(migration.AbortNoSuchMigration, "the arm of migration %s expired or was replaced during the handshake", a.id)
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

// serveOutcome answers a target that lost the hand-off of migration h and
// asks again: once it has proved that it holds the secret (and we have),
// it gets the Commit it missed.
func (r *Runtime) serveOutcome(h *migrationArm, conn net.Conn) error {
	defer r.endHandshake(h)
	if conn == nil {
		return errors.New("the connection could not be upgraded to the migration stream")
	}
	sc := newStreamConn(conn, r.mc.idle.get())
	sc.setLimits(r.mc.idle.get(), time.Now().Add(r.mc.handshake.get()))
	p := newPeer("target", sc, nil)
	if _, err := sourceHandshake(p, h.id, h.secret); err != nil {
		p.abort(err)
		r.log.Warn("migration outcome asked without proof", "migration", h.id, "err", err)
		return err
	}
	r.log.Info("telling the target again that the migration was handed off", "migration", h.id)
	return p.sendNow(migration.TypeCommit, migration.Commit{}.Encode())
}
