package server

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/server/migration"
)

// Live migration, as the runtime runs it (the wire protocol is package
// migration):
//
//   - migrate.go: the bookkeeping, the arm (the capability) and the limits;
//   - migrate_stream.go: one side's end of the stream, with its timeouts;
//   - migrate_peers.go: which addresses a target may dial;
//   - migrate_expect.go: arming a source, and serving a target;
//   - migrate_handshake.go: the proofs of the secret, on both sides;
//   - migrate_source.go: the outbound migration after the handshake;
//   - migrate_target.go: the target's ensure and the inbound migration.

// migrations is the instance's migration bookkeeping; guarded by Runtime.mu.
// What became of the migrations handed off is not the instance's: it is
// kept beside, in Runtime.outcomes, so that a new instance does not erase
// it.
type migrations struct {
	// arm is the outbound migration the source is armed for; nil: none.
	arm *migrationArm
	in  *MigrationProgress
	out *MigrationProgress
	// abortOut aborts the outbound migration in progress, if any.
	abortOut func(error)
}

// maxHandshakes is how many targets may prove themselves at once for one
// arm (or one outcome): a stranger who knows the id and holds streams open
// in silence does not keep the real target out unless it holds them all,
// and then every further one is refused like an id never armed.
const maxHandshakes = 4

// migrationArm is an armed source's capability: the one-time secret bound
// to the migration id until expires. A successful proof uses it up (the
// source's migrations.arm is cleared); a failed one leaves it for the real
// target. Guarded by Runtime.mu.
type migrationArm struct {
	id      uuid.UUID
	secret  string
	expires time.Time
	// handshakes counts the targets proving themselves now (at most
	// maxHandshakes); the first to prove itself wins the arm.
	handshakes int
}

// live reports whether the arm exists and can still be used at now.
func (a *migrationArm) live(now time.Time) bool { return a != nil && now.Before(a.expires) }

// outcome is what became of an outbound migration once a target proved
// itself for it: handed off, or failed before the hand-off (the VM ran on
// here). It is kept, with the secret, until expires (OutcomeTTL) for a
// target that lost the end of the stream and asks again, proving itself:
// it learns the outcome only then. Guarded by Runtime.mu.
type outcome struct {
	id        uuid.UUID
	secret    string
	handedOff bool
	expires   time.Time
	// handshakes counts the askers proving themselves now.
	handshakes int
}

// outcomes are the outcomes kept, by migration id. They outlive the
// instance that migrated: a new ensure on the source does not erase them.
type outcomes map[uuid.UUID]*outcome

// liveLocked returns the outcome of migration id, nil if none is kept, and
// forgets the expired ones.
func (o outcomes) liveLocked(id uuid.UUID, now time.Time) *outcome {
	for k, v := range o {
		if !now.Before(v.expires) {
			delete(o, k)
		}
	}
	return o[id]
}

// recordOutcomeLocked keeps what became of migration id for ttl.
func (r *Runtime) recordOutcomeLocked(id uuid.UUID, secret string, handedOff bool, ttl time.Duration) {
	if r.outcomes == nil {
		r.outcomes = outcomes{}
	}
	now := time.Now()
	r.outcomes.liveLocked(id, now)
	r.outcomes[id] = &outcome{id: id, secret: secret, handedOff: handedOff, expires: now.Add(ttl)}
}

func (m *migrations) statusLocked() MigrationStatus {
	st := MigrationStatus{}
	if m.in != nil {
		in := *m.in
		st.In = &in
	}
	if m.out != nil {
		out := *m.out
		st.Out = &out
	}
	return st
}

// Bounds of an arm's lifetime.
const (
	// DefaultArmTTL is how long an arm holds when the request names no TTL.
	DefaultArmTTL = 5 * time.Minute
	// MinArmTTL and MaxArmTTL bound any TTL asked for.
	MinArmTTL = time.Second
	MaxArmTTL = time.Hour
)

// Timeouts of the migration stream. A peer that stalls the stream for
// longer ends the migration; the source's VM runs on.
const (
	// StreamIdleTimeout bounds any wait for the peer: a peer that sends
	// nothing (or takes nothing we send) for this long ends the migration.
	StreamIdleTimeout = 5 * time.Second
	// HandshakeTimeout bounds the whole handshake, from the upgrade to the
	// proofs: a target that has not proved itself by then is cut off, and
	// the arm is free for the next one.
	HandshakeTimeout = 10 * time.Second
	// BuildTimeout bounds the source's wait for the target to build its VM
	// from the spec (Ready), which may take longer than a frame.
	BuildTimeout = 60 * time.Second
	// DialTimeout bounds the target's connection to its source, and
	// ResolveTimeout the lookup of a source named by host name.
	DialTimeout    = 5 * time.Second
	ResolveTimeout = 3 * time.Second
	// OutcomeTTL is how long a source that handed a migration off (or
	// failed it after the proofs) answers a target that lost the end of the
	// stream; a target that lost the hand-off asks it again, with backoff,
	// until OutcomeTTL has passed since it told the source Imported.
	OutcomeTTL = time.Minute
	// RetryBackoff is the first wait of the target's retries (doubled at
	// each, up to MaxRetryBackoff): of an upgrade that the source refused,
	// UpgradeTries in all, and of the asks after a lost hand-off.
	RetryBackoff    = 250 * time.Millisecond
	MaxRetryBackoff = 5 * time.Second
	UpgradeTries    = 5
)

// migrationConfig is how this server migrates; set once at creation. Its
// timeouts are read at each use, so a test may shorten them at any time.
type migrationConfig struct {
	// peers are the networks a migration target may dial.
	peers []netip.Prefix
	// idle, handshake and build are StreamIdleTimeout, HandshakeTimeout
	// and BuildTimeout; outcome is OutcomeTTL and retry RetryBackoff.
	idle, handshake, build, outcome, retry durationVar
}

// newMigrationConfig returns the configuration with the default timeouts;
// nil peers means DefaultMigrationPeers.
func newMigrationConfig(peers []netip.Prefix) *migrationConfig {
	if peers == nil {
		peers = DefaultMigrationPeers()
	}
	c := &migrationConfig{peers: peers}
	c.idle.set(StreamIdleTimeout)
	c.handshake.set(HandshakeTimeout)
	c.build.set(BuildTimeout)
	c.outcome.set(OutcomeTTL)
	c.retry.set(RetryBackoff)
	return c
}

// durationVar is a duration that may be read and changed concurrently.
type durationVar struct{ v atomic.Int64 }

func (d *durationVar) get() time.Duration  { return time.Duration(d.v.Load()) }
func (d *durationVar) set(v time.Duration) { d.v.Store(int64(v)) }

// Convergence policy of the RAM pre-copy: after the first full pass, copy
// dirty pages in rounds until few are left, too many rounds passed, or too
// much time; then pause the VM for the final copy.
const (
	convergePages  = 256 // 1 MiB left: pause
	maxRounds      = 10
	maxPrecopyTime = 10 * time.Second
)

// FailPoints make a server misbehave on purpose at chosen points of a
// migration, so that tests of the failure paths can run against real
// processes. They are set by the WAGGLE_FAILPOINTS environment variable of
// `waggle server` (comma-separated names); production servers set none.
type FailPoints map[string]bool

// The fail points.
const (
	// FailStallInPrecopy: after its first RAM frame the target stops
	// reading for twice the stream's idle timeout: time for a test to
	// kill it, stop the source, or end its guest, and for the source to
	// give up on it.
	FailStallInPrecopy = "target-stall-in-precopy"
	// FailDropCommit: the source hands the migration off but hangs up
	// instead of sending Commit, so the target must ask it whether the
	// hand-off happened.
	FailDropCommit = "source-drop-commit"
	// FailDeviceImport: the target cuts each device payload short, so its
	// import of the VM's state fails in the device's own Restore.
	FailDeviceImport = "target-fail-device-import"
	// FailOldestDeviceVersions: the target offers only the oldest state
	// version of each device kind, as a build from before the newer ones
	// would, so the source must write that version.
	FailOldestDeviceVersions = "target-offers-oldest-device-versions"
	// FailOldestSpecVersion: the target accepts only the oldest spec
	// version, as a build from before the newer ones would, so the source
	// must send the spec in it or fail before any RAM moves.
	FailOldestSpecVersion = "target-accepts-oldest-spec-version"
)

// ParseFailPoints parses a comma-separated list.
func ParseFailPoints(s string) FailPoints {
	fp := FailPoints{}
	for _, name := range strings.Split(s, ",") {
		if name = strings.TrimSpace(name); name != "" {
			fp[name] = true
		}
	}
	return fp
}

// FieldError is a request field the runtime refuses (400 invalid_request):
// Field names it as the contracts do ("migrate.src_addr"), Reason says
// why. Neither ever holds a secret.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// checkArm validates an arm request and returns its TTL.
func checkArm(arm MigrationArm) (time.Duration, error) {
	if arm.ID == uuid.Nil {
		return 0, &FieldError{"migration_id", "the nil UUID cannot be a migration's id"}
	}
	if arm.Secret != "" {
		if err := migration.CheckSecret(arm.Secret); err != nil {
			return 0, &FieldError{"secret", strings.TrimPrefix(err.Error(), migration.ErrBadSecret.Error()+": ")}
		}
	}
	switch ttl := arm.TTL; {
	case ttl == 0:
		return DefaultArmTTL, nil
	case ttl < MinArmTTL || ttl > MaxArmTTL:
		return 0, &FieldError{"ttl_seconds", fmt.Sprintf("%v is not between %v and %v", ttl, MinArmTTL, MaxArmTTL)}
	default:
		return ttl, nil
	}
}

// streamError is a migration failure with the Abort code that tells the
// peer what happened in words it has itself.
type streamError struct {
	code migration.AbortCode
	err  error
}

func (e *streamError) Error() string { return e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

func refusal(code migration.AbortCode, format string, args ...any) error {
	return &streamError{code, fmt.Errorf(format, args...)}
}

// abortCode is the code an Abort for err carries.
func abortCode(err error) migration.AbortCode {
	var se *streamError
	if errors.As(err, &se) {
		return se.code
	}
	return migration.AbortFailed
}

// Phrases of the failures the two sides tell each other by code, in our
// own words.
const (
	reasonNoSuchMigration = "no such migration is expected (never armed, expired, or already used)"
	reasonNoProtocol      = "the source and the target speak no migration protocol in common"
)

// maxShownReason bounds a failure reason made of a peer's words.
const maxShownReason = 200

// sanitize makes text fit to show: printable ASCII only (anything else
// becomes '?'), at most max bytes.
func sanitize(text string, max int) string {
	b := []byte(text)
	if len(b) > max {
		b = append(b[:max-3], "..."...)
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// maxFailureReason bounds a migration's failure reason.
const maxFailureReason = 1024
