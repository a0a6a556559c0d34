package corpus

import (
	"bytes"
	"fmt"
	"maps"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/server/serialhistory"
	"github.com/wagglevm/waggle/vmm/devices"
)

// serverImportable is what a server that carries the serial console's
// history offers in its Hello (vmm-server v2 onwards): the devices'
// payload versions and the serial history's.
func serverImportable() map[string][]uint32 {
	vs := maps.Clone(devices.ImportableVersions())
	vs[serialhistory.Kind] = serialhistory.Versions()
	return vs
}

// historyLines returns n console lines as a ticker prints them, the first
// numbered from.
func historyLines(from, n int) []byte {
	var b bytes.Buffer
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, "tick %d\n", i)
	}
	return b.Bytes()
}

// serialHistoryCases are the histories the corpus records as device
// payloads: none printed yet, a few lines, a long run of which only the
// last bytes are kept (the end offset far beyond them), and the largest
// payload allowed (the most bytes, at the highest end offset).
func serialHistoryCases() map[string]serialhistory.State {
	few := historyLines(1, 3)
	last := historyLines(1_000_000, 4)
	largest := bytes.Repeat([]byte("the largest history the payload carries\r\n"), serialhistory.MaxData/41+1)[:serialhistory.MaxData]
	return map[string]serialhistory.State{
		"empty":    {},
		"lines":    {End: uint64(len(few)), Data: few},
		"long-run": {End: 5<<40 + 17, Data: last},
		"largest":  {End: serialhistory.MaxOffset, Data: largest},
	}
}

// addSerialHistoryState records serial history payloads at every version the
// server writes, and the Device frames of a migration's head (@console)
// and tail (@console-tail).
func addSerialHistoryState(set fileSet) error {
	cases := serialHistoryCases()
	for _, name := range sortedKeys(cases) {
		for _, v := range serialhistory.Versions() {
			if v != serialhistory.V1 {
				return fmt.Errorf("serial history version %d: the corpus generator writes only version %d; add its cases", v, serialhistory.V1)
			}
			p := cases[name].Encode()
			f := DeviceFile{Kind: p.Kind, Version: p.Version, Data: p.Data}
			if err := set.addJSON(KindDevice, fmt.Sprintf("serial-history-v%d-%s", v, name), f); err != nil {
				return err
			}
		}
	}
	head := historyLines(1, 40)
	tail := historyLines(41, 2)
	pieces := []struct {
		key string
		h   serialhistory.State
	}{
		{serialhistory.HeadKey, serialhistory.State{End: uint64(len(head)), Data: head}},
		{serialhistory.TailKey, serialhistory.State{End: uint64(len(head) + len(tail)), Data: tail}},
	}
	for _, pc := range pieces {
		p := pc.h.Encode()
		d := migration.Device{Key: pc.key, Kind: p.Kind, Version: p.Version, Data: p.Data}
		var b bytes.Buffer
		if err := migration.WriteFrame(&b, migration.TypeDevice, d.Encode()); err != nil {
			return err
		}
		name := "device-at-" + pc.key[1:]
		if err := set.addJSON(KindFrame, name, FrameFile{Type: migration.TypeDevice.String(), Frame: b.Bytes()}); err != nil {
			return err
		}
	}
	return nil
}
