package devices

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// The committed seed corpora of the Restore fuzzers are real Save outputs.
// TestFuzzSeeds checks they still are what the devices save; to rewrite
// them after a deliberate change of a state encoding (which also needs a new
// version), run
//
//	WAGGLE_WRITE_FUZZ_SEEDS=1 go test ./vmm/devices/ -run TestFuzzSeeds

// uartSeedStates returns named UART states for the seed corpus, each in
// both state versions: version 1 under its name (as a version-1 build
// named it, so those seeds are the frozen version-1 encodings), version 2
// under "v2-" and its name.
func uartSeedStates(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	save := func(name string, r *uartRig) {
		p, err := r.u.Save(uartStateV1)
		require.NoError(t, err)
		out[name] = p.Data
		p, err = r.u.Save(uartStateV2)
		require.NoError(t, err)
		out["v2-"+name] = p.Data
	}
	fresh := &uartRig{irq: &fakeIRQ{}}
	fresh.u = NewUARTAt(0x3f8, fresh.irq, nil)
	save("reset", fresh)

	busy := &uartRig{irq: &fakeIRQ{}}
	busy.u = NewUARTAt(0x3f8, busy.irq, nil)
	uartBusyStateNoT(busy)
	save("loopback", busy)

	full := &uartRig{irq: &fakeIRQ{}}
	full.u = NewUARTAt(0x3f8, full.irq, nil)
	full.outb(UARTRegFCR, UARTFcrFE|0x40)
	full.outb(UARTRegIER, uartIerMask)
	full.u.Receive([]byte("0123456789abcdef"))
	full.outb(UARTRegMCR, UARTMcrDTR|UARTMcrRTS|UARTMcrOUT2)
	save("fifo-full", full)

	oe := &uartRig{irq: &fakeIRQ{}}
	oe.u = NewUARTAt(0x3f8, oe.irq, nil)
	oe.outb(UARTRegMCR, UARTMcrLOOP)
	oe.outb(UARTRegTHR, 1)
	oe.outb(UARTRegTHR, 2)
	save("overrun", oe)

	// Carrier lost and ringing, the guest told (deltas pending).
	cl := &uartRig{irq: &fakeIRQ{}}
	cl.u = NewUARTAt(0x3f8, cl.irq, nil)
	cl.outb(UARTRegIER, UARTIerEDSSI)
	cl.u.SetModemLines(UARTMsrCTS | UARTMsrDSR | UARTMsrRI)
	save("carrier-lost", cl)
	return out
}

// virtioBlkSeedStates returns named virtio-blk states for the seed corpus,
// all of the fuzz target's disk (64 sectors, 512-byte blocks, writable).
func virtioBlkSeedStates(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	save := func(name string, m *VirtioMMIO) {
		p, err := m.Save(0)
		require.NoError(t, err)
		out[name] = p.Data
	}
	save("reset", newBlkRig(t, VirtioBlkConfig{}).m)
	r := busyBlkRig(t)
	save("running", r.m)
	b := busyBlkRig(t)
	b.offer(tQSize + 1)
	b.wr(VirtioMMIOQueueNotify, 0)
	save("needs-reset", b.m)
	return out
}

func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
}

func TestFuzzSeeds(t *testing.T) {
	write := os.Getenv("WAGGLE_WRITE_FUZZ_SEEDS") == "1"
	for fuzzer, states := range map[string]map[string][]byte{
		"FuzzUARTRestore":      uartSeedStates(t),
		"FuzzVirtioBlkRestore": virtioBlkSeedStates(t),
	} {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		for name, data := range states {
			sum := sha256.Sum256(data)
			path := filepath.Join(dir, "save-"+name+"-"+hex.EncodeToString(sum[:4]))
			if write {
				require.NoError(t, os.MkdirAll(dir, 0o755))
				require.NoError(t, os.WriteFile(path, corpusFile(data), 0o644))
				continue
			}
			got, err := os.ReadFile(path)
			require.NoError(t, err, "seed %s is missing or stale; see the comment above TestFuzzSeeds", path)
			require.Equal(t, string(corpusFile(data)), string(got))
		}
	}
}
