package versions

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// TestNewestFirst: the registry lists version 2 before version 1, so a
// source speaks version 2 to a target that accepts both.
func TestNewestFirst(t *testing.T) {
	require.Equal(t, []string{"vmm-server/v2", "vmm-server/v1"}, Names())
	env, err := Wrap(testSpec(t, 512), []string{"vmm-server/v1", "vmm-server/v2"})
	require.NoError(t, err)
	require.Equal(t, "vmm-server/v2", env.SpecVersion)
}

// TestWrapFallsBackToV1OnlyWhenItFits: a target that accepts only version 1
// (the released build) gets a version 1 envelope for a spec version 1 can
// express, and a loud refusal naming each field for one it cannot.
func TestWrapFallsBackToV1OnlyWhenItFits(t *testing.T) {
	s := testSpec(t, 512)
	env, err := Wrap(s, []string{"vmm-server/v1"})
	require.NoError(t, err)
	require.Equal(t, "vmm-server/v1", env.SpecVersion)

	rich, err := s.ToBuilder().SetSMBIOS(spec.SMBIOS{Manufacturer: "Acme"}).Add(spec.MustKey("panic"), spec.PVPanic{}).Build()
	require.NoError(t, err)
	_, err = Wrap(rich, []string{"vmm-server/v1"})
	var nc *NoCommonVersionError
	require.True(t, errors.As(err, &nc), "got %v", err)
	require.ErrorContains(t, err, "smbios")
	require.ErrorContains(t, err, "components.panic")

	env, err = Wrap(rich, Names())
	require.NoError(t, err)
	require.Equal(t, "vmm-server/v2", env.SpecVersion)
	data, err := env.Marshal()
	require.NoError(t, err)
	back, name, err := Unwrap(data)
	require.NoError(t, err)
	require.Equal(t, "vmm-server/v2", name)
	require.True(t, rich.Equal(back))
}

// TestEverySpokeCrossesEveryOther: a spec read in one version and written
// in another reads back as the same spec, or the writer refuses it.
func TestEverySpokeCrossesEveryOther(t *testing.T) {
	specs := []spec.Spec{testSpec(t, 512), testSpec(t, 4096), testSpec(t, 65536)}
	rich, err := testSpec(t, 1024).ToBuilder().SetSMBIOS(spec.SMBIOS{Product: "p", Family: "f"}).Add(spec.MustKey("pp"), spec.PVPanic{}).Build()
	require.NoError(t, err)
	specs = append(specs, rich)
	for _, s := range specs {
		for _, from := range Names() {
			fs, _ := Lookup(from)
			data, err := fs.Encode(s)
			if err != nil {
				continue
			}
			hub, err := fs.Decode(data)
			require.NoError(t, err)
			for _, to := range Names() {
				ts, _ := Lookup(to)
				enc, err := ts.Encode(hub)
				if err != nil {
					continue
				}
				back, err := ts.Decode(enc)
				require.NoError(t, err)
				require.True(t, s.Equal(back), "%s -> %s changed the spec", from, to)
			}
		}
		v2, _ := Lookup("vmm-server/v2")
		_, err := v2.Encode(s)
		require.NoError(t, err, "version 2 expresses every spec of the hub")
	}
}
