package vmconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
	v1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
)

const full = `
name = "demo"
description = "a ticking VM"

[board]
cpus = 2
memory_mb = 256

[boot]
image = "disk"
cmdline = "slot=1"

[[serial]]
port = "com1"

[[disk]]
name = "data"
slot = 1
path = "vms/data.img"
readonly = true
`

func TestParseAndConvert(t *testing.T) {
	f, err := Parse([]byte(full))
	require.NoError(t, err)
	require.Equal(t, "demo", f.Name)
	s, err := f.Spec()
	require.NoError(t, err)
	require.Equal(t, spec.Board{CPUs: 2, MemoryMiB: 256, Chipset: spec.ChipsetI440FX}, s.Board())
	require.Equal(t, spec.Boot{Image: "disk", Cmdline: "slot=1"}, s.Boot())
	dev, ok := s.Component(spec.MustKey("data"))
	require.True(t, ok)
	require.Equal(t, spec.VirtioDisk{Backend: spec.MustKey("data-backend"), Slot: 1}, dev)
	be, ok := s.Component(spec.MustKey("data-backend"))
	require.True(t, ok)
	require.Equal(t, spec.FileStorageBackend{Path: "vms/data.img", ReadOnly: true, BlockSize: 512}, be)
	c, ok := s.Component(spec.MustKey("com1"))
	require.True(t, ok)
	require.Equal(t, spec.SerialPort{Num: spec.COM1}, c)
}

func TestDefaults(t *testing.T) {
	f, err := Parse([]byte("[board]\ncpus = 1\nmemory_mb = 64\n"))
	require.NoError(t, err)
	s, err := f.Spec()
	require.NoError(t, err)
	require.Equal(t, "ticker", s.Boot().Image)
	require.Equal(t, spec.ChipsetI440FX, s.Board().Chipset)
	require.Zero(t, s.Len())
}

func TestBadConfigs(t *testing.T) {
	cases := []struct{ name, toml, want string }{
		{"unknown key", "[board]\ncpus = 1\nmemory_mb = 64\ncolour = 3\n", "colour"},
		{"wrong type", "[board]\ncpus = \"two\"\nmemory_mb = 64\n", "line 2"},
		{"not toml", "[board\n", "line 1"},
		{"bad port", "[board]\ncpus = 1\nmemory_mb = 64\n[[serial]]\nport = \"com9\"\n", "serial[0].port"},
		{"same port twice", "[board]\ncpus = 1\nmemory_mb = 64\n[[serial]]\nport = \"com1\"\n[[serial]]\nport = \"com1\"\n", "duplicate_key"},
		{"no cpus", "[board]\nmemory_mb = 64\n", "board.cpus"},
		{"bad chipset", "[board]\ncpus = 1\nmemory_mb = 64\nchipset = \"q35\"\n", "board.chipset"},
		{"absolute disk path", "[board]\ncpus = 1\nmemory_mb = 64\n[[disk]]\nname = \"d\"\npath = \"/etc/shadow\"\n", "disk[0].path: path \"/etc/shadow\" is absolute"},
		{"dot-dot disk path", "[board]\ncpus = 1\nmemory_mb = 64\n[[disk]]\nname = \"d\"\npath = \"a/../../x\"\n", "disk[0].path"},
		{"no disk path", "[board]\ncpus = 1\nmemory_mb = 64\n[[disk]]\nname = \"d\"\n", "disk[0].path: path is empty"},
		{"two disks in a slot", "[board]\ncpus = 1\nmemory_mb = 64\n[[disk]]\nname = \"a\"\npath = \"a\"\n[[disk]]\nname = \"b\"\npath = \"b\"\n", "slot_conflict"},
		{"bad disk name", "[board]\ncpus = 1\nmemory_mb = 64\n[[disk]]\nname = \"-x\"\npath = \"a\"\n", "disk[0].name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse([]byte(c.toml))
			if err == nil {
				_, err = f.Spec()
			}
			require.ErrorContains(t, err, c.want)
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("[board]\ncpus = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		_, _ = cfg.Spec() // must not panic
	})
}

// TestExamples: every config in examples/ converts into a valid spec, and
// its JSON twin (the same name with .json), decoded as version 1 of the
// contract, is the same spec. Disk paths in examples are storage paths.
func TestExamples(t *testing.T) {
	tomls, err := filepath.Glob("../examples/*.toml")
	require.NoError(t, err)
	require.NotEmpty(t, tomls)
	sawDisk := false
	for _, path := range tomls {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Load(path)
			require.NoError(t, err)
			s, err := f.Spec()
			require.NoError(t, err)
			data, err := os.ReadFile(strings.TrimSuffix(path, ".toml") + ".json")
			require.NoError(t, err, "each TOML example has its JSON twin")
			w, err := v1.DecodeInstanceSpec(data)
			require.NoError(t, err)
			js, err := v1.ToSpec(w)
			require.NoError(t, err)
			require.True(t, s.Equal(js), "%s and its JSON twin describe different VMs", path)
			for _, e := range s.Components() {
				if b, ok := e.Component.(spec.FileStorageBackend); ok {
					sawDisk = true
					require.NoError(t, spec.CheckStoragePath(b.Path))
				}
			}
		})
	}
	require.True(t, sawDisk, "an example shows a disk")
}
