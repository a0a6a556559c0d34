package server

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
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

// TestTargetRefusesBadRAMFrames: a source that proved itself and then
// sends RAM frames that are malformed, outside RAM or cut short fails the
// target with a reason that names the fault; nothing runs. RAM frames are
// read straight into guest memory (recvInto), so each fault must be caught
// before or while the bytes land, never by a decoder after them. Good
// frames before the bad one land where they say.
func TestTargetRefusesBadRAMFrames(t *testing.T) {
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, migration.PageSize) }
	ramHead := func(typ migration.Type, frameLen uint32, gpa uint64, dataLen uint32) []byte {
		b := []byte{byte(typ), 0, 0, 0}
		b = binary.BigEndian.AppendUint32(b, frameLen)
		b = binary.BigEndian.AppendUint64(b, gpa)
		return binary.BigEndian.AppendUint32(b, dataLen)
	}
	const ramSize = 32 << 20 // specRequest's board
	cases := []struct {
		name string
		send func(c net.Conn)
		want string
	}{
		{"data longer than its frame", func(c net.Conn) {
			_, _ = c.Write(append(ramHead(migration.TypeRAM, 12+migration.PageSize, 0x10000, 2*migration.PageSize), page(1)...))
		}, "data: 8192 bytes in a payload that leaves 4096"},
		{"a frame shorter than a RAM head", func(c net.Conn) {
			_, _ = c.Write([]byte{byte(migration.TypeRAM), 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4})
		}, "shorter than its 12-byte head"},
		{"pages past the end of RAM", func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypeRAM, migration.RAM{GPA: ramSize - migration.PageSize, Data: append(page(1), page(2)...)}.Encode())
		}, "outside guest RAM"},
		{"a GPA that wraps around", func(c net.Conn) {
			_, _ = c.Write(append(ramHead(migration.TypeRAM, 12+migration.PageSize, ^uint64(0)-migration.PageSize+1, migration.PageSize), page(1)...))
		}, "overflows"},
		{"an unaligned GPA", func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypeRAM, migration.RAM{GPA: 0x10001, Data: page(1)}.Encode())
		}, "not page aligned"},
		{"part of a page", func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypeRAM, migration.RAM{GPA: 0x10000, Data: []byte{1, 2, 3}}.Encode())
		}, "not a whole number of pages"},
		{"more pages than a frame carries", func(c net.Conn) {
			n := uint32(migration.MaxPagesPerFrame+1) * migration.PageSize
			_, _ = c.Write(ramHead(migration.TypeRAM, 12+n, 0, n))
		}, "at most 1048576"},
		{"data cut short", func(c net.Conn) {
			_, _ = c.Write(append(ramHead(migration.TypeRAM, 12+8*migration.PageSize, 0x10000, 8*migration.PageSize), page(1)...))
			_ = c.(*net.TCPConn).CloseWrite()
		}, "RAM payload truncated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newMigRig(t)
			secret, id := migration.NewSecret(), uuid.New()
			landed := make(chan []byte, 1)
			addr, _ := fakeSource(t, func(c net.Conn, br *bufio.Reader) {
				if !playProvenSource(c, br, id, secret, migration.ProtocolV1) {
					return
				}
				// Two good frames first: they land in guest memory.
				_ = migration.WriteFrame(c, migration.TypeRAM, migration.RAM{GPA: 0x20000, Data: append(page(7), page(8)...)}.Encode())
				_ = migration.WriteFrame(c, migration.TypeRAM, migration.RAM{GPA: 0x40000, Data: page(9)}.Encode())
				tc.send(c)
				if vm := b.vms.last(); vm != nil {
					assert.Eventually(t, func() bool { return len(vm.ram()) >= 3 }, 10*time.Second, time.Millisecond)
					ram := vm.ram()
					landed <- slices.Concat(ram[0x20], ram[0x21], ram[0x40])
				}
			})
			b.ensureTarget(t, id, addr, secret)
			reason := b.failure(t)
			require.Contains(t, reason, tc.want)
			select {
			case got := <-landed:
				require.Equal(t, slices.Concat(page(7), page(8), page(9)), got, "the good frames landed where they said")
			case <-time.After(10 * time.Second):
				t.Fatal("the target built no VM")
			}
			require.Equal(t, StateFailed, b.instance(t).State)
		})
	}
}

// playProvenSource plays a source that holds secret: it answers the
// upgrade, chooses protocol, proves itself, checks the target's proof,
// sends a preamble of specRequest's board and waits for Ready. It reports
// whether all went so.
func playProvenSource(c net.Conn, br *bufio.Reader, id uuid.UUID, secret string, protocol uint32) bool {
	answerUpgrade(c)
	hello, err := readHello(c, br)
	if err != nil {
		return false
	}
	w := migration.Welcome{Protocol: protocol, Nonce: migration.NewNonce()}
	w.Proof = migration.Prove(secret, migration.RoleSource, id, hello.Nonce, w.Nonce)
	if migration.WriteFrame(c, migration.TypeWelcome, w.Encode()) != nil {
		return false
	}
	f, err := migration.ReadFrame(br, nil)
	if err != nil || f.Type != migration.TypeProof {
		return false
	}
	p, err := migration.DecodeProof(f.Payload)
	if err != nil || !migration.CheckProof(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce, p.Proof) {
		return false
	}
	env := []byte(`{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":32,"chipset":"i440fx"},"components":{}}}`)
	if migration.WriteFrame(c, migration.TypePreamble, migration.Preamble{Envelope: env}.Encode()) != nil {
		return false
	}
	f, err = migration.ReadFrame(br, nil)
	return err == nil && f.Type == migration.TypeReady
}

// TestTargetRefusesBadPlans: a Plan (protocol 2) is advice the target acts
// on in the background, so it is checked before anything is populated: a
// Plan in protocol 1, after pages came, beyond MaxPlanFrames, malformed or
// naming memory outside the guest's RAM ends the migration, saying why.
func TestTargetRefusesBadPlans(t *testing.T) {
	const ramSize = 32 << 20 // specRequest's board
	plan := func(rs ...migration.PlanRange) []byte { return migration.Plan{Ranges: rs}.Encode() }
	good := plan(migration.PlanRange{GPA: 0x10000, Pages: 4})
	cases := []struct {
		name     string
		protocol uint32
		send     func(c net.Conn)
		want     string
	}{
		{"a Plan in protocol 1", migration.ProtocolV1, func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypePlan, good)
		}, "a Plan in protocol 1"},
		{"past the end of RAM", migration.ProtocolV2, func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypePlan, plan(migration.PlanRange{GPA: ramSize - migration.PageSize, Pages: 2}))
		}, "the plan: malformed frame: pages at 0x1fff000"},
		{"far outside RAM", migration.ProtocolV2, func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypePlan, plan(migration.PlanRange{GPA: 1 << 40, Pages: 1 << 30}))
		}, "outside guest RAM"},
		{"overlapping ranges", migration.ProtocolV2, func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypePlan, plan(migration.PlanRange{GPA: 0, Pages: 4}, migration.PlanRange{GPA: 0x2000, Pages: 1}))
		}, "begins before the end"},
		{"after a page", migration.ProtocolV2, func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypeRAM, migration.RAM{GPA: 0x10000, Data: make([]byte, migration.PageSize)}.Encode())
			_ = migration.WriteFrame(c, migration.TypePlan, good)
		}, "a Plan after the first round began"},
		{"after a round", migration.ProtocolV2, func(c net.Conn) {
			_ = migration.WriteFrame(c, migration.TypeRoundEnd, migration.RoundEnd{Round: 0}.Encode())
			_ = migration.WriteFrame(c, migration.TypePlan, good)
		}, "a Plan after the first round began"},
		{"one Plan frame too many", migration.ProtocolV2, func(c net.Conn) {
			for range migration.MaxPlanFrames + 1 {
				_ = migration.WriteFrame(c, migration.TypePlan, good)
			}
		}, "more than 16 Plan frames"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newMigRig(t)
			secret, id := migration.NewSecret(), uuid.New()
			addr, _ := fakeSource(t, func(c net.Conn, br *bufio.Reader) {
				if playProvenSource(c, br, id, secret, tc.protocol) {
					tc.send(c)
				}
			})
			b.ensureTarget(t, id, addr, secret)
			require.Contains(t, b.failure(t), tc.want)
			if vm := b.vms.last(); vm != nil && tc.name != "one Plan frame too many" {
				vm.mu.Lock()
				defer vm.mu.Unlock()
				require.Empty(t, vm.prefaulted, "nothing was populated for a refused plan")
			}
		})
	}
}

// TestPlanIsProtocol2: a source sends a Plan of exactly the pages its first
// round sends, before them, to a target that speaks protocol 2, which takes
// it and populates none but those pages; to a target that speaks only
// protocol 1 it sends none, and the stream is protocol 1's.
func TestPlanIsProtocol2(t *testing.T) {
	t.Run("both speak 2", func(t *testing.T) {
		a, b := newMigRig(t), newMigRig(t)
		vm := a.running(t)
		touched := slices.Sorted(maps.Keys(vm.ram()))
		id, secret := a.arm(t)
		b.ensureTarget(t, id, a.addr, secret)
		waitState(t, b.rt, StateRunning)
		target := b.vms.last()
		target.mu.Lock()
		prefaulted := slices.Sorted(maps.Keys(target.prefaulted))
		target.mu.Unlock()
		require.NotEmpty(t, touched)
		// The target took the plan; it populates in the background until
		// the first round ends (here, a few pages: it may have had no
		// time to), and never anything the plan did not name.
		require.Contains(t, b.log.String(), fmt.Sprintf(`msg="migration plan" migration=%s ranges=%d pages=%d`,
			id, len(slices.Collect(runsOf(touched))), len(touched)))
		require.Subset(t, touched, prefaulted, "the target populated only the plan's pages")
	})
	for _, offered := range [][]uint32{{migration.ProtocolV1}, {migration.ProtocolV1, migration.ProtocolV2}} {
		t.Run(fmt.Sprintf("a target offering %v", offered), func(t *testing.T) {
			a := newMigRig(t)
			vm := a.running(t)
			touched := uint64(len(vm.ram()))
			id, secret := a.arm(t)
			c, br := openStream(t, a.addr, id)
			hello := targetHello(id)
			hello.Protocols = offered
			w := helloWelcome(t, c, br, hello)
			require.Equal(t, slices.Max(offered), w.Protocol, "the newest both speak")
			sendFrame(t, c, migration.TypeProof, migration.Proof{Proof: migration.Prove(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce)}.Encode())
			require.Equal(t, migration.TypePreamble, readFrame(t, c, br).Type)
			sendFrame(t, c, migration.TypeReady, nil)
			var plans []migration.Plan
			for {
				f := readFrame(t, c, br)
				if f.Type == migration.TypePlan {
					p, err := migration.DecodePlan(f.Payload)
					require.NoError(t, err)
					plans = append(plans, p)
				}
				if f.Type == migration.TypeRAM || f.Type == migration.TypeRoundEnd {
					break
				}
			}
			if w.Protocol == migration.ProtocolV1 {
				require.Empty(t, plans, "no Plan in protocol 1")
				return
			}
			require.Len(t, plans, 1)
			var pages uint64
			for _, r := range plans[0].Ranges {
				pages += r.Pages
			}
			require.Equal(t, touched, pages, "the plan names the pages the guest touched")
		})
	}
}

// runsOf yields the first page of each run of consecutive pages in sorted.
func runsOf(sorted []uint64) func(yield func(uint64) bool) {
	return func(yield func(uint64) bool) {
		for i, p := range sorted {
			if (i == 0 || sorted[i-1]+1 != p) && !yield(p) {
				return
			}
		}
	}
}
