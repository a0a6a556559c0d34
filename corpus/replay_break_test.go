package corpus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
	"github.com/wagglevm/waggle/vmm/devices"
)

// replayErr replays a copy of the corpus after break_ edits it (and the
// replayer's tables).
func replayErr(t *testing.T, break_ func(r string, rep *Replayer)) error {
	t.Helper()
	r := copyRoot(t, "")
	rep := NewReplayer(r, t.TempDir())
	_, err := rep.Replay()
	require.NoError(t, err, "the copy replays before it is broken")
	break_(r, rep)
	_, err = rep.Replay()
	return err
}

func writeFile(t *testing.T, r, p, data string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(corpusFile(r, p)), 0o755))
	require.NoError(t, os.WriteFile(corpusFile(r, p), []byte(data), 0o644))
}

func TestReplayCatchesBreakage(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, r string, rep *Replayer)
		want   []string
	}{
		{"newest UART version dropped from the importer", func(t *testing.T, r string, rep *Replayer) {
			imp := rep.Importers[devices.UARTStateKind]
			imp.Versions = []uint32{1}
			rep.Importers[devices.UARTStateKind] = imp
		}, []string{"uart-v2-reset.json", "version 2 was dropped from today's importer"}},
		{"the version before the newest dropped", func(t *testing.T, r string, rep *Replayer) {
			imp := rep.Importers[devices.UARTStateKind]
			imp.Versions = []uint32{2}
			rep.Importers[devices.UARTStateKind] = imp
		}, []string{"uart-v1-reset.json", "version 1 was dropped"}},
		{"virtio-blk importer gone", func(t *testing.T, r string, rep *Replayer) {
			delete(rep.Importers, devices.VirtioBlkStateKind)
		}, []string{"blk-512-rw-slot0-v1-driver-ok.json", "no importer of virtio_blk_mmio"}},
		{"device refuses the payload", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/device/uart-v2-reset.json", `{"kind":"uart16550a","version":2,"data":"AAAA","device":{"port":"com1"}}`)
		}, []string{"uart-v2-reset.json", "today's device refuses it"}},
		{"unknown kind", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/widget/a.json", `{}`)
		}, []string{"widget/a.json", "nothing replays kind"}},
		{"response with a field the client lacks", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/instance/running.json", `{"gen":3,"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"x"},"state":"running","extra":1}`)
		}, []string{"instance/running.json", "extra"}},
		{"response with an enum value v1 lacks", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/instance/running.json", `{"gen":3,"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"x"},"state":"paused"}`)
		}, []string{"instance/running.json", "state"}},
		{"spec the decoder refuses", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, someSpec, `{"board":{"chipset":"q35","cpus":1,"memory_mb":16},"components":{}}`)
		}, []string{someSpec, "chipset"}},
		{"ensure request with an unknown branch", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/ensure-request/target-no-replacements.json", `{"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"x"},"clone":{}}`)
		}, []string{"target-no-replacements.json"}},
		{"envelope of an unknown version", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/envelope/minimal.json", `{"spec_version":"vmm-server/v0","spec":{}}`)
		}, []string{"envelope/minimal.json", "today's migration target refuses it"}},
		{"machine state the codec refuses", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/machine/one-vcpu-fpu.json", `{"version":1,"data":"V0dHTFNUQVQ="}`)
		}, []string{"one-vcpu-fpu.json", "today's codec refuses it"}},
		{"frame with trailing bytes", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/frame/ready.json", `{"type":"Ready","frame":"BAAAAAAAAAAA"}`)
		}, []string{"frame/ready.json", "after the frame"}},
		{"frame type unknown today", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/frame/ready.json", `{"type":"Ready","frame":"YwAAAAAAAAA="}`)
		}, []string{"frame/ready.json", "stream reader refuses it"}},
		{"state change the contract lacks", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/state-change-request/run.json", `{"requested":"pause"}`)
		}, []string{"state-change-request/run.json", "requested"}},
		{"expect request out of range", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/migrate-expect-request/ttl-max.json", `{"migration_id":"7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f","ttl_seconds":3601}`)
		}, []string{"migrate-expect-request/ttl-max.json", "ttl_seconds"}},
		{"serial history with data that is not base64", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/serial-history/ticks.json", `{"data":"not base64!","start":0,"end":3}`)
		}, []string{"serial-history/ticks.json"}},
		{"ensure request whose replacement is a device", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/ensure-request/target-replacements.json",
				`{"migrate":{"migration_id":"7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f","replace_components":{"com1":{"num":"com1","type":"serial_port"}},"secret":"3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","src_addr":"127.0.0.1:1"},"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"x"}}`)
		}, []string{"target-replacements.json", "replacements", "only storage backends"}},
		{"no protocol in common with the release", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/versions/importable.json", `{"protocols":[99],"spec_versions":["vmm-server/v1"],"devices":{"uart16550a":[1,2]},"machine_state":1}`)
		}, []string{"importable.json", "no migration protocol in common"}},
		{"release reads a device version today's build no longer writes", func(t *testing.T, r string, rep *Replayer) {
			writeFile(t, r, "vmm-server/v1/versions/importable.json", `{"protocols":[1],"spec_versions":["vmm-server/v1"],"devices":{"uart16550a":[7]},"machine_state":1}`)
		}, []string{"importable.json", "writes no uart16550a state version"}},
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

// fakeUnsupported is a fake version's "cannot express" error, shaped like
// every spoke's.
type fakeUnsupported struct{ Problems []spec.Problem }

func (e *fakeUnsupported) Error() string { return fmt.Sprint("fake v2 cannot express: ", e.Problems) }

// fakeV2 is a version 2 that is version 1 under another name but cannot
// express the backends refuse picks.
func fakeV2(refuse func(spec.FileStorageBackend) bool) versions.Spoke {
	v1, _ := versions.Lookup("vmm-server/v1")
	return versions.Spoke{
		Name: "vmm-server/v2",
		Encode: func(s spec.Spec) ([]byte, error) {
			var ps []spec.Problem
			for _, e := range s.Components() {
				if fb, ok := e.Component.(spec.FileStorageBackend); ok && refuse(fb) {
					ps = append(ps, spec.Problem{Path: spec.ComponentPath(e.Key, "block_size"), Rule: "unsupported_by_version"})
				}
			}
			if len(ps) > 0 {
				return nil, fmt.Errorf("encode: %w", &fakeUnsupported{ps})
			}
			return v1.Encode(s)
		},
		Decode: v1.Decode,
	}
}

// TestCrossingsOverTheRegistry: with a second version registered, its
// corpus records every crossing both ways, and a change in what crosses is
// seen in either direction.
func TestCrossingsOverTheRegistry(t *testing.T) {
	r := copyRoot(t, "")
	dir := filepath.Join(r, Dir)
	withoutV2Corpus(t, r)
	v2 := Version{API: "vmm-server", N: 2}
	v1, _ := versions.Lookup("vmm-server/v1")
	only4096 := func(fb spec.FileStorageBackend) bool { return fb.BlockSize == 4096 }
	spokes := []versions.Spoke{fakeV2(only4096), v1}

	set, err := crossings(spokes, v2, specFilesOnDisk(dir))
	require.NoError(t, err)
	specs, err := specFilesOnDisk(dir)(Version{API: "vmm-server", N: 1})
	require.NoError(t, err)
	require.Len(t, set, len(specs), "one record per v1 spec (v2 has no specs of its own yet)")
	var rec CrossRecord
	require.NoError(t, json.Unmarshal(set["cross/from-v1-disk-4096-readonly.json"], &rec))
	require.Equal(t, CrossCannotExpress, rec.Result)
	require.Equal(t, []string{"components.data.backend.block_size unsupported_by_version"}, rec.Problems)
	require.NoError(t, json.Unmarshal(set["cross/from-v1-minimal.json"], &rec))
	require.Equal(t, CrossOK, rec.Result)

	for p, data := range set {
		writeFile(t, r, v2.String()+"/"+p, string(data))
	}
	rep := NewReplayer(r, t.TempDir())
	rep.Spokes = spokes
	rep.Handlers[v2] = map[string]Handler{}
	sum, err := rep.Replay()
	require.NoError(t, err)
	require.Equal(t, len(specs), sum.Crossings)

	// v2 learns to express 4096: a crossing that failed now succeeds.
	rep.Spokes = []versions.Spoke{fakeV2(func(spec.FileStorageBackend) bool { return false }), v1}
	_, err = rep.Replay()
	require.ErrorContains(t, err, "from-v1-disk-4096-readonly.json: crossing changed")
	// v2 loses 512: crossings that succeeded now fail.
	rep.Spokes = []versions.Spoke{fakeV2(func(fb spec.FileStorageBackend) bool { return fb.BlockSize == 512 }), v1}
	_, err = rep.Replay()
	require.ErrorContains(t, err, "from-v1-disk-512-readwrite.json: crossing changed")
	// A record missing.
	rep.Spokes = spokes
	require.NoError(t, os.Remove(corpusFile(r, v2.String()+"/cross/from-v1-minimal.json")))
	_, err = rep.Replay()
	require.ErrorContains(t, err, "from-v1-minimal.json: crossing not recorded")
	// v2 unregistered: its records are stale.
	rep.Spokes = []versions.Spoke{v1}
	_, err = rep.Replay()
	require.ErrorContains(t, err, "no longer registered")
	require.True(t, strings.Contains(err.Error(), "cross/from-v1-"))
}

// withoutV2Corpus removes the real vmm-server/v2 corpus from the copy r, so
// that a test can stand a fake version 2 in its place.
func withoutV2Corpus(t *testing.T, r string) {
	t.Helper()
	require.NoError(t, os.RemoveAll(filepath.Join(r, Dir, "vmm-server", "v2")))
}

// TestLossyCrossingFails: a version that reads back less than it wrote is
// refused, not recorded.
func TestLossyCrossingFails(t *testing.T) {
	r := copyRoot(t, "")
	v1, _ := versions.Lookup("vmm-server/v1")
	lossy := fakeV2(func(spec.FileStorageBackend) bool { return false })
	lossy.Decode = func(data []byte) (spec.Spec, error) {
		s, err := v1.Decode(data)
		if err != nil {
			return s, err
		}
		b := spec.NewBuilder().SetBoard(s.Board()).SetBoot(spec.Boot{Image: s.Boot().Image})
		for _, e := range s.Components() {
			b.Add(e.Key, e.Component)
		}
		return b.Build() // forgets the command line
	}
	_, err := crossings([]versions.Spoke{lossy, v1}, Version{API: "vmm-server", N: 2}, specFilesOnDisk(filepath.Join(r, Dir)))
	require.ErrorContains(t, err, "crossing into vmm-server/v2 and back loses information")
}

// TestCrossingAfterFile: a crossing record may have an accepted
// difference: its after-file is what today's spokes must compute, and it
// is no record of its own.
func TestCrossingAfterFile(t *testing.T) {
	r := copyRoot(t, "")
	dir := filepath.Join(r, Dir)
	withoutV2Corpus(t, r)
	v2 := Version{API: "vmm-server", N: 2}
	v1, _ := versions.Lookup("vmm-server/v1")
	then := []versions.Spoke{fakeV2(func(fb spec.FileStorageBackend) bool { return fb.BlockSize == 4096 }), v1}
	now := []versions.Spoke{fakeV2(func(spec.FileStorageBackend) bool { return false }), v1}
	recorded, err := crossings(then, v2, specFilesOnDisk(dir))
	require.NoError(t, err)
	today, err := crossings(now, v2, specFilesOnDisk(dir))
	require.NoError(t, err)
	for p, data := range recorded {
		writeFile(t, r, v2.String()+"/"+p, string(data))
	}
	const rec = "cross/from-v1-disk-4096-readonly"
	require.NotEqual(t, recorded[rec+".json"], today[rec+".json"])
	rep := NewReplayer(r, t.TempDir())
	rep.Spokes = now
	rep.Handlers[v2] = map[string]Handler{}
	_, err = rep.Replay()
	require.ErrorContains(t, err, rec+".json: crossing changed")

	for p, data := range today {
		if !bytes.Equal(data, recorded[p]) {
			writeFile(t, r, v2.String()+"/"+strings.TrimSuffix(p, ".json")+AfterSuffix, string(data))
		}
	}
	sum, err := rep.Replay()
	require.NoError(t, err)
	require.Equal(t, len(today), sum.Crossings)

	// The after-file must be what today computes, not anything.
	writeFile(t, r, v2.String()+"/"+rec+AfterSuffix, string(recorded[rec+".json"]))
	_, err = rep.Replay()
	require.ErrorContains(t, err, rec+".json: crossing changed")
	require.NotContains(t, err.Error(), "no longer registered")
}
