package corpus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wagglevm/waggle/versions"
)

// Handler replays one corpus file: it decodes data with today's code and
// re-encodes it, failing unless the result is want (the file itself, or
// its after-file).
type Handler func(r *Replayer, data, want []byte) error

// Replayer replays a corpus against today's code. Its tables default to the
// real ones; tests replace them to show that a check fails when broken.
type Replayer struct {
	// Dir is the corpus directory.
	Dir string
	// Spokes are the registered spec versions (versions.Names order).
	Spokes []versions.Spoke
	// Importers are today's device state importers by payload kind.
	Importers map[string]Importer
	// Handlers replays each kind of file, per version.
	Handlers map[Version]map[string]Handler
	// TempDir holds files replay needs (disk images for device payloads).
	TempDir string
}

// NewReplayer returns a replayer of the corpus under root with today's
// tables.
func NewReplayer(root, tmp string) *Replayer {
	return &Replayer{
		Dir:       filepath.Join(root, Dir),
		Spokes:    registeredSpokes(),
		Importers: DeviceImporters(),
		Handlers: map[Version]map[string]Handler{
			{API: "vmm-server", N: 1}:             vmmServerV1Handlers(),
			{API: "vmm-server", N: 2}:             vmmServerV2Handlers(),
			{API: "sled-agent", N: 1}:             sledAgentV1Handlers(),
			{API: "control-plane-internal", N: 1}: controlPlaneInternalV1Handlers(),
			{API: "control-plane", N: 1}:          controlPlaneV1Handlers(),
		},
		TempDir: tmp,
	}
}

// Summary says what a replay covered.
type Summary struct {
	Files     int
	ByKind    map[string]int
	Versions  []Version
	Crossings int
	Elapsed   time.Duration
}

// String is the summary line the gate prints.
func (s Summary) String() string {
	per := 0.0
	if s.Files > 0 {
		per = float64(s.Elapsed) / float64(time.Second) * 1000 / float64(s.Files)
	}
	var names []string
	for _, v := range sortedVersions(s.Versions) {
		names = append(names, v.String())
	}
	return fmt.Sprintf("replayed %d files of %s (%d crossings between versions checked) in %v (%.3f s per 1,000 files)",
		s.Files, strings.Join(names, ", "), s.Crossings, s.Elapsed.Round(time.Millisecond), per)
}

// Replay replays every file of the corpus. Every file must have a handler
// for its version and kind: a file nothing replays is an error.
func (r *Replayer) Replay() (Summary, error) {
	start := time.Now()
	sum := Summary{ByKind: map[string]int{}}
	files, err := ListFiles(filepath.Dir(r.Dir))
	if err != nil {
		return sum, err
	}
	var errs []error
	seenVersion := map[Version]bool{}
	for _, f := range files {
		fp, err := ParseFilePath(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", Dir, f, err))
			continue
		}
		if fp.After {
			continue // replayed with its original
		}
		if !seenVersion[fp.Version] {
			seenVersion[fp.Version] = true
			sum.Versions = append(sum.Versions, fp.Version)
		}
		if fp.Kind == KindCross {
			continue // checked as a whole below
		}
		data, err := os.ReadFile(filepath.Join(r.Dir, filepath.FromSlash(f)))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want := data
		if after, err := os.ReadFile(filepath.Join(r.Dir, filepath.FromSlash(fp.AfterPath().String()))); err == nil {
			want = after
		}
		h := r.Handlers[fp.Version][fp.Kind]
		if h == nil {
			errs = append(errs, fmt.Errorf("%s/%s: nothing replays kind %q of %s; add a handler", Dir, f, fp.Kind, fp.Version))
			continue
		}
		if err := h(r, data, want); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", Dir, f, err))
			continue
		}
		sum.Files++
		sum.ByKind[fp.Kind]++
	}
	for _, v := range sum.Versions {
		n, err := r.checkCrossings(v)
		sum.Crossings += n
		errs = append(errs, err)
	}
	sum.Elapsed = time.Since(start)
	return sum, errors.Join(errs...)
}

// checkCrossings compares the crossing records in v's corpus with what
// today's spokes compute.
func (r *Replayer) checkCrossings(v Version) (int, error) {
	want, err := crossings(r.Spokes, v, specFilesOnDisk(r.Dir))
	if err != nil {
		return 0, err
	}
	have, err := filesOfKind(r.Dir, v, KindCross)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, p := range want.paths() {
		got, ok := have[p]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s/%s/%s: crossing not recorded; regenerate the corpus of %s", Dir, v, p, v))
		case !bytes.Equal(got, want[p]):
			errs = append(errs, fmt.Errorf("%s/%s/%s: crossing changed: recorded %s, today %s", Dir, v, p, got, want[p]))
		}
	}
	for p := range have {
		if _, ok := want[p]; !ok {
			errs = append(errs, fmt.Errorf("%s/%s/%s: recorded crossing between versions no longer registered", Dir, v, p))
		}
	}
	return len(want), errors.Join(errs...)
}

// filesOfKind reads one kind's files of a version (path relative to the
// version directory -> bytes). An after-file is no file of its own: its
// bytes stand for its original's, as what today's code must produce.
func filesOfKind(dir string, v Version, kind string) (fileSet, error) {
	out := fileSet{}
	kd := filepath.Join(dir, filepath.FromSlash(v.String()), kind)
	entries, err := os.ReadDir(kd)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), AfterSuffix) {
			continue // read with its original
		}
		data, err := os.ReadFile(filepath.Join(kd, e.Name()))
		if err != nil {
			return nil, err
		}
		after, err := os.ReadFile(filepath.Join(kd, strings.TrimSuffix(e.Name(), ".json")+AfterSuffix))
		switch {
		case err == nil:
			data = after
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
		out[kind+"/"+e.Name()] = data
	}
	return out, nil
}

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(a, b []byte) (bool, error) {
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		return false, err
	}
	ca, _ := json.Marshal(va)
	cb, _ := json.Marshal(vb)
	return bytes.Equal(ca, cb), nil
}

// sortedVersions orders versions by API and number.
func sortedVersions(vs []Version) []Version {
	return slices.SortedFunc(slices.Values(vs), func(a, b Version) int {
		if a.API != b.API {
			if a.API < b.API {
				return -1
			}
			return 1
		}
		return a.N - b.N
	})
}
