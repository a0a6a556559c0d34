package versions

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

func testSpec(t *testing.T, blockSize uint32) spec.Spec {
	t.Helper()
	s, err := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: 1, MemoryMiB: 64, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "disk", Cmdline: "slot=0"}).
		Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1}).
		Add(spec.MustKey("d"), spec.VirtioDisk{Backend: spec.MustKey("b"), Slot: 0}).
		Add(spec.MustKey("b"), spec.FileStorageBackend{Path: "d.img", BlockSize: blockSize}).
		Build()
	require.NoError(t, err)
	return s
}

func TestWrapUnwrapRoundTrip(t *testing.T) {
	s := testSpec(t, 512)
	env, err := Wrap(s, []string{"vmm-server/v9", "vmm-server/v1"})
	require.NoError(t, err)
	require.Equal(t, "vmm-server/v1", env.SpecVersion)
	data, err := env.Marshal()
	require.NoError(t, err)
	back, name, err := Unwrap(data)
	require.NoError(t, err)
	require.Equal(t, "vmm-server/v1", name)
	require.True(t, s.Equal(back))
}

func TestWrapFailsLoudlyWhenNoVersionCanExpressTheSpec(t *testing.T) {
	_, err := Wrap(testSpec(t, 8192), []string{"vmm-server/v1"})
	var nc *NoCommonVersionError
	require.True(t, errors.As(err, &nc))
	require.ErrorContains(t, err, "components.b.block_size")

	_, err = Wrap(testSpec(t, 512), []string{"vmm-server/v7"})
	require.ErrorContains(t, err, "no spec version in common")
}

func TestUnwrapRejectsBadEnvelopes(t *testing.T) {
	cases := map[string]string{
		"not json":         `{`,
		"unknown field":    `{"spec_version":"vmm-server/v1","spec":{},"x":1}`,
		"missing spec":     `{"spec_version":"vmm-server/v1"}`,
		"unknown version":  `{"spec_version":"vmm-server/v0","spec":{}}`,
		"invalid spec":     `{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":0,"memory_mb":64,"chipset":"i440fx"},"components":{}}}`,
		"trailing garbage": `{"spec_version":"vmm-server/v1","spec":{}} x`,
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := Unwrap([]byte(data))
			require.Error(t, err)
		})
	}
}

func FuzzUnwrap(f *testing.F) {
	env, err := Wrap(testSpec(&testing.T{}, 512), Names())
	if err != nil {
		f.Fatal(err)
	}
	data, _ := env.Marshal()
	f.Add(data)
	f.Add([]byte(`{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, name, err := Unwrap(data)
		if err != nil {
			return
		}
		// Whatever decodes re-wraps in the same version and decodes equal.
		env, err := Wrap(s, []string{name})
		require.NoError(t, err)
		again, err := env.Marshal()
		require.NoError(t, err)
		s2, _, err := Unwrap(again)
		require.NoError(t, err)
		require.True(t, s.Equal(s2))
	})
}
