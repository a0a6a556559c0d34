package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"math/bits"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
	"github.com/wagglevm/waggle/vmm"
	"github.com/wagglevm/waggle/vmm/devices"
)

// source runs one outbound migration.
type source struct {
	r  *Runtime
	id uuid.UUID
	// secret is the migration's, kept for a target that lost the hand-off.
	secret string
	m      VM
	spec   spec.Spec
	p      *peer
	start  time.Time
	// paused says the VM was paused by the migration (and must be resumed
	// if it fails).
	paused   bool
	pausedAt time.Time
	zero     []byte
	// marks time the steps of the downtime, for the log.
	marks []mark
	// history is what was sent of the serial history.
	history historySend
	// done ends the stream's watch on the migration's context.
	done func()
}

// mark is a named instant of a migration.
type mark struct {
	name string
	at   time.Time
}

func (s *source) mark(name string) { s.marks = append(s.marks, mark{name, time.Now()}) }

// breakdown renders the marks as "name=duration-since-previous" pairs.
func (s *source) breakdown() string {
	var b strings.Builder
	for i := 1; i < len(s.marks); i++ {
		fmt.Fprintf(&b, "%s=%v ", s.marks[i].name, s.marks[i].at.Sub(s.marks[i-1].at).Round(time.Microsecond))
	}
	return strings.TrimSpace(b.String())
}

// progress updates the outbound progress under the runtime's lock (f may
// be nil: then only the byte count is refreshed).
func (s *source) progress(f func(p *MigrationProgress)) {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if s.r.mig.out != nil && s.r.mig.out.MigrationID == s.id {
		if f != nil {
			f(s.r.mig.out)
		}
		s.r.mig.out.BytesSent = s.p.sent.Load()
	}
}

func (s *source) phase(ph MigrationPhase) {
	s.r.log.Debug("migration phase", "migration", s.id, "phase", ph, "elapsed", time.Since(s.start))
	s.progress(func(p *MigrationProgress) { p.Phase = ph })
}

// run carries the migration on from the handshake's hello to its end, and
// closes the stream's watch on ctx.
func (s *source) run(ctx context.Context, hello migration.Hello) error {
	defer s.done()
	s.zero = make([]byte, migration.PageSize)
	err := s.migrate(ctx, hello)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%v)", cause, err)
		}
		s.p.abort(err)
		s.fail(err)
		return err
	}
	return nil
}

// fail ends a migration that did not reach the hand-off: the VM runs on,
// here, with nothing lost; or, when a stop aborted the migration, the VM
// is stopped now.
func (s *source) fail(err error) {
	var resumeErr error
	if s.paused {
		if resumeErr = s.m.Resume(); resumeErr != nil {
			s.r.log.Error("migration: resume after failure", "err", resumeErr)
		}
	}
	_ = s.m.DisableDirtyLog()
	s.r.log.Warn("outbound migration failed; the VM runs on here", "migration", s.id, "err", err)
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if out := s.r.mig.out; out != nil && out.MigrationID == s.id {
		out.Phase, out.FailureReason, out.Total = PhaseFailed, sanitize(err.Error(), maxFailureReason), time.Since(s.start)
	}
	s.r.mig.abortOut = nil
	// A target that lost the stream and asks is told, once it proved
	// itself, that nothing was handed off.
	s.r.recordOutcomeLocked(s.id, s.secret, false, s.r.mc.outcome.get())
	if s.r.machine == s.m && s.r.inst.State == StateStopping {
		// A stop aborted the migration (RequestState): now that the VM is
		// resumed and the migration has let go of it, stop it.
		go s.r.stop(s.m)
		return
	}
	if s.r.machine != s.m || s.r.inst.State != StateMigrating {
		return
	}
	if exit, ended := s.m.Exit(); ended {
		// The guest ended during the migration (it powered off, say):
		// what would have happened without the migration happens now.
		s.r.machineEndedLocked(exit)
		return
	}
	if resumeErr != nil {
		// The VM is paused and cannot go on: say so rather than running.
		s.r.failLocked(FailureMigrationFailed, fmt.Sprintf("resume after the failed migration: %v", resumeErr))
		s.r.releaseLocked(consoleVMFailed)
		return
	}
	s.r.setStateLocked(StateRunning, "")
}

// migrate runs the conversation of package migration after the
// handshake, phase by phase.
func (s *source) migrate(ctx context.Context, hello migration.Hello) error {
	if err := s.preamble(hello.SpecVersions); err != nil {
		return err
	}
	if err := s.sendSerialHistoryHead(hello.Devices); err != nil {
		return err
	}
	if err := s.copyRAM(ctx); err != nil {
		return err
	}
	if err := s.sendState(hello.Devices); err != nil {
		return err
	}
	if _, err := s.p.expect(migration.TypeImported); err != nil {
		return err
	}
	s.mark("target_import")
	return s.handOff(ctx)
}

// preamble sends the spec in the newest version the target accepts that
// can express it, and waits until the target has built its VM.
func (s *source) preamble(accepted []string) error {
	s.phase(PhasePreamble)
	env, err := versions.Wrap(s.spec, accepted)
	if err != nil {
		return fmt.Errorf("preamble: %w", err)
	}
	data, err := env.Marshal()
	if err != nil {
		return err
	}
	if err := s.p.sendNow(migration.TypePreamble, migration.Preamble{Envelope: data}.Encode()); err != nil {
		return err
	}
	// Building the VM may take the target longer than a frame should.
	s.p.conn.setLimits(s.r.mc.build.get(), time.Time{})
	defer s.p.conn.setLimits(s.r.mc.idle.get(), time.Time{})
	_, err = s.p.expect(migration.TypeReady)
	return err
}

// copyRAM pre-copies RAM while the VM runs, in rounds, until the dirty pages
// left are few, the rounds many or the time long; then it pauses the VM and
// sends the last dirty pages.
func (s *source) copyRAM(ctx context.Context) error {
	s.phase(PhaseRAMPrecopy)
	if err := s.m.EnableDirtyLog(); err != nil {
		return err
	}
	touched, err := s.m.TouchedPages()
	if err != nil {
		return err
	}
	s.r.log.Debug("migration touched pages", "migration", s.id, "pages", countPages(touched), "elapsed", time.Since(s.start))
	if s.p.protocol >= migration.ProtocolV2 {
		if err := s.sendPlan(touched); err != nil {
			return err
		}
	}
	// Round 0 sends the pages ever touched; the target's RAM is fresh, so
	// pages never touched, and zero pages, need not be sent. Each later
	// round sends the pages dirtied during the one before, zeros included.
	pages := touched
	for round := uint32(0); ; round++ {
		sent, err := s.sendPages(ctx, pages, round, round > 0)
		if err != nil {
			return err
		}
		dirty, err := s.m.CollectDirty()
		if err != nil {
			return err
		}
		if err := s.endRound(migration.RoundEnd{Round: round, PagesSent: sent, PagesLeft: countPages(dirty)}); err != nil {
			return err
		}
		// Decide on what is left now, after the target's ack: pages the
		// guest dirtied meanwhile count too.
		more, err := s.m.CollectDirty()
		if err != nil {
			return err
		}
		merge(dirty, more)
		left := countPages(dirty)
		s.progress(func(p *MigrationProgress) { p.PagesLeft = left })
		if left > convergePages && round < maxRounds && time.Since(s.start) <= maxPrecopyTime {
			pages = dirty
			continue
		}
		// Pause with these pages, and any dirtied since, still to send.
		if err := s.pause(); err != nil {
			return err
		}
		if more, err = s.m.CollectDirty(); err != nil {
			return err
		}
		merge(dirty, more)
		s.phase(PhaseRAMFinal)
		sent, err = s.sendPages(ctx, dirty, round+1, true)
		if err != nil {
			return err
		}
		if err := s.endRound(migration.RoundEnd{Round: round + 1, Final: true, PagesSent: sent}); err != nil {
			return err
		}
		s.mark("final_ram")
		return nil
	}
}

// sendState sends each device's state, in the newest version the target
// imports, then the vCPUs, irqchip, PIT and clock.
func (s *source) sendState(accepted []migration.DeviceVersions) error {
	s.phase(PhaseDeviceState)
	want := map[string]uint32{}
	for _, d := range accepted {
		want[d.Kind] = newestCommon(d.Versions, devices.ImportableVersions()[d.Kind])
	}
	st, err := s.m.ExportStateVersions(want)
	if err != nil {
		return err
	}
	s.mark("export")
	for _, d := range st.Devices {
		dv := migration.Device{Key: d.Key, Kind: d.Payload.Kind, Version: d.Payload.Version, Data: d.Payload.Data}
		if err := s.p.send(migration.TypeDevice, dv.Encode()); err != nil {
			return err
		}
	}
	if err := s.sendSerialHistoryTail(); err != nil {
		return err
	}
	s.phase(PhaseClock)
	st.Devices = nil
	mach, err := st.MarshalBinary()
	if err != nil {
		return err
	}
	if err := s.p.send(migration.TypeMachine, migration.Machine{Version: vmm.StateVersion, Data: mach}.Encode()); err != nil {
		return err
	}
	if err := s.p.sendNow(migration.TypeStateDone, nil); err != nil {
		return err
	}
	s.mark("send_state")
	return nil
}

// handOff is the point of no return: once the target holds the whole VM,
// the source records the migration as completed (so that a target that
// loses the connection now can ask again, prove itself, and run), never
// runs the VM again, and tells the target to run it.
func (s *source) handOff(ctx context.Context) error {
	downtime := time.Since(s.pausedAt)
	r := s.r
	r.mu.Lock()
	// An abort (a stop request, the guest ending) takes r.mu too: one that
	// came first wins, and the VM stays here; after this point none can
	// come, since abortOut is gone.
	if err := context.Cause(ctx); err != nil {
		r.mu.Unlock()
		return err
	}
	if out := r.mig.out; out != nil && out.MigrationID == s.id {
		out.Phase, out.PagesLeft, out.Downtime, out.Total = PhaseCompleted, 0, downtime, time.Since(s.start)
		out.BytesSent = s.p.sent.Load()
	}
	r.mig.abortOut = nil
	r.recordOutcomeLocked(s.id, s.secret, true, r.mc.outcome.get())
	r.mu.Unlock()

	var err error
	if r.failPoints[FailDropCommit] {
		err = errors.New("dropped on purpose")
		s.p.conn.Close()
	} else {
		err = s.p.sendNow(migration.TypeCommit, migration.Commit{PausedFor: time.Since(s.pausedAt)}.Encode())
	}
	s.mark("commit")
	r.log.Info("outbound migration completed", "migration", s.id, "downtime", downtime, "total", time.Since(s.start),
		"bytes", s.p.sent.Load(), "downtime_breakdown", s.breakdown())

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.machine == s.m {
		r.releaseLocked(consoleVMMigrated)
		r.setStateLocked(StateDestroyed, "migrated out")
	}
	if err != nil {
		// The target can still ask us (serveOutcome), even once a new
		// instance replaced this one: the outcome is kept beside it.
		r.log.Warn("migration: sending the hand-off failed", "err", err)
	}
	return nil
}

func (s *source) pause() error {
	s.phase(PhasePause)
	if err := s.m.Pause(); err != nil {
		return err
	}
	s.paused, s.pausedAt = true, time.Now()
	s.mark("pause")
	return nil
}

// sendPages sends the pages set in the bitmaps: runs of non-zero pages as
// RAM frames and, if sendZero, runs of zero pages as Zero frames (a target
// whose RAM is fresh needs no zeros). It returns how many pages it sent.
func (s *source) sendPages(ctx context.Context, maps []vmm.DirtyBitmap, round uint32, sendZero bool) (uint64, error) {
	var sent uint64
	for _, bm := range maps {
		for gpa, n := range setRuns(bm, migration.MaxPagesPerFrame) {
			if err := ctx.Err(); err != nil {
				return sent, context.Cause(ctx)
			}
			done, err := s.sendRun(gpa, n, sendZero)
			if err != nil {
				return sent, err
			}
			sent += done
			s.progress(nil)
		}
	}
	s.r.log.Debug("migration round", "migration", s.id, "round", round, "pages", sent, "elapsed", time.Since(s.start))
	return sent, nil
}

// sendPlan tells the target which RAM round 0 will send (protocol 2), in
// at most MaxPlanFrames frames, so that it can populate that memory while
// the pages stream in.
func (s *source) sendPlan(maps []vmm.DirtyBitmap) error {
	var ranges []migration.PlanRange
	for _, bm := range maps {
		for gpa, n := range setRuns(bm, bm.Region.Pages()) {
			ranges = append(ranges, migration.PlanRange{GPA: gpa, Pages: n})
		}
	}
	for frames := 0; len(ranges) > 0 && frames < migration.MaxPlanFrames; frames++ {
		n := min(len(ranges), migration.MaxPlanRanges)
		if err := s.p.send(migration.TypePlan, migration.Plan{Ranges: ranges[:n]}.Encode()); err != nil {
			return err
		}
		ranges = ranges[n:]
	}
	return s.p.flush()
}

// endRound closes a round with end and, unless it is the final one, waits
// for the target's acknowledgement: the decision to pause, made after it,
// never waits behind pages still in flight.
func (s *source) endRound(end migration.RoundEnd) error {
	s.progress(func(p *MigrationProgress) { p.Rounds, p.PagesLeft = end.Round+1, end.PagesLeft })
	if err := s.p.sendNow(migration.TypeRoundEnd, end.Encode()); err != nil || end.Final {
		return err
	}
	f, err := s.p.expect(migration.TypeRoundAck)
	if err != nil {
		return err
	}
	ack, err := migration.DecodeRoundAck(f.Payload)
	if err != nil {
		return err
	}
	if ack.Round != end.Round {
		return fmt.Errorf("%w: the target acknowledged round %d, not %d", migration.ErrFrame, ack.Round, end.Round)
	}
	return nil
}

// sendRun sends n consecutive pages from gpa, splitting zero from data. The
// pages go to the socket straight from guest memory.
func (s *source) sendRun(gpa, n uint64, sendZero bool) (uint64, error) {
	var sent uint64
	err := s.m.ViewGuest(gpa, int(n*migration.PageSize), func(ram []byte) error {
		for i := uint64(0); i < n; {
			zero := bytes.Equal(ram[i*migration.PageSize:(i+1)*migration.PageSize], s.zero)
			j := i + 1
			for j < n && bytes.Equal(ram[j*migration.PageSize:(j+1)*migration.PageSize], s.zero) == zero {
				j++
			}
			at := gpa + i*migration.PageSize
			switch {
			case !zero:
				if err := s.p.sendRAM(at, ram[i*migration.PageSize:j*migration.PageSize]); err != nil {
					return err
				}
				sent += j - i
			case sendZero:
				if err := s.p.send(migration.TypeZero, migration.Zero{GPA: at, Pages: j - i}.Encode()); err != nil {
					return err
				}
				sent += j - i
			}
			i = j
		}
		return nil
	})
	return sent, err
}

// setRuns yields each run of consecutive pages set in bm, at most max pages
// long (a longer run is yielded in pieces), as its first page's GPA and its
// length in pages.
func setRuns(bm vmm.DirtyBitmap, max uint64) iter.Seq2[uint64, uint64] {
	return func(yield func(uint64, uint64) bool) {
		pages := bm.Region.Pages()
		for p := nextSet(bm.Bits, 0, pages); p < pages; p = nextSet(bm.Bits, p, pages) {
			end := p + 1
			for end < pages && end-p < max && bm.Dirty(end) {
				end++
			}
			if !yield(bm.Region.GPA+p*migration.PageSize, end-p) {
				return
			}
			p = end
		}
	}
}

// nextSet returns the first set bit at or after p, or limit.
func nextSet(bm []uint64, p, limit uint64) uint64 {
	for p < limit {
		w := bm[p/64] >> (p % 64)
		if w != 0 {
			return min(p+uint64(bits.TrailingZeros64(w)), limit)
		}
		p = (p/64 + 1) * 64
	}
	return limit
}

func countPages(maps []vmm.DirtyBitmap) uint64 {
	var n uint64
	for _, m := range maps {
		n += uint64(m.Count())
	}
	return n
}

// merge ORs b into a (same regions).
func merge(a, b []vmm.DirtyBitmap) {
	for i := range a {
		for j := range a[i].Bits {
			a[i].Bits[j] |= b[i].Bits[j]
		}
	}
}

// newestCommon returns the newest version in both lists, or 0 (let the
// device write its newest; the target will say if it cannot read it).
func newestCommon(theirs, ours []uint32) uint32 {
	var best uint32
	for _, t := range theirs {
		for _, o := range ours {
			if t == o && t > best {
				best = t
			}
		}
	}
	return best
}

var errStopRequested = errors.New("stop was requested during the migration")
