package v2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	api1 "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/spec"
	v1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
)

// randomV1Wire returns a valid version 1 InstanceSpec with its optional
// fields left out at random and UUID keys in any case: not canonical, as a
// version 1 client may send it.
func randomV1Wire(r *rand.Rand) api1.InstanceSpec {
	w := api1.InstanceSpec{
		Board:      api1.Board{Cpus: int32(1 + r.IntN(spec.MaxCPUs)), MemoryMb: int64(spec.MinMemoryMiB + r.IntN(8192)), Chipset: api1.ChipsetI440fx},
		Components: map[string]api1.Component{},
	}
	if r.IntN(3) > 0 {
		w.Boot = &api1.Boot{Image: []string{"ticker", "memcheck", "smbios", "disk"}[r.IntN(4)]}
		if r.IntN(2) == 0 {
			w.Boot.Cmdline = ptr(fmt.Sprintf("pace_ms=%d", r.IntN(1000)))
		}
	}
	for _, p := range r.Perm(4)[:r.IntN(5)] {
		var c api1.Component
		must(c.FromSerialPortComponent(api1.SerialPortComponent{Num: api1.SerialPortNumber(fmt.Sprintf("com%d", p+1))}))
		w.Components[randomKey(r, fmt.Sprintf("com%d-%d", p, r.IntN(1000)))] = c
	}
	for i, slot := range r.Perm(spec.MaxVirtioSlots)[:r.IntN(4)] {
		be := randomKey(r, fmt.Sprintf("be%d-%s", i, randomName(r, "x")))
		fb := api1.FileStorageBackendComponent{Path: fmt.Sprintf("srv/%d.img", r.IntN(1e6))}
		if r.IntN(2) == 0 {
			fb.Readonly = ptr(r.IntN(2) == 0)
		}
		if r.IntN(2) == 0 {
			fb.BlockSize = ptr([]api1.BlockSize{api1.BlockSizeN512, api1.BlockSizeN4096}[r.IntN(2)])
		}
		var bc, dc api1.Component
		must(bc.FromFileStorageBackendComponent(fb))
		ref := be
		if _, err := uuid.Parse(be); err == nil {
			ref = randomCase(r, strings.ToLower(be)) // the same UUID key, perhaps spelt otherwise
		}
		must(dc.FromVirtioDiskComponent(api1.VirtioDiskComponent{Backend: ref, Slot: int32(slot)}))
		w.Components[be] = bc
		w.Components[fmt.Sprintf("disk%d", slot)] = dc
	}
	return w
}

// checkV1ThroughV2 checks the cross-version law for one version 1 value:
// v1 -> hub -> v2 (as bytes on the wire) -> hub -> v1 gives the value back,
// in version 1's canonical form, and the hub spec is the same at both ends.
func checkV1ThroughV2(t testing.TB, w1 api1.InstanceSpec) {
	s, err := v1.ToSpec(w1)
	require.NoError(t, err)
	w2, err := FromSpec(s)
	require.NoError(t, err, "version 2 must express every spec version 1 does")
	data, err := CanonicalJSON(w2)
	require.NoError(t, err)
	decoded, err := DecodeInstanceSpec(data)
	require.NoError(t, err)
	s2, err := ToSpec(decoded)
	require.NoError(t, err)
	require.True(t, s.Equal(s2), "v1 -> hub -> v2 -> hub changed the spec:\n%v\n%v", s, s2)
	back, err := v1.FromSpec(s2)
	require.NoError(t, err, "a spec that came from version 1 must go back to it through version 2")
	want, err := v1.CanonicalJSON(v1.Canonical(w1))
	require.NoError(t, err)
	got, err := v1.CanonicalJSON(back)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
}

func TestLawV1ThroughV2(t *testing.T) {
	r := rand.New(rand.NewPCG(lawSeed(t), 3))
	for range 1000 {
		checkV1ThroughV2(t, randomV1Wire(r))
	}
}

// TestLawV2ToV1RefusesByName: what version 2 adds is refused by version 1
// by name, never dropped: a spec from version 2 goes to version 1 only
// when it uses nothing version 1 lacks, and then comes back unchanged.
func TestLawV2ToV1RefusesByName(t *testing.T) {
	r := rand.New(rand.NewPCG(lawSeed(t), 4))
	var ok, refused int
	for range 1000 {
		w2 := randomWire(r)
		s, err := ToSpec(w2)
		require.NoError(t, err)
		w1, err := v1.FromSpec(s)
		if err != nil {
			refused++
			var ue *v1.UnsupportedError
			require.ErrorAs(t, err, &ue)
			for _, p := range ue.Problems {
				require.Regexp(t, `^(smbios|components\.[^.]+|components\.[^.]+\.block_size)$`, p.Path)
			}
			continue
		}
		ok++
		back, err := v1.ToSpec(w1)
		require.NoError(t, err)
		require.True(t, s.Equal(back))
		w2back, err := FromSpec(back)
		require.NoError(t, err)
		require.Equal(t, string(canonicalBytes(t, Canonical(w2))), string(canonicalBytes(t, w2back)))
	}
	require.NotZero(t, ok)
	require.NotZero(t, refused)
}

// FuzzV1ThroughV2: whatever bytes decode as a valid version 1 spec obey the
// cross-version law.
func FuzzV1ThroughV2(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 3))
	for range 20 {
		b, err := v1.CanonicalJSON(randomV1Wire(r))
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w1, err := v1.DecodeInstanceSpec(data)
		if err != nil {
			return
		}
		if _, err := v1.ToSpec(w1); err != nil {
			var ve *spec.ValidationError
			require.True(t, errors.As(err, &ve), "v1.ToSpec must fail with a ValidationError, got %v", err)
			return
		}
		checkV1ThroughV2(t, w1)
	})
}
