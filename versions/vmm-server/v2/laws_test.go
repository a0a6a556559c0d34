package v2

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
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
	require.NoError(t, err, "a spec that came from version 2 must go back to it")
	require.JSONEq(t, string(canonicalBytes(t, Canonical(w))), string(canonicalBytes(t, back)))
	// A canonical value is its own canonical form, and passes the schema.
	require.Equal(t, canonicalBytes(t, back), canonicalBytes(t, Canonical(back)))
	_, err = DecodeInstanceSpec(canonicalBytes(t, back))
	require.NoError(t, err)
}

func TestLaw1WireHubWire(t *testing.T) {
	r := rand.New(rand.NewPCG(lawSeed(t), 1))
	var tables, panics int
	for range 2000 {
		w := randomWire(r)
		if w.Smbios != nil {
			tables++
		}
		for _, c := range w.Components {
			if typ, _ := c.Discriminator(); typ == string(api.PVPanicComponentTypePvpanic) {
				panics++
			}
		}
		checkLaw1(t, w)
	}
	require.NotZero(t, tables, "the generator should make SMBIOS tables")
	require.NotZero(t, panics, "the generator should make pvpanic devices")
}

// TestLaw2HubWireHub: ToSpec(FromSpec(s)) == s, and FromSpec never fails:
// version 2 expresses everything the hub has today.
func TestLaw2HubWireHub(t *testing.T) {
	r := rand.New(rand.NewPCG(lawSeed(t), 2))
	for range 2000 {
		s := randomHub(r)
		w, err := FromSpec(s)
		require.NoError(t, err, "version 2 must express every hub spec: %v", s)
		back, err := ToSpec(w)
		require.NoError(t, err)
		require.True(t, s.Equal(back), "hub -> v2 -> hub changed the spec:\n%v\n%v", s, back)
	}
}

// TestLaw2KeepsTheTableApartFromNone: a spec without a table and a spec
// with an empty one stay apart both ways (the first gets a derived table,
// the second none of its strings).
func TestLaw2KeepsTheTableApartFromNone(t *testing.T) {
	base := spec.NewBuilder().SetBoard(spec.Board{CPUs: 1, MemoryMiB: 16, Chipset: spec.ChipsetI440FX}).SetBoot(spec.Boot{Image: "ticker"})
	without, err := base.Build()
	require.NoError(t, err)
	empty, err := without.ToBuilder().SetSMBIOS(spec.SMBIOS{}).Build()
	require.NoError(t, err)
	require.False(t, without.Equal(empty))
	for _, s := range []spec.Spec{without, empty} {
		w, err := FromSpec(s)
		require.NoError(t, err)
		back, err := ToSpec(w)
		require.NoError(t, err)
		require.True(t, s.Equal(back))
	}
}

// TestLaw3RefusesByName: a spec the hub could hold but version 2 cannot
// say is refused naming the field. Today only a chipset the hub may gain
// later is such a thing; FromSpec is fed one through a zero Board.
func TestLaw3RefusesByName(t *testing.T) {
	var zero spec.Spec
	_, err := FromSpec(zero)
	var ue *UnsupportedError
	require.ErrorAs(t, err, &ue)
	require.Len(t, ue.Problems, 1)
	require.Equal(t, "board.chipset", ue.Problems[0].Path)
	require.Equal(t, RuleUnsupported, ue.Problems[0].Rule)
}

// FuzzWireHubWire: whatever bytes decode as a valid version 2 spec obey law 1.
func FuzzWireHubWire(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 1))
	for range 20 {
		b, err := json.Marshal(randomWire(r))
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{}}`))
	f.Add([]byte(goodSpec))
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

// FuzzHubWireHub builds hub specs from fuzzed seeds and checks law 2.
func FuzzHubWireHub(f *testing.F) {
	for i := range uint64(10) {
		f.Add(i, i*7)
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		s := randomHub(rand.New(rand.NewPCG(a, b)))
		w, err := FromSpec(s)
		require.NoError(t, err)
		back, err := ToSpec(w)
		require.NoError(t, err)
		require.True(t, s.Equal(back))
	})
}
