package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/vmm/devices"
)

// Tests of the serial console's history in a migration (migrate_history.go,
// serial_state.go): it crosses between today's builds; a target that does
// not list it (a released build) gets none, and one that gets none (from a
// released source) starts empty; a bad one ends the migration, the source
// running.

// frameProxy stands between a target and its source and forwards the
// migration stream frame by frame, letting a test change the target's
// Hello (as an older target would say it) and the source's Device frames
// (as an older or a broken source would send them). The proofs cover
// neither, so both sides go on. It records the Device frames the source
// sent.
type frameProxy struct {
	addr string
	// hello, if set, changes the target's Hello on its way.
	hello func(h *migration.Hello)
	// device, if set, says what to forward instead of a Device frame.
	device func(d migration.Device) []migration.Device

	mu   sync.Mutex
	sent []migration.Device
}

func newFrameProxy(t *testing.T, to string) *frameProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &frameProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			stop := func() { c.Close(); s.Close() }
			t.Cleanup(stop)
			wg.Add(2)
			go func() { defer wg.Done(); defer stop(); p.pipe(c, s, p.fromTarget) }()
			go func() { defer wg.Done(); defer stop(); p.pipe(s, c, p.fromSource) }()
		}
	}()
	return p
}

// pipe copies the HTTP head (the upgrade request or its answer) from r to
// w as it is, then frames, each through change.
func (p *frameProxy) pipe(r io.Reader, w io.Writer, change func(migration.Frame) []migration.Frame) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(w, line); err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	for {
		f, err := migration.ReadFrame(br, nil)
		if err != nil {
			return
		}
		for _, out := range change(f) {
			if err := migration.WriteFrame(w, out.Type, out.Payload); err != nil {
				return
			}
		}
	}
}

func (p *frameProxy) fromTarget(f migration.Frame) []migration.Frame {
	if f.Type == migration.TypeHello && p.hello != nil {
		if h, err := migration.DecodeHello(f.Payload); err == nil {
			p.hello(&h)
			f.Payload = h.Encode()
		}
	}
	return []migration.Frame{f}
}

func (p *frameProxy) fromSource(f migration.Frame) []migration.Frame {
	if f.Type != migration.TypeDevice {
		return []migration.Frame{f}
	}
	d, err := migration.DecodeDevice(f.Payload)
	if err != nil {
		return []migration.Frame{f}
	}
	d.Data = slices.Clone(d.Data)
	p.mu.Lock()
	p.sent = append(p.sent, d)
	p.mu.Unlock()
	if p.device == nil {
		return []migration.Frame{f}
	}
	var out []migration.Frame
	for _, dd := range p.device(d) {
		out = append(out, migration.Frame{Type: migration.TypeDevice, Payload: dd.Encode()})
	}
	return out
}

// histories returns the serial history frames the source sent.
func (p *frameProxy) histories() []migration.Device {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []migration.Device
	for _, d := range p.sent {
		if d.Kind == serialHistoryKind {
			out = append(out, d)
		}
	}
	return out
}

// withoutHistory is a Hello as a released (v0.1.0) target says it: no
// serial history among the kinds it imports.
func withoutHistory(h *migration.Hello) {
	h.Devices = slices.DeleteFunc(h.Devices, func(d migration.DeviceVersions) bool { return d.Kind == serialHistoryKind })
}

// historyOf reads a rig's whole kept serial history.
func historyOf(t *testing.T, g *rig) SerialHistory {
	t.Helper()
	h, err := g.rt.SerialHistory(context.Background(), SerialQuery{FromStart: u64(0), MaxBytes: 1 << 20})
	require.NoError(t, err)
	return h
}

// historyOverHTTP reads the history through the API version's endpoint.
func historyOverHTTP(t *testing.T, g *rig, version string, fromStart uint64) SerialHistory {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/%s/instance/serial/history?from_start=%d&max_bytes=1048576", g.srv.URL, version, fromStart))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body struct {
		Data       []byte
		Start, End uint64
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return SerialHistory{Data: body.Data, Start: body.Start, End: body.End}
}

// consoleReads attaches a console to g through the API version and reads
// until it has seen want.
func consoleReads(t *testing.T, g *rig, version, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+g.addr+"/"+version+"/instance/serial", nil)
	require.NoError(t, err)
	defer ws.CloseNow()
	var got strings.Builder
	for !strings.Contains(got.String(), want) {
		_, data, err := ws.Read(ctx)
		require.NoError(t, err, "%s console read so far: %q, want %q", version, got.String(), want)
		got.Write(data)
	}
	require.True(t, strings.HasPrefix(got.String(), want), "%s console: %q begins with the history %q", version, got.String(), want)
}

// ticking makes a rig whose guest printed n ticks (stepped by hand: nothing
// is printed while the VM pauses) and returns its VM.
func ticking(t *testing.T, n int, opt ...func(*RuntimeOptions)) (*rig, *fakeVM) {
	t.Helper()
	g := newRig(t, fakeGuest{}, opt...)
	_, vm := g.ensure(t, "printer")
	g.run(t)
	for range n {
		vm.step()
	}
	waitOutput(t, g.rt, fmt.Sprintf("tick %d\n", n))
	return g, vm
}

// migrated waits for the migration between src and dst, through p when
// not nil, to complete.
func migrated(t *testing.T, src, dst *rig, p *frameProxy) {
	t.Helper()
	id, secret := armSource(t, src.rt)
	addr := src.addr
	if p != nil {
		addr = p.addr
	}
	ensureTarget(t, dst.rt, addr, id, secret)
	waitState(t, dst.rt, StateRunning)
	waitState(t, src.rt, StateDestroyed)
	st, err := dst.rt.MigrationStatus(context.Background())
	require.NoError(t, err)
	require.Equal(t, PhaseCompleted, st.In.Phase, st.In.FailureReason)
}

// TestSerialHistoryCrossesAMigration: between today's builds, the target's
// history is the source's, at the source's offsets (here past its start:
// the source kept only its last bytes), through both API versions and on a
// console attached after the migration; the guest's next output follows at
// the source's end offset. A target that keeps less keeps the last of it.
// The head goes before the pause; the tail, sent in the pause, carries
// only what the guest printed during the pre-copy.
func TestSerialHistoryCrossesAMigration(t *testing.T) {
	for _, c := range []struct {
		dstKeep  int
		inPrecpy bool
	}{{0, false}, {40, false}, {0, true}, {40, true}} {
		t.Run(fmt.Sprintf("target keeps %d, printing during the pre-copy %v", c.dstKeep, c.inPrecpy), func(t *testing.T) {
			src, vm := ticking(t, 30, func(o *RuntimeOptions) { o.SerialKeep = 100 })
			head := historyOf(t, src)
			require.NotZero(t, head.Start, "the source dropped its oldest bytes")
			require.Len(t, head.Data, 100)
			last := 30
			if c.inPrecpy {
				last = 31
				vm.mu.Lock()
				vm.afterCollect = func(n int) {
					if n == 1 { // round 0 is sent; the VM runs
						vm.step()
					}
				}
				vm.mu.Unlock()
			}

			dst := newRig(t, fakeGuest{}, func(o *RuntimeOptions) { o.SerialKeep = c.dstKeep })
			p := newFrameProxy(t, src.addr)
			migrated(t, src, dst, p)
			before := historyOf(t, src) // as the source paused
			require.Contains(t, string(before.Data), fmt.Sprintf("tick %d\n", last))

			sent := p.histories()
			require.Len(t, sent, 2, "the head and the tail")
			require.Equal(t, serialHistoryKey, sent[0].Key)
			require.Equal(t, serialHistoryTailKey, sent[1].Key)
			tail, err := decodeSerialHistory(devices.Payload{Kind: sent[1].Kind, Version: sent[1].Version, Data: sent[1].Data})
			require.NoError(t, err)
			require.Equal(t, before.End, tail.End)
			require.Equal(t, string(before.Data[len(before.Data)-int(before.End-head.End):]), string(tail.Data),
				"the tail is only what was printed after the head")

			// The target keeps the head and the tail, which may be more than
			// the source keeps now; at most what it keeps itself.
			all := append(slices.Clone(head.Data), tail.Data...)
			if c.dstKeep > 0 {
				all = all[len(all)-c.dstKeep:]
			}
			want := SerialHistory{Data: all, Start: before.End - uint64(len(all)), End: before.End}
			require.True(t, strings.HasSuffix(string(want.Data), string(before.Data[len(before.Data)-min(len(before.Data), len(want.Data)):])))
			got := historyOf(t, dst)
			require.Equal(t, string(want.Data), string(got.Data))
			require.Equal(t, want.Start, got.Start, "offsets go on from the source's")
			require.Equal(t, want.End, got.End)
			for _, v := range []string{"v1", "v2"} {
				h := historyOverHTTP(t, dst, v, 0)
				require.Equal(t, string(want.Data), string(h.Data), v)
				require.Equal(t, want.Start, h.Start, v)
				require.Equal(t, want.End, h.End, v)
				consoleReads(t, dst, v, string(want.Data))
			}

			dst.vms.last().step()
			nextLine := fmt.Sprintf("tick %d\n", last+1)
			waitOutput(t, dst.rt, nextLine)
			next := historyOverHTTP(t, dst, "v2", before.End)
			require.Equal(t, nextLine, string(next.Data), "a reader's from_start at the source's end gets the guest's next line")
			require.Equal(t, before.End, next.Start)
		})
	}
}

// TestSerialHistoryNeedsBothSides: a target that does not list the kind
// (as v0.1.0's does not) gets no history frame and the migration
// completes, its console starting empty at offset 0, as before; a target
// that gets none (a v0.1.0 source sends none) does the same.
func TestSerialHistoryNeedsBothSides(t *testing.T) {
	cases := map[string]func(p *frameProxy){
		"released target": func(p *frameProxy) { p.hello = withoutHistory },
		"released source": func(p *frameProxy) {
			p.device = func(d migration.Device) []migration.Device {
				if d.Kind == serialHistoryKind {
					return nil
				}
				return []migration.Device{d}
			}
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			src, _ := ticking(t, 5)
			dst := newRig(t, fakeGuest{})
			p := newFrameProxy(t, src.addr)
			setup(p)
			migrated(t, src, dst, p)
			if name == "released target" {
				require.Empty(t, p.histories(), "no history to a target that did not ask for it")
			}
			got := historyOf(t, dst)
			require.Empty(t, got.Data)
			require.Zero(t, got.End)
			dst.vms.last().step()
			waitOutput(t, dst.rt, "tick 6\n")
			got = historyOf(t, dst)
			require.Equal(t, "tick 6\n", string(got.Data), "the guest goes on, its console from 0")
			require.Zero(t, got.Start)
		})
	}
}

// TestBadSerialHistoryEndsTheMigration: a head or a tail that is
// oversized, malformed, under another key, in a version the target did
// not offer, or sent twice, a head after the tail and a tail that ends
// before the head each end the migration: the target fails saying what
// was wrong (naming the field), and the source runs on, its history as it
// was, its guest printing on.
func TestBadSerialHistoryEndsTheMigration(t *testing.T) {
	replace := func(data []byte) func(d migration.Device) []migration.Device {
		return func(d migration.Device) []migration.Device { d.Data = data; return []migration.Device{d} }
	}
	type bad struct {
		name   string
		change func(d migration.Device) []migration.Device
		says   string
	}
	cases := []bad{
		{"length over the bound", replace(historyPayload(1<<30, maxSerialHistory+1, []byte("x")).Data), "length 1048565, at most 1048564"},
		{"payload over the bound", replace(historyPayload(1<<30, maxSerialHistory+1, make([]byte, maxSerialHistory+1)).Data),
			fmt.Sprintf("data: %d bytes, at most %d", migration.MaxDeviceState+1, migration.MaxDeviceState)},
		{"truncated", replace(historyPayload(9, 4, []byte("ab")).Data), "length 4, but 2 bytes follow"},
		{"more than was printed", replace(historyPayload(2, 3, []byte("abc")).Data), "over the end offset 2"},
		{"end offset over the bound", replace(historyPayload(maxSerialOffset+1, 0, nil).Data), "end offset"},
		{"another key", func(d migration.Device) []migration.Device { d.Key = "com2"; return []migration.Device{d} },
			`under key "com2"`},
		{"a version not offered", func(d migration.Device) []migration.Device { d.Version = 2; return []migration.Device{d} },
			`"serial_history" state version 2`},
		{"twice", func(d migration.Device) []migration.Device { return []migration.Device{d, d} }, "sent twice"},
	}
	type run struct {
		name string
		// change, given each history frame in turn, says what to forward.
		change func(i int, d migration.Device) []migration.Device
		says   string
	}
	var runs []run
	for _, c := range cases {
		for piece, name := range []string{"head", "tail"} {
			runs = append(runs, run{name + ": " + c.name, func(i int, d migration.Device) []migration.Device {
				if i == piece {
					return c.change(d)
				}
				return []migration.Device{d}
			}, c.says})
		}
	}
	runs = append(runs,
		run{"head after tail", func(i int, d migration.Device) []migration.Device {
			d.Key = []string{serialHistoryTailKey, serialHistoryKey}[i]
			return []migration.Device{d}
		}, "head came after its tail"},
		run{"tail ends before head", func(i int, d migration.Device) []migration.Device {
			if i == 1 {
				d.Data = historyPayload(3, 0, nil).Data
			}
			return []migration.Device{d}
		}, "tail ends at offset 3, before its head"},
	)
	for _, c := range runs {
		t.Run(c.name, func(t *testing.T) {
			src, vm := ticking(t, 5)
			before := historyOf(t, src)
			dst := newRig(t, fakeGuest{})
			p := newFrameProxy(t, src.addr)
			var n int
			p.device = func(d migration.Device) []migration.Device {
				if d.Kind != serialHistoryKind {
					return []migration.Device{d}
				}
				n++
				return c.change(n-1, d)
			}
			id, secret := armSource(t, src.rt)
			ensureTarget(t, dst.rt, p.addr, id, secret)
			inst := waitState(t, dst.rt, StateFailed)
			require.Contains(t, inst.FailureReason, c.says)
			out := waitOutbound(t, src.rt, PhaseFailed)
			// The target's Abort says why, but a target that hangs up with
			// frames unread resets the stream, which may lose it.
			require.NotEmpty(t, out.FailureReason)
			waitState(t, src.rt, StateRunning)

			require.False(t, vm.closed())
			after := historyOf(t, src)
			require.Equal(t, before, after, "the source's history is as it was")
			vm.step()
			waitOutput(t, src.rt, "tick 6\n")
			require.Equal(t, before.End, historyOf(t, src).End-uint64(len("tick 6\n")), "and goes on")
			require.Eventually(t, func() bool { return dst.vms.last().closed() }, 10*time.Second, time.Millisecond,
				"the failed target let its VM go")
		})
	}
}

// TestSourceSendsTheHistoryOnlyInAVersionItWrites: a target that lists
// the kind only in versions this build does not write gets none, and the
// migration completes.
func TestSourceSendsTheHistoryOnlyInAVersionItWrites(t *testing.T) {
	src, _ := ticking(t, 3)
	dst := newRig(t, fakeGuest{})
	p := newFrameProxy(t, src.addr)
	p.hello = func(h *migration.Hello) {
		for i := range h.Devices {
			if h.Devices[i].Kind == serialHistoryKind {
				h.Devices[i].Versions = []uint32{7}
			}
		}
	}
	migrated(t, src, dst, p)
	require.Empty(t, p.histories())
	require.Zero(t, historyOf(t, dst).End)
}
