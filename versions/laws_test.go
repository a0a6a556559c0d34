package versions

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// randomSpec builds a random valid hub spec that uses, now and then, each
// thing the hub has: every component kind, UUID and name keys, every block
// size, an explicit SMBIOS table, edge values of the board.
func randomSpec(r *rand.Rand) spec.Spec {
	cpus := []uint32{1, 2, uint32(1 + r.IntN(spec.MaxCPUs)), spec.MaxCPUs}[r.IntN(4)]
	mem := []uint64{spec.MinMemoryMiB, 64, uint64(spec.MinMemoryMiB + r.IntN(1<<16)), spec.MaxMemoryMiB}[r.IntN(4)]
	b := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: cpus, MemoryMiB: mem, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: []string{"ticker", "memcheck", "disk", "panic"}[r.IntN(4)], Cmdline: strings.Repeat("k=v ", r.IntN(5))})
	for _, p := range r.Perm(4)[:r.IntN(5)] {
		b.Add(spec.MustKey(fmt.Sprintf("com%d", p+1)), spec.SerialPort{Num: spec.SerialPortNumber(p + 1)})
	}
	key := func(name string) spec.Key {
		if r.IntN(3) == 0 {
			return spec.MustKey(uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String())
		}
		return spec.MustKey(name)
	}
	for i, slot := range r.Perm(spec.MaxVirtioSlots)[:r.IntN(4)] {
		be := key(fmt.Sprintf("be%d", i))
		b.Add(be, spec.FileStorageBackend{Path: fmt.Sprintf("disks/%d.img", i), ReadOnly: r.IntN(2) == 0,
			BlockSize: spec.MinBlockSize << r.IntN(8)})
		b.Add(key(fmt.Sprintf("disk%d", slot)), spec.VirtioDisk{Backend: be, Slot: uint8(slot)})
	}
	if r.IntN(4) == 0 {
		b.Add(key("panic"), spec.PVPanic{})
	}
	if r.IntN(4) == 0 {
		b.SetSMBIOS(spec.SMBIOS{Manufacturer: "Acme", Product: strings.Repeat("p", r.IntN(spec.MaxSMBIOSStringLen+1)),
			SerialNumber: fmt.Sprint(r.Uint32())})
	}
	s, err := b.Build()
	if err != nil {
		panic(err)
	}
	return s
}

// namesAField matches a refusal that names the field it is about.
var namesAField = regexp.MustCompile(`(board\.|boot\.|components\.|smbios)`)

// checkLaws checks the laws of every registered version on s:
//   - a version that expresses s writes it so that it reads back as s
//     (hub -> wire -> hub is the identity) and writes that again to the same
//     bytes (its canonical form is stable);
//   - a version that cannot express s says so naming the field;
//   - the newest version expresses everything the hub has;
//   - whatever one version writes, every other reads into a spec that it
//     writes back unchanged or refuses by name (the crossings).
func checkLaws(t testing.TB, s spec.Spec) {
	written := map[string][]byte{}
	for _, sp := range spokes {
		data, err := sp.Encode(s)
		if err != nil {
			require.Regexp(t, namesAField, err.Error(), "%s refuses without naming the field", sp.Name)
			require.NotEqual(t, spokes[0].Name, sp.Name, "the newest version expresses every hub spec: %v", err)
			continue
		}
		back, err := sp.Decode(data)
		require.NoError(t, err, "%s cannot read what it wrote: %s", sp.Name, data)
		require.True(t, s.Equal(back), "%s: hub -> wire -> hub changed the spec", sp.Name)
		again, err := sp.Encode(back)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, again), "%s writes one spec two ways", sp.Name)
		written[sp.Name] = data
	}
	for from := range written {
		for _, to := range spokes {
			if _, ok := written[to.Name]; !ok {
				continue // to cannot express s: checked above
			}
			hub, err := lookupSpoke(t, from).Decode(written[from])
			require.NoError(t, err)
			out, err := to.Encode(hub)
			require.NoError(t, err)
			require.Equal(t, string(written[to.Name]), string(out), "%s -> %s", from, to.Name)
		}
	}
}

func lookupSpoke(t testing.TB, name string) Spoke {
	sp, ok := Lookup(name)
	require.True(t, ok, name)
	return sp
}

// TestLawsOverEveryVersion runs the laws of every registered version from
// one harness, over random specs that use all the hub has; a new version
// is covered by registering it.
func TestLawsOverEveryVersion(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))
	refused := map[string]int{}
	for range 1500 {
		s := randomSpec(r)
		checkLaws(t, s)
		for _, sp := range spokes {
			if _, err := sp.Encode(s); err != nil {
				refused[sp.Name]++
			}
		}
	}
	require.Zero(t, refused[spokes[0].Name])
	require.NotZero(t, refused["vmm-server/v1"], "the generator makes specs v1 cannot express")
}

// FuzzLawsOverEveryVersion: the same laws, over specs built from fuzzed
// seeds.
func FuzzLawsOverEveryVersion(f *testing.F) {
	for i := range uint64(8) {
		f.Add(i, i*31)
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		checkLaws(t, randomSpec(rand.New(rand.NewPCG(a, b))))
	})
}
