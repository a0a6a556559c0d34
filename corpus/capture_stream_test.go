package corpus

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/server/serialhistory"
	"github.com/wagglevm/waggle/vmm/devices"
)

// fakeMigrationSource answers one upgrade on ln and sends frames, then
// reads what the target sends until it closes.
func fakeMigrationSource(t *testing.T, ln net.Listener, frames []migration.Frame) {
	t.Helper()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		fmt.Fprint(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: waggle-migrate\r\n\r\n")
		for _, f := range frames {
			if migration.WriteFrame(c, f.Type, f.Payload) != nil {
				return
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	}()
}

// TestRecordedStreamReplays: a stream recorded by the capturer's proxy
// gives frame, device and machine files in the synthesized files' shapes,
// and each replays with today's code.
func TestRecordedStreamReplays(t *testing.T) {
	syn, err := synthFrames(devices.ImportableVersions())
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	fromSource := []migration.Frame{syn["welcome"], syn["preamble"], syn["ram-two-pages"], syn["round-end"], syn["round-end-final"],
		syn["device-uart"], syn["machine"], syn["state-done"], syn["commit"]}
	fakeMigrationSource(t, ln, fromSource)
	proxy, err := newStreamProxy(ln.Addr().String())
	require.NoError(t, err)

	c, err := net.Dial("tcp", proxy.Addr())
	require.NoError(t, err)
	fmt.Fprint(c, "GET /v1/instance/migrate/x/start HTTP/1.1\r\nHost: src\r\nConnection: Upgrade\r\nUpgrade: waggle-migrate\r\n\r\n")
	for _, name := range []string{"hello", "proof", "ready", "round-ack", "imported"} {
		require.NoError(t, migration.WriteFrame(c, syn[name].Type, syn[name].Payload))
	}
	c.(*net.TCPConn).CloseWrite()
	_, err = io.Copy(io.Discard, c)
	require.NoError(t, err)
	c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	up, down, err := proxy.recorded(ctx)
	require.NoError(t, err)
	fromTarget, rawUp, err := streamFrames(up, true)
	require.NoError(t, err)
	require.Len(t, fromTarget, 5)
	got, rawDown, err := streamFrames(down, false)
	require.NoError(t, err)
	require.Len(t, got, len(fromSource))
	for i, f := range got {
		var b bytes.Buffer
		require.NoError(t, migration.WriteFrame(&b, f.Type, f.Payload))
		require.Equal(t, b.Bytes(), rawDown[i], "frame %d whole, as on the wire", i)
	}

	out := map[string][]byte{}
	spec := `{"components":{"com1":{"type":"serial_port","num":"com1"}}}`
	require.NoError(t, recordStream(out, "t", spec, append(fromTarget, got...), append(rawUp, rawDown...)))
	var names []string
	for p := range out {
		names = append(names, p)
	}
	require.ElementsMatch(t, []string{
		"frame/t-hello.json", "frame/t-proof.json", "frame/t-ready.json", "frame/t-round-ack.json", "frame/t-imported.json",
		"frame/t-welcome.json", "frame/t-preamble.json", "frame/t-round-end.json", "frame/t-round-end-final.json",
		"frame/t-device-com1.json", "frame/t-machine.json", "frame/t-state-done.json", "frame/t-commit.json",
		"device/t-com1.json", "machine/t.json",
	}, names, "no RAM frame; one file per other type, the final RoundEnd too, the device and the machine")
	require.Contains(t, string(out["device/t-com1.json"]), `"device":{"port":"com1"}`)

	r := NewReplayer(root, t.TempDir())
	for p, data := range out {
		h := r.Handlers[capturedV1][path.Dir(p)]
		require.NotNil(t, h, p)
		require.NoError(t, h(r, data, data), p)
	}
	// A planted change is seen: a device file whose payload lost a byte.
	dev := strings.Replace(string(out["device/t-com1.json"]), `"data":"`, `"data":"AA`, 1)
	require.Error(t, r.Handlers[capturedV1][KindDevice](r, []byte(dev), []byte(dev)))
}

// TestRecordStreamNeedsTheHandshake: a stream without the negotiation or
// the machine state is no capture.
func TestRecordStreamNeedsTheHandshake(t *testing.T) {
	syn, err := synthFrames(devices.ImportableVersions())
	require.NoError(t, err)
	frames := []migration.Frame{syn["hello"], syn["welcome"], syn["proof"]}
	raw := make([][]byte, len(frames))
	err = recordStream(map[string][]byte{}, "t", `{"components":{}}`, frames, raw)
	require.ErrorContains(t, err, "carried no Machine frame")
	frames = append(frames, syn["device-uart"])
	raw = append(raw, nil)
	err = recordStream(map[string][]byte{}, "t", `{"components":{}}`, frames, raw)
	require.ErrorContains(t, err, `device "com1", which the spec does not have`)
}

func TestFrameFileName(t *testing.T) {
	require.Equal(t, "round-end", frameFileName(migration.TypeRoundEnd))
	require.Equal(t, "hello", frameFileName(migration.TypeHello))
	require.Equal(t, "state-done", frameFileName(migration.TypeStateDone))
}

// TestRecordStreamKeepsHeldPayloadFrames: a Device frame under a key no
// spec component can have (the console's history: its head "@console",
// its tail "@console-tail") is a payload the server keeps, not a device of
// the spec: its frame is kept, and, for the serial history, its payload as
// a device file with no device config; every file replays with v2's
// handlers. A held payload of a kind the corpus does not replay keeps its
// frame only; a key that names no corpus file is an error.
func TestRecordStreamKeepsHeldPayloadFrames(t *testing.T) {
	syn, err := synthFrames(serverImportable())
	require.NoError(t, err)
	head := serialhistory.State{End: 5, Data: []byte("tick\n")}.Encode()
	tail := serialhistory.State{End: 1 << 40, Data: []byte("tock\n")}.Encode()
	empty := serialhistory.State{}.Encode()
	held := func(key string, p devices.Payload) migration.Frame {
		return migration.Frame{Type: migration.TypeDevice, Payload: migration.Device{Key: key, Kind: p.Kind, Version: p.Version, Data: p.Data}.Encode()}
	}
	frames := []migration.Frame{syn["hello"], syn["welcome"], syn["proof"], held("@console", head), syn["device-uart"],
		held("@console-tail", tail), held("@later", devices.Payload{Kind: "widget", Version: 3, Data: []byte{1}}), syn["machine"]}
	raw := make([][]byte, len(frames))
	for i, f := range frames {
		var b bytes.Buffer
		require.NoError(t, migration.WriteFrame(&b, f.Type, f.Payload))
		raw[i] = b.Bytes()
	}
	spec := `{"components":{"com1":{"type":"serial_port","num":"com1"}}}`
	out := map[string][]byte{}
	require.NoError(t, recordStream(out, "t", spec, frames, raw))
	for _, p := range []string{"frame/t-device-at-console.json", "frame/t-device-at-console-tail.json", "frame/t-device-at-later.json",
		"device/t-com1.json", "device/t-at-console.json", "device/t-at-console-tail.json"} {
		require.Contains(t, out, p)
	}
	require.Equal(t, string(raw[3]), string(decodeFrameFile(t, out["frame/t-device-at-console.json"])), "the head's frame as sent")
	require.Equal(t, string(raw[5]), string(decodeFrameFile(t, out["frame/t-device-at-console-tail.json"])), "the tail's frame as sent")
	require.JSONEq(t, fmt.Sprintf(`{"kind":"serial_history","version":1,"data":%q,"device":{}}`, base64.StdEncoding.EncodeToString(tail.Data)),
		string(out["device/t-at-console-tail.json"]), "the tail's payload, byte for byte")
	r := NewReplayer(root, t.TempDir())
	for p, data := range out {
		require.NotContains(t, p, "@")
		if strings.HasPrefix(p, "device/") {
			require.Contains(t, []string{"device/t-com1.json", "device/t-at-console.json", "device/t-at-console-tail.json"}, p, "no device file for a kind the corpus does not replay")
		}
		require.NoError(t, r.Handlers[capturedV2][path.Dir(p)](r, data, data), p)
	}

	// An empty tail (nothing printed during the pre-copy) is kept too.
	frames[5] = held("@console-tail", empty)
	raw[5] = encodeFrame(t, frames[5])
	out = map[string][]byte{}
	require.NoError(t, recordStream(out, "t", spec, frames, raw))
	require.NoError(t, r.Handlers[capturedV2][KindDevice](r, out["device/t-at-console-tail.json"], out["device/t-at-console-tail.json"]))

	frames[4] = held("@Console/1", head)
	require.ErrorContains(t, recordStream(map[string][]byte{}, "t", spec, frames, raw), `"@Console/1"`)
}

func encodeFrame(t *testing.T, f migration.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, migration.WriteFrame(&b, f.Type, f.Payload))
	return b.Bytes()
}

func decodeFrameFile(t *testing.T, data []byte) []byte {
	t.Helper()
	var f FrameFile
	require.NoError(t, json.Unmarshal(data, &f))
	return f.Frame
}
