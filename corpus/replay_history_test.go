package corpus

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/server/serialhistory"
	"github.com/wagglevm/waggle/vmm/devices"
)

// historyFrameFile is a frame file of a Device frame carrying data as a
// serial history payload under key.
func historyFrameFile(t *testing.T, key string, version uint32, data []byte) string {
	t.Helper()
	d := migration.Device{Key: key, Kind: serialhistory.Kind, Version: version, Data: data}
	var b bytes.Buffer
	require.NoError(t, migration.WriteFrame(&b, migration.TypeDevice, d.Encode()))
	out, err := json.Marshal(FrameFile{Type: migration.TypeDevice.String(), Frame: b.Bytes()})
	require.NoError(t, err)
	return string(out)
}

// historyDeviceFile is a device file of a serial history payload.
func historyDeviceFile(t *testing.T, version uint32, data []byte, cfg DeviceConfig) string {
	t.Helper()
	out, err := json.Marshal(DeviceFile{Kind: serialhistory.Kind, Version: version, Data: data, Device: cfg})
	require.NoError(t, err)
	return string(out)
}

// rawHistory is a serial history payload's data with any end offset and
// length.
func rawHistory(end uint64, n uint32, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, end)
	return append(binary.LittleEndian.AppendUint32(b, n), data...)
}

// TestCorpusHoldsSerialHistory: vmm-server/v2's corpus holds the serial
// history's device payloads and both Device frames, and its importable
// versions list the kind, so that its release freezes them.
func TestCorpusHoldsSerialHistory(t *testing.T) {
	set, err := synthVMMServerV2()
	require.NoError(t, err)
	for _, p := range []string{"device/serial-history-v1-empty.json", "device/serial-history-v1-lines.json",
		"device/serial-history-v1-long-run.json", "device/serial-history-v1-largest.json",
		"frame/device-at-console.json", "frame/device-at-console-tail.json"} {
		require.Contains(t, set, p)
	}
	var largest DeviceFile
	require.NoError(t, json.Unmarshal(set["device/serial-history-v1-largest.json"], &largest))
	require.Len(t, largest.Data, migration.MaxDeviceState, "the largest payload fills a Device frame's data")
	h, err := serialhistory.Decode(devices.Payload{Kind: largest.Kind, Version: largest.Version, Data: largest.Data})
	require.NoError(t, err)
	require.Equal(t, uint64(serialhistory.MaxOffset), h.End)
	var vs VersionsFile
	require.NoError(t, json.Unmarshal(set["versions/importable.json"], &vs))
	require.Equal(t, serialhistory.Versions(), vs.Devices[serialhistory.Kind])
	var hf FrameFile
	require.NoError(t, json.Unmarshal(set["frame/hello.json"], &hf))
	fr, err := migration.ReadFrame(bytes.NewReader(hf.Frame), nil)
	require.NoError(t, err)
	hello, err := migration.DecodeHello(fr.Payload)
	require.NoError(t, err)
	require.Contains(t, hello.Devices, migration.DeviceVersions{Kind: serialhistory.Kind, Versions: serialhistory.Versions()},
		"v2's Hello offers the kind, as a v2 server's does")
}

// TestReplayCatchesSerialHistoryBreakage: replay refuses a serial history
// the server's codec refuses, in a device file or a Device frame, and
// fails when today's build no longer imports the kind.
func TestReplayCatchesSerialHistoryBreakage(t *testing.T) {
	const dev, frame = "vmm-server/v2/device/serial-history-v1-lines.json", "vmm-server/v2/frame/device-at-console.json"
	cases := []struct {
		name   string
		break_ func(t *testing.T, r string, rep *Replayer)
		want   []string
	}{
		{"importer gone", func(t *testing.T, r string, rep *Replayer) {
			delete(rep.Importers, serialhistory.Kind)
		}, []string{"serial-history-v1-empty.json", "no importer of serial_history"}},
		{"version dropped", func(t *testing.T, r string, rep *Replayer) {
			imp := rep.Importers[serialhistory.Kind]
			imp.Versions = []uint32{2}
			rep.Importers[serialhistory.Kind] = imp
		}, []string{"serial-history-v1-", "version 1 was dropped"}},
		{"truncated payload", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, dev, historyDeviceFile(t, 1, rawHistory(9, 5, []byte("abc")), DeviceConfig{}))
		}, []string{"serial-history-v1-lines.json", "today's device refuses it", "length 5, but 3 bytes follow"}},
		{"more bytes than were printed", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, dev, historyDeviceFile(t, 1, rawHistory(2, 3, []byte("abc")), DeviceConfig{}))
		}, []string{"serial-history-v1-lines.json", "more bytes than were ever printed"}},
		{"end offset over the bound", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, dev, historyDeviceFile(t, 1, rawHistory(serialhistory.MaxOffset+1, 0, nil), DeviceConfig{}))
		}, []string{"serial-history-v1-lines.json", "end offset"}},
		{"unknown version", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, dev, historyDeviceFile(t, 2, rawHistory(3, 3, []byte("abc")), DeviceConfig{}))
		}, []string{"serial-history-v1-lines.json", "serial_history state version 2 was dropped"}},
		{"device config given", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, dev, historyDeviceFile(t, 1, rawHistory(3, 3, []byte("abc")), DeviceConfig{Port: "com1"}))
		}, []string{"serial-history-v1-lines.json", "device config must be empty"}},
		{"frame with a bad payload", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, frame, historyFrameFile(t, serialhistory.HeadKey, 1, rawHistory(1, 3, []byte("abc"))))
		}, []string{"device-at-console.json", "today's Device decoder refuses it", "more bytes than were ever printed"}},
		{"frame under a device's key", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, frame, historyFrameFile(t, "com1", 1, rawHistory(3, 3, []byte("abc"))))
		}, []string{"device-at-console.json", `under key "com1"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := replayErr(t, func(r string, rep *Replayer) { c.break_(t, r, rep) })
			require.Error(t, err)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// TestSerialHistoryHolder: the replay's holder re-encodes what it
// restored, byte for byte, keeps no part of the caller's bytes, and
// refuses a version the codec does not write.
func TestSerialHistoryHolder(t *testing.T) {
	in := serialhistory.State{End: 1 << 40, Data: []byte("tick 9\n")}.Encode()
	h := &serialHistoryHolder{}
	require.NoError(t, h.Restore(in))
	in.Data[len(in.Data)-1] = 'X'
	out, err := h.Save(serialhistory.V1)
	require.NoError(t, err)
	require.Equal(t, serialhistory.State{End: 1 << 40, Data: []byte("tick 9\n")}.Encode(), out)
	_, err = h.Save(2)
	require.ErrorContains(t, err, "serial_history")
	in.Kind = devices.UARTStateKind
	require.ErrorIs(t, h.Restore(in), devices.ErrUnknownKind)
}
