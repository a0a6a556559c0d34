package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
	"github.com/wagglevm/waggle/vmm"
	"github.com/wagglevm/waggle/vmm/devices"
)

// checkMigrateInit checks a target's ensure before anything is built or
// replaced: the migration id, the secret's form, and the source's address,
// resolved once to the one address the target will dial. nil m is nothing
// to check. It may look a host name up: call it without r.mu held.
func (r *Runtime) checkMigrateInit(ctx context.Context, m *MigrateInit) (netip.AddrPort, error) {
	if m == nil {
		return netip.AddrPort{}, nil
	}
	if m.MigrationID == uuid.Nil {
		return netip.AddrPort{}, &FieldError{"migrate.migration_id", "the nil UUID cannot be a migration's id"}
	}
	if m.Secret == "" {
		return netip.AddrPort{}, &FieldError{"migrate.secret", "required: the secret the source was armed with"}
	}
	if err := migration.CheckSecret(m.Secret); err != nil {
		return netip.AddrPort{}, &FieldError{"migrate.secret", strings.TrimPrefix(err.Error(), migration.ErrBadSecret.Error()+": ")}
	}
	return r.mc.resolveSource(ctx, m.SrcAddr)
}

// ensureMigrationTargetLocked makes the new instance (newInstanceLocked
// has made it empty) the target of a live migration from the source at
// src (checkMigrateInit's answer), and starts pulling the VM from it in
// the background. The VM is built only once the source has proved that it
// holds the migration's secret and sent the spec.
func (r *Runtime) ensureMigrationTargetLocked(_ context.Context, req EnsureRequest, src netip.AddrPort) (Instance, bool, error) {
	r.setStateLocked(StateCreating, "")
	r.mig.in = &MigrationProgress{MigrationID: req.Migrate.MigrationID, Phase: PhaseNegotiate}
	r.setStateLocked(StateMigrating, "")
	t := &target{r: r, id: req.Migrate.MigrationID, src: src, secret: req.Migrate.Secret, props: req.Properties,
		replace: req.Migrate.Replace}
	go t.run()
	return r.inst, true, nil
}

// target runs one inbound migration.
type target struct {
	r  *Runtime
	id uuid.UUID
	// src is the one address of the source, checked against the peers
	// this server may dial.
	src netip.AddrPort
	// secret is the migration's; it is never logged.
	secret string
	props  Properties
	// replace amends the source's spec (host-local backends).
	replace map[spec.Key]spec.Component
	p       *peer
	m       VM
	start   time.Time
	// importTime is how long ImportState took, for the log.
	importTime time.Duration
	// offered are the device state versions the target offered, per kind;
	// devices records what came, as key=kind/vVersion, for the log.
	offered map[string][]uint32
	devices []string
	// history is the serial history the source sent, if it did, the
	// pieces so far joined; historyTail says the tail came.
	history     *serialHistoryState
	historyTail bool
	// plans counts the source's Plan frames; prefault populates what
	// they name.
	plans    int
	prefault prefaulter
}

func (t *target) progress(f func(p *MigrationProgress)) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	if in := t.r.mig.in; in != nil && in.MigrationID == t.id {
		f(in)
		if t.p != nil {
			in.BytesSent = t.p.received.Load()
		}
	}
}

func (t *target) phase(ph MigrationPhase) { t.progress(func(p *MigrationProgress) { p.Phase = ph }) }

func (t *target) run() {
	t.start = time.Now()
	err := t.migrate()
	if t.p != nil {
		defer t.p.conn.Close()
	}
	if err == nil {
		return
	}
	if t.p != nil {
		t.p.abort(err)
	}
	t.r.log.Warn("inbound migration failed", "migration", t.id, "err", err)
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case errors.Is(err, errOutcomeUnknown) && t.m != nil:
		// The source may have handed the VM off and let its own go:
		// this one, paused, may be the only copy. It stays the
		// instance's, failed, and goes only with it.
		r.machine = t.m
	case t.m != nil && r.machine != t.m:
		r.closeLater(t.m) // off the lock: unmapping RAM is slow
	}
	reason := sanitize(err.Error(), maxFailureReason)
	if in := r.mig.in; in != nil && in.MigrationID == t.id {
		in.Phase, in.FailureReason, in.Total = PhaseFailed, reason, time.Since(t.start)
	}
	r.failLocked(FailureMigrationFailed, "inbound migration failed: "+reason)
	r.serial.closeAll(consoleVMFailed)
}

// dial connects to the source and upgrades to the migration stream, and
// returns our end of it, under the handshake's timeout. What
// the source answers, other than the upgrade, is told in our own words: a
// failure reason never repeats a peer's bytes.
func (t *target) dial() (*peer, error) {
	d := net.Dialer{Timeout: DialTimeout}
	conn, err := d.Dial("tcp", t.src.String())
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Timeout() {
			return nil, fmt.Errorf("cannot connect to the source at %s: no answer within %v", t.src, DialTimeout)
		}
		return nil, fmt.Errorf("cannot connect to the source at %s: %w", t.src, errors.Unwrap(err))
	}
	sc := newStreamConn(conn, t.r.mc.idle.get())
	sc.setLimits(t.r.mc.idle.get(), time.Now().Add(t.r.mc.handshake.get()))
	if _, err := fmt.Fprintf(sc, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
		sourceStreamPath(t.id), t.src, MigrateUpgradeProtocol); err != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade at the source: %w", err)
	}
	// Nothing the source says before its proof may cost us more than
	// maxUpgradeAnswer bytes: the answer is read through a limit, lifted
	// once the upgrade is taken (the handshake's frames have their own).
	lr := &io.LimitedReader{R: sc, N: maxUpgradeAnswer}
	br := bufio.NewReaderSize(lr, readBuffer)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		if err := sc.timeout(); err != nil {
			return nil, fmt.Errorf("the source did not answer the upgrade: %w", err)
		}
		if lr.N <= 0 {
			return nil, fmt.Errorf("the source did not answer as a waggle server (an answer to the upgrade longer than %d bytes)", maxUpgradeAnswer)
		}
		return nil, errors.New("the source did not answer as a waggle server (no HTTP response)")
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		conn.Close()
		return nil, upgradeRefused(resp.StatusCode, body)
	}
	lr.N = math.MaxInt64
	return newPeer("source", sc, br), nil
}

// maxUpgradeAnswer bounds the source's answer to the upgrade (status line,
// headers and, on a refusal, the body read).
const maxUpgradeAnswer = 16 << 10

// dialRetrying is dial, tried again with backoff (UpgradeTries in all)
// while the source refuses the upgrade: a source answers a target whose
// arm is busy (other streams proving themselves) as it answers one with no
// arm at all, and the busy streams end within the handshake timeout.
func (t *target) dialRetrying() (*peer, error) {
	wait := t.r.mc.retry.get()
	for try := 1; ; try++ {
		p, err := t.dial()
		var ur *upgradeRefusal
		if err == nil || try >= UpgradeTries || !errors.As(err, &ur) ||
			(ur.code != CodeNoSuchMigration && ur.code != CodeInvalidTransition) {
			return p, err
		}
		t.r.log.Info("migration: the source refused the upgrade; trying again", "migration", t.id, "try", try, "err", err)
		time.Sleep(wait)
		wait = min(2*wait, MaxRetryBackoff)
	}
}

// upgradeRefusal is a source that answered the upgrade with one of our
// Error codes.
type upgradeRefusal struct {
	status int
	code   string
}

func (e *upgradeRefusal) Error() string {
	return fmt.Sprintf("the source refused the upgrade: HTTP %d %s (%s)", e.status, e.code, upgradeCodes[e.code])
}

// upgradeCodes are the error codes a waggle source may answer the upgrade
// with, and what each means to a target, in our words.
var upgradeCodes = map[string]string{
	CodeNoSuchMigration:   reasonNoSuchMigration,
	CodeInvalidTransition: "the source cannot migrate now: it is not running, or other targets are proving themselves for this migration",
	CodeNoInstance:        "the source has no instance",
	CodeNotUpgraded:       "the source did not take the upgrade",
	CodeNotFound:          "the source has no migration endpoint",
	"unauthorized":        "the source asked for a credential, which a migration stream does not need",
	CodeInternal:          "the source failed",
}

// upgradeRefused says why the source answered the upgrade with status and
// body: the code of an Error body when it is one we know, else only the
// status number.
func upgradeRefused(status int, body []byte) error {
	var e struct {
		ErrorCode string `json:"error_code"`
	}
	if json.Unmarshal(body, &e) == nil {
		if _, ok := upgradeCodes[e.ErrorCode]; ok {
			return &upgradeRefusal{status: status, code: e.ErrorCode}
		}
	}
	return fmt.Errorf("the source did not answer as a waggle server (HTTP %d)", status)
}

func (t *target) migrate() error {
	p, err := t.dialRetrying()
	if err != nil {
		return err
	}
	t.p = p
	fp := t.r.failPoints
	if err := t.handshake(p, fp); err != nil {
		return err
	}
	t.p.conn.setLimits(t.r.mc.idle.get(), time.Time{})

	// Preamble: the VM is built from the spec the source sends, and only
	// from it.
	t.phase(PhasePreamble)
	f, err := t.p.recv()
	if err != nil {
		return err
	}
	switch f.Type {
	case migration.TypePreamble:
	case migration.TypeCommit:
		return errors.New("the source handed this migration off already: its arm was used")
	default:
		return fmt.Errorf("%w: expected Preamble, got %s", migration.ErrFrame, f.Type)
	}
	pre, err := migration.DecodePreamble(f.Payload)
	if err != nil {
		return err
	}
	s, version, err := versions.Unwrap(pre.Envelope)
	if err != nil {
		return fmt.Errorf("the source's spec is rejected: %w", err)
	}
	if s, err = amend(s, t.replace); err != nil {
		return fmt.Errorf("the source's spec cannot be amended: %w", err)
	}
	if t.m, err = t.r.buildMachine(t.props, s, true); err != nil {
		return fmt.Errorf("cannot build the VM from the source's spec (%s): %w", version, err)
	}
	t.r.mu.Lock()
	t.r.spec = &s
	t.r.mu.Unlock()
	if err := t.p.sendNow(migration.TypeReady, nil); err != nil {
		return err
	}

	// RAM rounds, then device and machine state.
	t.phase(PhaseRAMPrecopy)
	st, err := t.receiveState(fp)
	t.prefault.end() // if receiving ended before a round did
	if err != nil {
		return err
	}
	received := time.Now()
	if err := t.m.ImportState(st); err != nil {
		return fmt.Errorf("import the VM's state: %w", err)
	}
	t.importTime = time.Since(received)
	t.phase(PhaseHandoff)
	importedAt := time.Now()
	var pausedFor time.Duration
	err = t.p.sendNow(migration.TypeImported, nil) // if it fails, the source may have read it all the same
	if err == nil {
		if f, err = t.p.expect(migration.TypeCommit); err == nil {
			var c migration.Commit
			if c, err = migration.DecodeCommit(f.Payload); err == nil {
				pausedFor = c.PausedFor
			}
		}
	}
	committedAt := time.Now()
	if err != nil {
		var pa *errPeerAborted
		if errors.As(err, &pa) && pa.trusted {
			// The source, which proved itself, aborts only while the
			// VM is still its own: there was no hand-off.
			return err
		}
		// The source decides at the hand-off; ask it what it decided.
		done, askErr := t.handedOff(importedAt)
		if askErr != nil {
			return askErr
		}
		if !done {
			return fmt.Errorf("no hand-off from the source: %w", err)
		}
		t.r.log.Warn("migration: the hand-off was lost but the source completed; running", "err", err)
	}
	return t.resume(pausedFor, committedAt)
}

// resume starts the migrated VM and makes it the instance's. The downtime
// is the source's pause up to the hand-off plus our time to resume (the
// one-way network delay of the hand-off is not counted).
func (t *target) resume(pausedFor time.Duration, committedAt time.Time) error {
	t.restoreSerialHistory()
	if err := t.m.Start(); err != nil {
		return fmt.Errorf("start the migrated VM: %w", err)
	}
	downtime := pausedFor + time.Since(committedAt)
	r := t.r
	r.mu.Lock()
	r.machine = t.m
	if in := r.mig.in; in != nil && in.MigrationID == t.id {
		in.Phase, in.PagesLeft, in.Total = PhaseCompleted, 0, time.Since(t.start)
		if pausedFor > 0 {
			in.Downtime = downtime
		}
		in.BytesSent = t.p.received.Load()
	}
	r.setStateLocked(StateRunning, "")
	r.serial.setInput(r.serialInput)
	r.mu.Unlock()
	r.log.Info("inbound migration completed", "migration", t.id, "total", time.Since(t.start), "downtime", downtime,
		"import", t.importTime, "resume", time.Since(committedAt), "bytes", t.p.received.Load(),
		"devices", strings.Join(t.devices, " "))
	go r.watch(t.m)
	return nil
}

// receiveState applies RAM frames and collects device and machine state
// until StateDone. Every address and size from the stream is checked
// against the VM's RAM before use.
func (t *target) receiveState(fp FailPoints) (*vmm.State, error) {
	regions := t.m.Regions()
	zeros := make([]byte, migration.MaxPagesPerFrame*migration.PageSize)
	var st *vmm.State
	var devs []vmm.DeviceState
	seen := map[string]bool{}
	stalled := false
	// begun says a page (or a round's end) came: a Plan may come only
	// before.
	begun := false
	// RAM frames' pages are read straight into guest memory.
	intoRAM := func(gpa uint64, n int, r io.Reader) error {
		begun = true
		if err := checkRange(regions, gpa, uint64(n)); err != nil {
			return err
		}
		if err := t.m.FillGuest(r, gpa, n); err != nil {
			return err
		}
		if fp[FailStallInPrecopy] && !stalled {
			stalled = true
			t.stallUntilSourceGivesUp()
		}
		return nil
	}
	for {
		f, err := t.p.recvInto(intoRAM)
		if err != nil {
			return nil, err
		}
		switch f.Type {
		case migration.TypeRAM:
			// Taken by intoRAM.
		case migration.TypePlan:
			if err := t.takePlan(f.Payload, regions, begun); err != nil {
				return nil, err
			}
		case migration.TypeZero:
			begun = true
			z, err := migration.DecodeZero(f.Payload)
			if err != nil {
				return nil, err
			}
			if err := checkRange(regions, z.GPA, z.Pages*migration.PageSize); err != nil {
				return nil, err
			}
			for gpa, end := z.GPA, z.GPA+z.Pages*migration.PageSize; gpa < end; gpa += uint64(len(zeros)) {
				if err := t.m.WriteGuest(zeros[:min(uint64(len(zeros)), end-gpa)], gpa); err != nil {
					return nil, err
				}
			}
		case migration.TypeRoundEnd:
			begun = true
			re, err := migration.DecodeRoundEnd(f.Payload)
			if err != nil {
				return nil, err
			}
			// The plan was the first round's: what it named has come.
			// Stop populating now, in the pre-copy, so that the pause
			// never waits for it.
			t.prefault.end()
			t.progress(func(p *MigrationProgress) {
				p.Rounds, p.PagesLeft = re.Round+1, re.PagesLeft
				if re.Final {
					p.Phase = PhaseDeviceState
				}
			})
			if !re.Final {
				if err := t.p.sendNow(migration.TypeRoundAck, migration.RoundAck{Round: re.Round}.Encode()); err != nil {
					return nil, err
				}
			}
		case migration.TypeDevice:
			d, err := migration.DecodeDevice(f.Payload)
			if err != nil {
				return nil, err
			}
			if seen[d.Key] {
				return nil, fmt.Errorf("%w: device %q sent twice", migration.ErrFrame, d.Key)
			}
			if vs, ok := t.offered[d.Kind]; !ok || !slices.Contains(vs, d.Version) {
				return nil, fmt.Errorf("device %q: cannot import %q state version %d (this target offered %v)", d.Key, d.Kind, d.Version, t.offered)
			}
			seen[d.Key] = true
			t.devices = append(t.devices, fmt.Sprintf("%s=%s/v%d", d.Key, d.Kind, d.Version))
			if d.Kind == serialHistoryKind {
				if err := t.takeSerialHistory(d); err != nil {
					return nil, err
				}
				continue
			}
			data := append([]byte(nil), d.Data...)
			if fp[FailDeviceImport] {
				// Cut the payload short: the device's own Restore refuses
				// it, in ImportState, as it would a damaged one.
				data = data[:len(data)/2]
			}
			devs = append(devs, vmm.DeviceState{Key: d.Key, Payload: devices.Payload{Kind: d.Kind, Version: d.Version, Data: data}})
		case migration.TypeMachine:
			t.phase(PhaseClock)
			mach, err := migration.DecodeMachine(f.Payload)
			if err != nil {
				return nil, err
			}
			if mach.Version != vmm.StateVersion {
				return nil, fmt.Errorf("machine state version %d; this build reads %d", mach.Version, vmm.StateVersion)
			}
			if st, err = vmm.UnmarshalState(mach.Data); err != nil {
				return nil, err
			}
		case migration.TypeStateDone:
			if err := migration.DecodeEmpty(f.Type, f.Payload); err != nil {
				return nil, err
			}
			if st == nil {
				return nil, fmt.Errorf("%w: state done before the machine state", migration.ErrFrame)
			}
			st.Devices = devs
			return st, nil
		default:
			return nil, fmt.Errorf("%w: unexpected %s while receiving state", migration.ErrFrame, f.Type)
		}
	}
}

// amend replaces components of s: each replacement must name a component
// of s of the same kind, and the result must obey every rule.
func amend(s spec.Spec, replace map[spec.Key]spec.Component) (spec.Spec, error) {
	if len(replace) == 0 {
		return s, nil
	}
	b := s.ToBuilder()
	for k, c := range replace {
		if err := b.Replace(k, c); err != nil {
			return spec.Spec{}, err
		}
	}
	return b.Build()
}

// checkRange fails unless [gpa, gpa+n) lies inside one RAM region.
func checkRange(regions []vmm.Region, gpa, n uint64) error {
	for _, r := range regions {
		if gpa >= r.GPA && gpa-r.GPA <= r.Size && n <= r.Size-(gpa-r.GPA) {
			return nil
		}
	}
	return fmt.Errorf("%w: pages at %#x (+%d bytes) are outside guest RAM", migration.ErrFrame, gpa, n)
}

// errOutcomeUnknown: the target could not learn whether the source handed
// the migration off; it keeps its VM, paused, since it may be the only
// copy.
var errOutcomeUnknown = errors.New("the outcome of the hand-off is unknown")

// handedOff asks the source again, on a new stream, whether it handed the
// migration off: a source that did answers a target that proves itself
// with the Commit it missed, one that did not with an Abort (the VM runs
// there). Only an answer after the source's proof counts: a refusal of the
// upgrade is no answer (the source answers a busy arm, an unknown id and
// no instance alike). It asks again, with backoff, until the source's
// answer's time (OutcomeTTL) since importedAt has passed; then the outcome
// is unknown (errOutcomeUnknown).
func (t *target) handedOff(importedAt time.Time) (bool, error) {
	ttl := t.r.mc.outcome.get()
	deadline := importedAt.Add(ttl)
	wait := t.r.mc.retry.get()
	for {
		done, final := t.askHandedOff()
		if final {
			return done, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, fmt.Errorf("%w: the source could not be asked within %v of the import; this VM is paused, not closed, and may be the only copy of the guest",
				errOutcomeUnknown, ttl)
		}
		time.Sleep(min(wait, left))
		wait = min(2*wait, MaxRetryBackoff)
	}
}

// askHandedOff asks once; final says the answer is the source's, given
// after its proof, not a failure to ask.
func (t *target) askHandedOff() (done, final bool) {
	p, err := t.dial()
	if err != nil {
		t.r.log.Warn("migration: asking the source for the hand-off", "migration", t.id, "err", err)
		return false, false
	}
	defer p.conn.Close()
	if err := t.handshake(p, nil); err != nil {
		t.r.log.Warn("migration: asking the source for the hand-off", "migration", t.id, "err", err)
		return false, false
	}
	f, err := p.recv()
	var pa *errPeerAborted
	switch {
	case err == nil:
		// A Commit, or the Preamble of an arm of this id made again
		// (then the VM is the source's still).
		return f.Type == migration.TypeCommit, true
	case errors.As(err, &pa):
		return false, true // the source proved itself: its Abort is its answer
	}
	t.r.log.Warn("migration: asking the source for the hand-off", "migration", t.id, "err", err)
	return false, false
}

// stallUntilSourceGivesUp is the FailStallInPrecopy fail point: the target
// stops reading the stream for twice the idle timeout, by when the source
// has given up on it, so that a test can act on the source while the
// migration is certainly in progress.
func (t *target) stallUntilSourceGivesUp() {
	t.r.log.Warn("migration: stalling on purpose", "failpoint", FailStallInPrecopy)
	time.Sleep(2 * t.r.mc.idle.get())
}
