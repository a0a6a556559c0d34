package v1

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/spec"
)

// lawSeed returns the seed of the random law tests: WAGGLE_SEED if set, else
// the clock. It is logged so that a failure reproduces.
func lawSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WAGGLE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seed = v
	}
	t.Logf("seed %d (set WAGGLE_SEED to repeat)", seed)
	return seed
}

func canonicalBytes(t testing.TB, v any) []byte {
	b, err := CanonicalJSON(v)
	require.NoError(t, err)
	return b
}

// checkLaw1 checks FromSpec(ToSpec(w)) == Canonical(w) for a w ToSpec accepts.
func checkLaw1(t testing.TB, w api.InstanceSpec) {
	s, err := ToSpec(w)
	require.NoError(t, err)
	back, err := FromSpec(s)
	require.NoError(t, err, "a spec that came from version 1 must go back to it")
	require.JSONEq(t, string(canonicalBytes(t, Canonical(w))), string(canonicalBytes(t, back)))
	// A canonical value is its own canonical form.
	require.Equal(t, canonicalBytes(t, back), canonicalBytes(t, Canonical(back)))
}

func TestLaw1WireHubWire(t *testing.T) {
	r := rand.New(rand.NewPCG(lawSeed(t), 1))
	for range 2000 {
		checkLaw1(t, randomWire(r))
	}
}

// TestLaw2And3HubWireHub: ToSpec(FromSpec(s)) == s when FromSpec succeeds;
// when it fails, the error names the field version 1 cannot express.
func TestLaw2And3HubWireHub(t *testing.T) {
	r := rand.New(rand.NewPCG(lawSeed(t), 2))
	var ok, refused int
	for range 2000 {
		s := randomHub(r)
		w, err := FromSpec(s)
		if err != nil {
			refused++
			var ue *UnsupportedError
			require.ErrorAs(t, err, &ue)
			for _, p := range ue.Problems {
				require.Equal(t, RuleUnsupported, p.Rule)
				require.Regexp(t, `^(components\.[^.]+\.block_size|components\.panic0|smbios)$`, p.Path)
			}
			continue
		}
		ok++
		back, err := ToSpec(w)
		require.NoError(t, err)
		require.True(t, s.Equal(back), "hub -> v1 -> hub changed the spec:\n%v\n%v", s, back)
	}
	require.NotZero(t, ok)
	require.NotZero(t, refused, "the generator should make specs version 1 cannot express")
}

func TestLaw3NamesEveryUnsupportedField(t *testing.T) {
	s, err := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: 1, MemoryMiB: 64, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "disk"}).
		Add(spec.MustKey("a"), spec.VirtioDisk{Backend: spec.MustKey("a-be"), Slot: 0}).
		Add(spec.MustKey("a-be"), spec.FileStorageBackend{Path: "a", BlockSize: 8192}).
		Add(spec.MustKey("b"), spec.VirtioDisk{Backend: spec.MustKey("b-be"), Slot: 1}).
		Add(spec.MustKey("b-be"), spec.FileStorageBackend{Path: "b", BlockSize: 1024}).
		Build()
	require.NoError(t, err)
	_, err = FromSpec(s)
	require.ErrorContains(t, err, "components.a-be.block_size")
	require.ErrorContains(t, err, "components.b-be.block_size")

	// An explicit SMBIOS table and a pvpanic device: version 1 has neither.
	s, err = s.ToBuilder().SetSMBIOS(spec.SMBIOS{Manufacturer: "Acme"}).Add(spec.MustKey("crash"), spec.PVPanic{}).Build()
	require.NoError(t, err)
	_, err = FromSpec(s)
	var ue *UnsupportedError
	require.ErrorAs(t, err, &ue)
	var paths []string
	for _, p := range ue.Problems {
		paths = append(paths, p.Path)
	}
	require.ElementsMatch(t, []string{"components.a-be.block_size", "components.b-be.block_size", "smbios", "components.crash"}, paths)
}

// FuzzWireHubWire: whatever bytes decode as a valid version 1 spec obey law 1.
func FuzzWireHubWire(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 1))
	for range 20 {
		b, err := json.Marshal(randomWire(r))
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := DecodeInstanceSpec(data)
		if err != nil {
			return
		}
		if _, err := ToSpec(w); err != nil {
			var ve *spec.ValidationError
			require.True(t, errors.As(err, &ve), "ToSpec must fail with a ValidationError, got %v", err)
			return
		}
		checkLaw1(t, w)
	})
}

// FuzzHubWireHub builds hub specs from fuzzed seeds and checks laws 2 and 3.
func FuzzHubWireHub(f *testing.F) {
	for i := range uint64(10) {
		f.Add(i, i*7)
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		s := randomHub(rand.New(rand.NewPCG(a, b)))
		w, err := FromSpec(s)
		if err != nil {
			var ue *UnsupportedError
			require.ErrorAs(t, err, &ue)
			require.NotEmpty(t, ue.Problems)
			return
		}
		back, err := ToSpec(w)
		require.NoError(t, err)
		require.True(t, s.Equal(back))
	})
}
