package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
)

// The helpers below are the only places that know how a migration is armed
// and opened: when arming changes, they change.

// armSource arms src as the source of a new migration and returns its id
// and secret.
func armSource(t *testing.T, src Core) (uuid.UUID, string) {
	t.Helper()
	id := uuid.New()
	armed, err := src.MigrateExpect(context.Background(), MigrationArm{ID: id})
	require.NoError(t, err)
	require.Equal(t, id, armed.ID)
	return id, armed.Secret
}

// ensureTarget makes dst the target of migration id from the source at
// srcAddr.
func ensureTarget(t *testing.T, dst Core, srcAddr string, id uuid.UUID, secret string) {
	t.Helper()
	inst, created, err := dst.Ensure(context.Background(), EnsureRequest{
		Properties: Properties{ID: uuid.New(), Name: "target"},
		Migrate:    &MigrateInit{MigrationID: id, SrcAddr: srcAddr, Secret: secret},
	})
	require.NoError(t, err)
	require.True(t, created)
	require.Contains(t, []State{StateCreating, StateMigrating}, inst.State)
}

// migrate arms src, makes dst its target and waits until the migration
// ends either way; it returns the migration's id.
func migrate(t *testing.T, src, dst *rig) uuid.UUID {
	t.Helper()
	id, secret := armSource(t, src.rt)
	ensureTarget(t, dst.rt, src.addr, id, secret)
	require.Eventually(t, func() bool {
		st, err := dst.rt.MigrationStatus(context.Background())
		return err == nil && st.In != nil && (st.In.Phase == PhaseCompleted || st.In.Phase == PhaseFailed)
	}, 20*time.Second, time.Millisecond)
	return id
}

// upgradeMigration asks the source at addr for migration id's stream as a
// target would, and returns the HTTP status and, on 101, the connection.
func upgradeMigration(t *testing.T, addr string, id uuid.UUID) (int, string, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = fmt.Fprintf(conn, "GET /v1/instance/migrate/%s/start HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
		id, addr, MigrateUpgradeProtocol)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	var body strings.Builder
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = fmt.Fprint(&body, readAllString(resp))
		conn.Close()
		return resp.StatusCode, body.String(), nil
	}
	require.NoError(t, conn.SetDeadline(time.Time{}))
	t.Cleanup(func() { conn.Close() })
	return resp.StatusCode, "", conn
}

func readAllString(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// openMigrationStream opens migration id's stream at the source and plays
// a target that holds secret through the handshake (the source begins the
// migration once the target's proof holds); it fails the test unless the
// source switched protocols and proved that it holds the secret too.
func openMigrationStream(t *testing.T, addr string, id uuid.UUID, secret string) net.Conn {
	t.Helper()
	code, body, conn := upgradeMigration(t, addr, id)
	require.Equal(t, http.StatusSwitchingProtocols, code, body)
	hello := migration.Hello{MigrationID: id, Nonce: migration.NewNonce(), Protocols: migration.Supported,
		SpecVersions: []string{"vmm-server/v1"}}
	require.NoError(t, migration.WriteFrame(conn, migration.TypeHello, hello.Encode()))
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	f, err := migration.ReadFrame(conn, nil) // no buffering: nothing follows the Welcome before the proof
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Time{}))
	require.Equal(t, migration.TypeWelcome, f.Type)
	w, err := migration.DecodeWelcome(f.Payload)
	require.NoError(t, err)
	require.True(t, migration.CheckProof(secret, migration.RoleSource, id, hello.Nonce, w.Nonce, w.Proof))
	proof := migration.Proof{Proof: migration.Prove(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce)}
	require.NoError(t, migration.WriteFrame(conn, migration.TypeProof, proof.Encode()))
	return conn
}

// waitOutbound waits until the source's outbound migration is in phase.
func waitOutbound(t *testing.T, core Core, phase MigrationPhase) *MigrationProgress {
	t.Helper()
	var out *MigrationProgress
	require.Eventually(t, func() bool {
		st, err := core.MigrationStatus(context.Background())
		out = st.Out
		return err == nil && out != nil && out.Phase == phase
	}, 20*time.Second, time.Millisecond, "outbound migration in phase %s", phase)
	return out
}

// ticksIn returns the tick numbers printed in s, in order.
func ticksIn(s string) []uint64 {
	var out []uint64
	for _, line := range strings.Split(s, "\n") {
		var n uint64
		if _, err := fmt.Sscanf(line, "tick %d", &n); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// TestLiveMigrationMovesEveryPage migrates a running guest that writes a
// page every millisecond between two runtimes over real TCP. During the
// pre-copy the guest dirties enough pages for a second round and zeroes
// pages it wrote before (one sent in a pre-copy round, one in the final
// copy), and writes a page just before the pause; a stretch of its RAM
// mixes zero pages with data. The target's RAM when it starts must equal the source's RAM at the
// pause, page for page; no zero page is sent to the fresh target in the
// first round; and the guest goes on counting where it stopped.
func TestLiveMigrationMovesEveryPage(t *testing.T) {
	g := fakeGuest{TickEvery: time.Millisecond, WorkPages: 64, ZeroPages: 16}
	src, dst := newRig(t, g), newRig(t, g)
	_, vm := src.ensure(t, "mover")
	src.run(t)
	waitOutput(t, src.rt, "tick 70\n") // every work page written once at least

	const many = 400 // more than convergePages: a second pre-copy round
	zeroedInPrecopy, zeroedAtPause := uint64(workBase+5), uint64(workBase+6)
	extra := workBase + g.WorkPages + g.ZeroPages + 10
	writtenAtPause := extra + many + 5
	vm.mu.Lock()
	vm.afterCollect = func(n int) {
		vm.mu.Lock()
		defer vm.mu.Unlock()
		switch n {
		case 1: // round 0 has been sent
			for i := range uint64(many) {
				vm.guestWriteLocked(extra+i, func(p []byte) { patternOf(1000+i, p) })
			}
			vm.guestWriteLocked(zeroedInPrecopy, func(p []byte) { clear(p) })
		case 3: // round 1 has been sent
			vm.guestWriteLocked(zeroedAtPause, func(p []byte) { clear(p) })
		case 4: // the last count before the pause: this page is dirtied after it
			vm.guestWriteLocked(writtenAtPause, func(p []byte) { patternOf(7777, p) })
		}
	}
	// A patchy stretch, in one run of touched pages: zero pages between
	// and before pages of data, so that a frame's data starts inside the
	// run (sent straight from guest memory, at its own address).
	patchy := writtenAtPause + 20
	for k := range uint64(64) {
		vm.guestWriteLocked(patchy+k, func(p []byte) {
			if k%3 == 0 || k%7 == 0 {
				clear(p)
			} else {
				patternOf(5000+k, p)
			}
		})
	}
	vm.mu.Unlock()
	before := vm.ram()
	require.NotZero(t, before[zeroedInPrecopy][8], "the page to zero holds data")
	require.NotZero(t, before[zeroedAtPause][8], "the page to zero holds data")

	id := migrate(t, src, dst)
	st, err := dst.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.Equal(t, PhaseCompleted, st.In.Phase, st.In.FailureReason)
	require.Equal(t, id, st.In.MigrationID)
	waitState(t, dst.rt, StateRunning)
	waitState(t, src.rt, StateDestroyed)
	out := waitOutbound(t, src.rt, PhaseCompleted)
	require.GreaterOrEqual(t, out.Rounds, uint32(3), "round 0, a second pre-copy round and the final copy")

	target := dst.vms.last()
	target.mu.Lock()
	atStart, zeroOntoFresh := target.atStart, target.zeroOntoFresh
	target.mu.Unlock()
	vm.mu.Lock()
	atPause := vm.atPause
	vm.mu.Unlock()
	require.NotNil(t, atPause)
	require.NotNil(t, atStart)

	srcPages, dstPages := nonZero(atPause), nonZero(atStart)
	require.NotContains(t, srcPages, zeroedInPrecopy, "the guest zeroed it")
	require.NotContains(t, dstPages, zeroedInPrecopy, "zeroed in a pre-copy round: the target must not keep the old data")
	require.NotContains(t, dstPages, zeroedAtPause, "zeroed before the pause: the target must not keep the old data")
	require.Contains(t, srcPages, writtenAtPause)
	require.Contains(t, dstPages, writtenAtPause, "written just before the pause: collected after it")
	for p := range srcPages {
		require.Contains(t, dstPages, p, "page %d was not sent", p)
		require.Equal(t, srcPages[p], dstPages[p], "page %d differs", p)
	}
	require.Len(t, dstPages, len(srcPages), "the target has pages the source has not")
	require.Zero(t, zeroOntoFresh, "zero pages were sent to the fresh target in the first round")

	// The guest's state came along: it counts on from where it paused,
	// after the source's console history (serial_state.go), of which only
	// the line printed as the VM paused may have stayed behind.
	srcText := historyText(t, src.rt)
	srcTicks := ticksIn(srcText)
	require.NotEmpty(t, srcTicks)
	last := srcTicks[len(srcTicks)-1]
	next := fmt.Sprintf("tick %d\n", last+1)
	waitOutput(t, dst.rt, next)
	carried, _, _ := strings.Cut(historyText(t, dst.rt), next)
	require.True(t, strings.HasPrefix(srcText, carried), "the target's history begins with the source's")
	require.Contains(t, []string{"", fmt.Sprintf("tick %d\n", last)}, srcText[len(carried):],
		"the target's guest goes on from the source's last tick, after the source's history")
	require.True(t, vm.closed(), "the source let its VM go")
}

// TestMigrationServesOnlyTheArmedID: a source armed for one migration
// refuses the stream of any other id, and stays armed for its own.
func TestMigrationServesOnlyTheArmedID(t *testing.T) {
	src, dst := newRig(t, fakeGuest{TickEvery: time.Millisecond}), newRig(t, fakeGuest{})
	src.ensure(t, "armed")
	src.run(t)

	// Not armed at all.
	code, body, _ := upgradeMigration(t, src.addr, uuid.New())
	require.Equal(t, http.StatusNotFound, code, body)
	require.Contains(t, body, CodeNoSuchMigration)

	id, secret := armSource(t, src.rt)
	other := uuid.New()
	code, body, _ = upgradeMigration(t, src.addr, other)
	require.Equal(t, http.StatusNotFound, code, body)
	require.Contains(t, body, CodeNoSuchMigration)

	// A target that asks for another id gets nothing and fails.
	ensureTarget(t, dst.rt, src.addr, other, secret)
	waitState(t, dst.rt, StateFailed)
	st, err := src.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.Nil(t, st.Out, "nothing started on the source")
	got, err := src.rt.Instance(context.Background())
	require.NoError(t, err)
	require.Equal(t, StateRunning, got.State)

	// The failed target leaves its server free for a new instance.
	after := specRequest(t, "after")
	require.Eventually(t, func() bool {
		_, _, err := dst.rt.Ensure(context.Background(), after)
		return err == nil
	}, 10*time.Second, time.Millisecond)
	dst.run(t)

	// The armed id still works.
	dst2 := newRig(t, fakeGuest{})
	ensureTarget(t, dst2.rt, src.addr, id, secret)
	waitState(t, dst2.rt, StateRunning)
	waitState(t, src.rt, StateDestroyed)
}

// TestArmedIDServesOnce: an armed id opens one stream; once it was used
// (here by a target that went away), the same id is refused until armed
// again.
func TestArmedIDServesOnce(t *testing.T) {
	src := newRig(t, fakeGuest{TickEvery: time.Millisecond})
	src.ensure(t, "once")
	src.run(t)
	id, secret := armSource(t, src.rt)
	conn := openMigrationStream(t, src.addr, id, secret)
	conn.Close()
	waitOutbound(t, src.rt, PhaseFailed)
	waitState(t, src.rt, StateRunning)

	// A used id serves only its outcome, to a target that proves itself:
	// nothing was handed off.
	conn = openMigrationStream(t, src.addr, id, secret)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	f, err := migration.ReadFrame(conn, nil)
	require.NoError(t, err)
	require.Equal(t, migration.TypeAbort, f.Type, "a used id starts nothing")

	dst := newRig(t, fakeGuest{})
	ensureTarget(t, dst.rt, src.addr, id, secret)
	waitState(t, dst.rt, StateFailed)
	inst, err := src.rt.Instance(context.Background())
	require.NoError(t, err)
	require.Equal(t, StateRunning, inst.State, "the source runs on")

	// Armed again, it migrates.
	dst2 := newRig(t, fakeGuest{})
	id2, secret2 := armSource(t, src.rt)
	ensureTarget(t, dst2.rt, src.addr, id2, secret2)
	waitState(t, dst2.rt, StateRunning)
	waitState(t, src.rt, StateDestroyed)
}

// TestFailedMigrationLeavesTheSourceIntact: a migration that fails at the
// target's import leaves the source running, its RAM as it was, its guest
// counting on, and its VM its own.
func TestFailedMigrationLeavesTheSourceIntact(t *testing.T) {
	src := newRig(t, fakeGuest{})
	dst := newRig(t, fakeGuest{}, func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailDeviceImport: true} })
	_, vm := src.ensure(t, "stays")
	src.run(t)
	for range 40 {
		vm.step()
	}
	waitOutput(t, src.rt, "tick 40\n")
	before := vm.ram()

	migrate(t, src, dst)
	inst := waitState(t, dst.rt, StateFailed)
	require.Contains(t, inst.FailureReason, "import")
	out := waitOutbound(t, src.rt, PhaseFailed)
	require.NotEmpty(t, out.FailureReason)
	waitState(t, src.rt, StateRunning)

	require.False(t, vm.closed())
	require.Equal(t, before, vm.ram(), "the source's RAM is untouched")
	vm.step()
	waitOutput(t, src.rt, "tick 41\n")
	require.Eventually(t, func() bool { return dst.vms.last().closed() }, 10*time.Second, time.Millisecond,
		"the failed target let its VM go")
}

// TestStopDuringOutboundMigrationStopsTheVM: stop while a migration is in
// progress is honoured (204 over HTTP, not a 409 that did something): the
// migration is aborted, saying a stop was requested, and the instance goes
// migrating -> stopping -> stopped -> destroyed; the VM is stopped only
// once the aborted migration has resumed it (when it had paused it) and
// turned its dirty log off. A second stop meanwhile is no error either.
// The stream's timeouts are long: only the stop ends the migration.
func TestStopDuringOutboundMigrationStopsTheVM(t *testing.T) {
	for _, paused := range []bool{false, true} {
		t.Run(fmt.Sprintf("paused=%v", paused), func(t *testing.T) {
			a := newMigRig(t)
			vm := a.running(t)
			a.rt.mc.idle.set(time.Minute)
			a.rt.mc.build.set(time.Minute)
			before := a.instance(t)
			id, secret := a.arm(t)
			c, br := openStream(t, a.addr, id)
			proveAsTarget(t, c, br, id, secret)
			require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
			if paused {
				// Play the target up to the point where the source has
				// paused the VM and sent its state; then say nothing.
				sendFrame(t, c, migration.TypeReady, nil)
				for readFrame(t, c, br).Type != migration.TypeRoundEnd {
				}
				sendFrame(t, c, migration.TypeRoundAck, migration.RoundAck{Round: 0}.Encode())
				for readFrame(t, c, br).Type != migration.TypeStateDone {
				}
				vm.mu.Lock()
				phase := vm.phase
				vm.mu.Unlock()
				require.Equal(t, vmm.PhasePaused, phase, "the migration paused the VM")
			}
			require.Equal(t, StateMigrating, a.instance(t).State)

			r, err := a.c.InstanceStatePutWithResponse(context.Background(),
				api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedStop})
			require.NoError(t, err)
			require.Equal(t, http.StatusNoContent, r.StatusCode(), string(r.Body))
			require.NoError(t, request(a.rt, RequestStop), "a second stop: under way")

			all, err := watchFrom(a.rt, before.Gen, StateDestroyed)
			require.NoError(t, err)
			require.Equal(t, []State{StateMigrating, StateStopping, StateStopped, StateDestroyed}, statesOf(all))
			out := a.outbound(t)
			require.Equal(t, PhaseFailed, out.Phase)
			require.Contains(t, out.FailureReason, "stop was requested")
			require.True(t, vm.closed())
			vm.mu.Lock()
			exit, stopPhase, stopLogging := vm.exit, vm.stopPhase, vm.stopLogging
			vm.mu.Unlock()
			require.Equal(t, vmm.ExitStopped, exit.Reason, "the VM was stopped")
			require.Equal(t, vmm.PhaseRunning, stopPhase, "the abort resumed the VM before it was stopped")
			require.False(t, stopLogging, "the abort turned the dirty log off before the VM was stopped")
		})
	}
}

// TestGuestEndsDuringMigration: a guest that powers off while it is being
// migrated out ends the migration and its instance, as it would have
// without the migration.
func TestGuestEndsDuringMigration(t *testing.T) {
	src := newRig(t, fakeGuest{TickEvery: time.Millisecond})
	_, vm := src.ensure(t, "ends")
	src.run(t)
	id, secret := armSource(t, src.rt)
	_ = openMigrationStream(t, src.addr, id, secret)
	waitState(t, src.rt, StateMigrating)
	done := make(chan []Transition, 1)
	inst, err := src.rt.Instance(context.Background())
	require.NoError(t, err)
	go func() {
		var seen []Transition
		gen := inst.Gen
		for {
			got, _, hist, err := src.rt.WaitGen(context.Background(), gen)
			if err != nil {
				done <- seen
				return
			}
			seen = append(seen, hist...)
			gen = got.Gen
			if got.State == StateDestroyed || got.State == StateFailed {
				done <- seen
				return
			}
		}
	}()

	vm.powerOff(0)
	var seen []Transition
	select {
	case seen = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the instance did not end")
	}
	require.Equal(t, []State{StateStopping, StateStopped, StateDestroyed}, statesOf(seen))
	out := waitOutbound(t, src.rt, PhaseFailed)
	require.Contains(t, out.FailureReason, "guest ended")
	require.Eventually(t, vm.closed, 10*time.Second, time.Millisecond)
}

// TestTargetRefusesWhatTheHostCannotBack: a target whose host cannot back
// the source's VM fails, saying why, and the source runs on.
func TestTargetRefusesWhatTheHostCannotBack(t *testing.T) {
	src := newRig(t, fakeGuest{TickEvery: time.Millisecond})
	dst := newRig(t, fakeGuest{}, func(o *RuntimeOptions) {
		o.HostCapacity = func() (HostCapacity, error) { return HostCapacity{CPUs: 8, MemoryMiB: 16}, nil }
	})
	src.ensure(t, "big") // 32 MiB
	src.run(t)
	migrate(t, src, dst)
	inst := waitState(t, dst.rt, StateFailed)
	require.Contains(t, inst.FailureReason, "board.memory_mb: 32 MiB asked, this host can back at most 16 MiB")
	waitOutbound(t, src.rt, PhaseFailed)
	waitState(t, src.rt, StateRunning)
	require.Zero(t, dst.vms.count(), "nothing was built")
}

// TestMigrationNewestSpecVersionFirst: the source sends the spec in the
// newest version the target accepts that can express it. A target that
// accepts only the oldest version (as a released v1 build does) gets a
// spec v1 can say in v1, and the VM moves; a spec v1 cannot say (a
// pvpanic device) ends the migration before any RAM is sent, naming the
// field, and the source runs on.
func TestMigrationNewestSpecVersionFirst(t *testing.T) {
	oldTarget := func(o *RuntimeOptions) { o.FailPoints = FailPoints{FailOldestSpecVersion: true} }

	src, dst := newRig(t, fakeGuest{}), newRig(t, fakeGuest{}, oldTarget)
	src.ensure(t, "fits")
	src.run(t)
	migrate(t, src, dst)
	st, err := dst.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.Equal(t, PhaseCompleted, st.In.Phase, st.In.FailureReason)
	waitState(t, dst.rt, StateRunning)

	src, dst = newRig(t, fakeGuest{}), newRig(t, fakeGuest{}, oldTarget)
	withPanic, err := testSpec(t, 1, 32).ToBuilder().Add(spec.MustKey("panic0"), spec.PVPanic{}).Build()
	require.NoError(t, err)
	_, _, err = src.rt.Ensure(context.Background(), EnsureRequest{Properties: Properties{ID: uuid.New(), Name: "panics"}, Spec: &withPanic})
	require.NoError(t, err)
	src.run(t)
	migrate(t, src, dst)
	st, err = dst.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.Equal(t, PhaseFailed, st.In.Phase)
	out := waitOutbound(t, src.rt, PhaseFailed)
	require.Contains(t, out.FailureReason, "components.panic0", "the source names what the target's version cannot say")
	require.Contains(t, out.FailureReason, "preamble")
	require.Less(t, out.BytesSent, uint64(4096), "no page of RAM was sent, only the handshake")
	require.Zero(t, out.Rounds)
	waitState(t, src.rt, StateRunning)

	// A target that accepts v2 takes the same VM.
	dst = newRig(t, fakeGuest{})
	migrate(t, src, dst)
	st, err = dst.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.Equal(t, PhaseCompleted, st.In.Phase, st.In.FailureReason)
	_, got, err := dst.rt.Spec(context.Background())
	require.NoError(t, err)
	require.True(t, withPanic.Equal(*got), "the target's spec is the source's, pvpanic and all")
}
