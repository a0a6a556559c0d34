package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	n, err := countFDs()
	if err != nil {
		t.Skipf("cannot count open fds: %v", err)
	}
	return n
}

// countFDs is openFDs for Eventually's conditions, which must fail nothing.
func countFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	return len(ents), err
}

func consoleURL(g *rig) string { return "ws://" + g.addr + "/v1/instance/serial" }

// TestSerialHistoryIsAStringBeforeAnyOutput: before the guest printed
// anything, data is "" (the contract's required string), never null.
func TestSerialHistoryIsAStringBeforeAnyOutput(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.ensure(t, "quiet")
	resp, err := http.Get(g.srv.URL + "/v1/instance/serial/history")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "", body["data"], "data is a string: %v", body)
	require.EqualValues(t, 0, body["start"])
	require.EqualValues(t, 0, body["end"])

	// A query past the end is empty too, and a string.
	resp2, err := http.Get(g.srv.URL + "/v1/instance/serial/history?from_start=100")
	require.NoError(t, err)
	defer resp2.Body.Close()
	body = nil
	require.NoError(t, json.NewDecoder(resp2.Body).Decode(&body))
	require.Equal(t, "", body["data"])
}

// TestSerialHistoryOffsets checks from_start, most_recent and max_bytes
// against the guest's whole output, exactly, while older bytes are dropped.
func TestSerialHistoryOffsets(t *testing.T) {
	const keep = 64
	g := newRig(t, fakeGuest{}, func(o *RuntimeOptions) { o.SerialKeep = keep })
	_, vm := g.ensure(t, "offsets")
	g.run(t)
	for range 30 {
		vm.step()
	}
	want := "ticker ready\n"
	for i := 1; i <= 30; i++ {
		want += fmt.Sprintf("tick %d\n", i)
	}
	waitOutput(t, g.rt, "tick 30\n")
	total := uint64(len(want))
	first := total - keep // the oldest byte kept

	query := func(q SerialQuery) SerialHistory {
		h, err := g.rt.SerialHistory(context.Background(), q)
		require.NoError(t, err)
		require.Equal(t, want[h.Start:h.End], string(h.Data), "data is the output between its offsets")
		return h
	}
	check := func(q SerialQuery, start, end uint64) {
		t.Helper()
		h := query(q)
		require.Equal(t, start, h.Start, "start")
		require.Equal(t, end, h.End, "end")
	}
	check(SerialQuery{MaxBytes: 1 << 20}, first, total)
	check(SerialQuery{MaxBytes: 10}, first, first+10)
	check(SerialQuery{FromStart: u64(0), MaxBytes: 1 << 20}, first, total)
	check(SerialQuery{FromStart: u64(first + 5), MaxBytes: 7}, first+5, first+12)
	check(SerialQuery{FromStart: u64(total - 3), MaxBytes: 100}, total-3, total)
	check(SerialQuery{FromStart: u64(total), MaxBytes: 100}, total, total)
	check(SerialQuery{FromStart: u64(total + 50), MaxBytes: 100}, total, total)
	check(SerialQuery{MostRecent: u64(5), MaxBytes: 100}, total-5, total)
	check(SerialQuery{MostRecent: u64(5), MaxBytes: 2}, total-5, total-3)
	check(SerialQuery{MostRecent: u64(0), MaxBytes: 100}, total, total)
	check(SerialQuery{MostRecent: u64(keep + 20), MaxBytes: 1 << 20}, first, total)
	check(SerialQuery{MostRecent: u64(total + 20), MaxBytes: 1 << 20}, first, total)
	check(SerialQuery{FromStart: u64(first), MaxBytes: 0}, first, first)

	// Over HTTP the same offsets come back.
	resp, err := http.Get(fmt.Sprintf("%s/v1/instance/serial/history?from_start=%d&max_bytes=7", g.srv.URL, first+5))
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Data       []byte
		Start, End uint64
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, want[first+5:first+12], string(body.Data))
	require.Equal(t, first+5, body.Start)
	require.Equal(t, first+12, body.End)
}

// TestConsoleEchoesInput: bytes sent on the console reach the guest, and
// its output comes back.
func TestConsoleEchoesInput(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.ensure(t, "echo")
	g.run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, consoleURL(g), nil)
	require.NoError(t, err)
	defer ws.CloseNow()
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, []byte("hello")))
	var got strings.Builder
	for !strings.Contains(got.String(), "echo hello\n") {
		_, data, err := ws.Read(ctx)
		require.NoError(t, err, "read so far: %q", got.String())
		got.Write(data)
	}
}

// TestConsoleLimit: at most MaxConsoles consoles are attached; one more is
// refused with 429 too_many_consoles until one goes.
func TestConsoleLimit(t *testing.T) {
	const limit = 3
	g := newRig(t, fakeGuest{}, func(o *RuntimeOptions) { o.MaxConsoles = limit })
	g.ensure(t, "limit")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conns []*websocket.Conn
	for range limit {
		ws, _, err := websocket.Dial(ctx, consoleURL(g), nil)
		require.NoError(t, err)
		defer ws.CloseNow()
		conns = append(conns, ws)
	}
	_, resp, err := websocket.Dial(ctx, consoleURL(g), nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	body, _ := io.ReadAll(resp.Body)
	require.Contains(t, string(body), CodeTooManyConsoles)

	_, err = g.rt.SerialAttach(ctx)
	require.ErrorIs(t, err, ErrTooManyConsoles)

	conns[0].CloseNow()
	require.Eventually(t, func() bool { return g.rt.consoles.attached() < limit }, 10*time.Second, time.Millisecond)
	ws, _, err := websocket.Dial(ctx, consoleURL(g), nil)
	require.NoError(t, err, "a place is free again")
	ws.CloseNow()

	// Closing a console twice gives back one place only.
	var c SerialConn
	require.Eventually(t, func() bool {
		var err error
		c, err = g.rt.SerialAttach(ctx)
		return err == nil
	}, 10*time.Second, time.Millisecond)
	n := g.rt.consoles.attached()
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	require.Equal(t, n-1, g.rt.consoles.attached())
}

// TestConsoleCyclesLeakNothing opens and drops the console 10,000 times,
// the guest printing all along (so the server's writes meet clients that
// are gone), and checks that the process's open fds come back to where
// they started.
func TestConsoleCyclesLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 console cycles")
	}
	g := newRig(t, fakeGuest{TickEvery: 100 * time.Microsecond}, func(o *RuntimeOptions) { o.MaxConsoles = 1 << 20 })
	g.ensure(t, "cycles")
	g.run(t)
	waitOutput(t, g.rt, "tick 1\n")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	ctx := context.Background()
	// One cycle first, so that lazily opened descriptors are counted.
	ws, _, err := websocket.Dial(ctx, consoleURL(g), &websocket.DialOptions{HTTPClient: client})
	require.NoError(t, err)
	ws.CloseNow()
	require.Eventually(t, func() bool { return g.rt.consoles.attached() == 0 }, 10*time.Second, time.Millisecond)
	before := openFDs(t)

	const cycles = 10000
	for i := range cycles {
		ws, _, err := websocket.Dial(ctx, consoleURL(g), &websocket.DialOptions{HTTPClient: client})
		require.NoError(t, err, "cycle %d", i)
		if i%2 == 0 {
			// Half the clients wait for a byte, so that the server is
			// writing when they go.
			_, _, _ = ws.Read(ctx)
		}
		ws.CloseNow()
	}
	const slack = 8
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Zero(c, g.rt.consoles.attached(), "consoles attached")
		n, err := countFDs()
		if assert.NoError(c, err) {
			assert.LessOrEqual(c, n, before+slack, "open fds, %d before", before)
		}
	}, 30*time.Second, 10*time.Millisecond)
}

// TestConsoleSlowReaderIsCutOff: a client that reads nothing while the
// guest prints is cut off once a write has waited consoleWriteTimeout,
// rather than holding its console (and a socket) for ever.
func TestConsoleSlowReaderIsCutOff(t *testing.T) {
	old := consoleWriteTimeout
	consoleWriteTimeout = 200 * time.Millisecond
	defer func() { consoleWriteTimeout = old }()

	g := newRig(t, fakeGuest{})
	g.ensure(t, "slow")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, consoleURL(g), nil)
	require.NoError(t, err)
	defer ws.CloseNow()
	require.Eventually(t, func() bool { return g.rt.consoles.attached() == 1 }, 10*time.Second, time.Millisecond)

	g.rt.mu.Lock()
	log := g.rt.serial
	g.rt.mu.Unlock()
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = 'x'
	}
	// Far more than the socket buffers hold; the guest never waits.
	for range 512 {
		_, _ = log.Write(chunk)
	}
	require.Eventually(t, func() bool { return g.rt.consoles.attached() == 0 }, 20*time.Second, 5*time.Millisecond,
		"the server let the console go")
}

// readToClose reads the console until the server closes it (within 20 s)
// and returns what it printed and the close status and reason.
func readToClose(t *testing.T, ws *websocket.Conn) (string, websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			require.ErrorAs(t, err, &ce, "the server closed the console with a close frame")
			return out.String(), ce.Code, ce.Reason
		}
		out.Write(data)
	}
}

// dialConsole attaches a console to g's instance over a real WebSocket and
// waits until the instance's console counts it (when the instance's VM
// is gone, a console is let go at once: use dialEndedConsole).
func dialConsole(t *testing.T, g *rig) *websocket.Conn {
	t.Helper()
	g.rt.mu.Lock()
	log := g.rt.serial
	g.rt.mu.Unlock()
	before := log.subscribers()
	ws := dialEndedConsole(t, g)
	require.Eventually(t, func() bool { return log.subscribers() == before+1 }, 10*time.Second, time.Millisecond)
	return ws
}

// dialEndedConsole attaches a console to g's instance over a real
// WebSocket.
func dialEndedConsole(t *testing.T, g *rig) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, consoleURL(g), nil)
	require.NoError(t, err)
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(1 << 20)
	return ws
}

// TestConsoleCloseSaysWhy: the console's WebSocket is closed as the
// contract says: 1000, with what happened as the reason, when the
// instance's console ends (the VM stopped, failed, or migrated away; also
// for a console attached after the end); 1008 "reader fell behind" when a
// reader fell too far behind.
func TestConsoleCloseSaysWhy(t *testing.T) {
	t.Run("stopped", func(t *testing.T) {
		g := newRig(t, fakeGuest{})
		g.ensure(t, "stops")
		ws := dialConsole(t, g)
		g.run(t)
		require.NoError(t, request(g.rt, RequestStop))
		out, code, reason := readToClose(t, ws)
		require.Equal(t, "ticker ready\n", out)
		require.Equal(t, websocket.StatusNormalClosure, code)
		require.Equal(t, consoleVMStopped, reason)

		// Attached after the end: the kept bytes, then the same close.
		waitState(t, g.rt, StateDestroyed)
		out, code, reason = readToClose(t, dialEndedConsole(t, g))
		require.Equal(t, "ticker ready\n", out)
		require.Equal(t, websocket.StatusNormalClosure, code)
		require.Equal(t, consoleVMStopped, reason)
	})
	t.Run("guest powered off", func(t *testing.T) {
		g := newRig(t, fakeGuest{})
		_, vm := g.ensure(t, "powers off")
		g.run(t)
		ws := dialConsole(t, g)
		vm.powerOff(0)
		_, code, reason := readToClose(t, ws)
		require.Equal(t, websocket.StatusNormalClosure, code)
		require.Equal(t, consoleVMStopped, reason)
	})
	t.Run("failed", func(t *testing.T) {
		g := newRig(t, fakeGuest{})
		_, vm := g.ensure(t, "fails")
		g.run(t)
		ws := dialConsole(t, g)
		vm.crash(fmt.Errorf("triple fault"))
		_, code, reason := readToClose(t, ws)
		require.Equal(t, websocket.StatusNormalClosure, code)
		require.Equal(t, consoleVMFailed, reason)
	})
	t.Run("migrated away", func(t *testing.T) {
		src, dst := newRig(t, fakeGuest{}), newRig(t, fakeGuest{})
		src.ensure(t, "moves")
		src.run(t)
		ws := dialConsole(t, src)
		migrate(t, src, dst)
		waitState(t, src.rt, StateDestroyed)
		_, code, reason := readToClose(t, ws)
		require.Equal(t, websocket.StatusNormalClosure, code)
		require.Equal(t, consoleVMMigrated, reason)
	})
	t.Run("reader fell behind", func(t *testing.T) {
		g := newRig(t, fakeGuest{})
		g.ensure(t, "chatty")
		ws := dialConsole(t, g)
		g.rt.mu.Lock()
		log := g.rt.serial
		g.rt.mu.Unlock()
		// The client reads nothing while the guest prints far more than
		// the socket buffers and the console's queue hold.
		chunk := []byte(strings.Repeat("x", 64<<10))
		for i := 0; log.subscribers() > 0; i++ {
			require.Less(t, i, 100*subscriberQueue, "the reader was never cut off")
			_, _ = log.Write(chunk)
		}
		out, code, reason := readToClose(t, ws)
		require.NotEmpty(t, out)
		require.Equal(t, websocket.StatusPolicyViolation, code)
		require.Equal(t, consoleBehind, reason)
	})
}

// TestConsoleCloseStatus: the status and reason of every end.
func TestConsoleCloseStatus(t *testing.T) {
	code, reason := consoleCloseStatus(ConsoleEnd{Behind: true, Reason: consoleBehind})
	require.Equal(t, websocket.StatusPolicyViolation, code)
	require.Equal(t, "reader fell behind", reason)
	for _, r := range []string{consoleVMStopped, consoleVMFailed, consoleVMMigrated, consoleShuttingDown} {
		code, reason = consoleCloseStatus(ConsoleEnd{Reason: r})
		require.Equal(t, websocket.StatusNormalClosure, code)
		require.Equal(t, r, reason)
		require.LessOrEqual(t, len(reason), 123, "a close reason fits a control frame")
	}
}

// TestConsoleTakesAnyOrigin: a client that sends an Origin of another host
// (as some non-browser tools do) still gets the console; the bearer token,
// not the Origin, is what keeps strangers out.
func TestConsoleTakesAnyOrigin(t *testing.T) {
	g := newRig(t, fakeGuest{})
	g.ensure(t, "origin")
	g.run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, consoleURL(g), &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": []string{"https://elsewhere.example"}}})
	require.NoError(t, err)
	defer ws.CloseNow()
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
}
