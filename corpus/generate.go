package corpus

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Generator synthesizes every file of one version's corpus.
type Generator struct {
	Version Version
	// Synthesize returns the files by path relative to the version's
	// directory; it must return the same bytes on every run.
	Synthesize func() (fileSet, error)
}

// Generators lists the versions whose corpus this build synthesizes. A new
// API version adds its line; a released version keeps its line (Generate
// then leaves its files alone), so that the generator of its successor can
// reuse the same synthesis.
var Generators = []Generator{
	{Version{API: "vmm-server", N: 1}, synthVMMServerV1},
	{Version{API: "vmm-server", N: 2}, synthVMMServerV2},
	{Version{API: "sled-agent", N: 1}, synthSledAgentV1},
	{Version{API: "control-plane-internal", N: 1}, synthControlPlaneInternalV1},
	{Version{API: "control-plane", N: 1}, synthControlPlaneV1},
}

// CapturedPrefix starts the name of a file captured from a running server
// (see CaptureHook). Generate leaves such files in place.
const CapturedPrefix = "captured-"

// GenerateReport says what Generate did.
type GenerateReport struct {
	Written []Version // regenerated
	Frozen  []Version // released, left alone
	Files   int
}

// Generate regenerates the synthesized corpus of every version in
// development under root (the repository) and rewrites MANIFEST. Released
// versions (openapi/LOCK) are never touched: their files and MANIFEST lines
// stay as they are.
func Generate(root string) (GenerateReport, error) {
	released, err := Released(root)
	if err != nil {
		return GenerateReport{}, err
	}
	return GenerateInto(filepath.Join(root, Dir), released, Generators)
}

// GenerateInto is Generate writing into the corpus directory dir, with the
// released versions given.
func GenerateInto(dir string, released map[Version]bool, gens []Generator) (GenerateReport, error) {
	var rep GenerateReport
	old := Manifest{}
	name := path.Join(Dir, ManifestName)
	if data, err := os.ReadFile(filepath.Join(dir, ManifestName)); err == nil {
		if old, err = ParseManifest(name, data); err != nil {
			return rep, fmt.Errorf("fix %s before regenerating: %w", name, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return rep, err
	}
	for _, g := range gens {
		if released[g.Version] {
			// The release rule: a released version's corpus never changes.
			rep.Frozen = append(rep.Frozen, g.Version)
			continue
		}
		set, err := g.Synthesize()
		if err != nil {
			return rep, fmt.Errorf("synthesize %s: %w", g.Version, err)
		}
		cx, err := crossings(registeredSpokes(), g.Version, specsWith(dir, g.Version, set))
		if err != nil {
			return rep, fmt.Errorf("cross %s: %w", g.Version, err)
		}
		for p, data := range cx {
			set[p] = data
		}
		if err := writeVersion(filepath.Join(dir, filepath.FromSlash(g.Version.String())), set); err != nil {
			return rep, fmt.Errorf("write %s: %w", g.Version, err)
		}
		rep.Written = append(rep.Written, g.Version)
	}
	m, err := rebuildManifest(dir, old, released, nil)
	if err != nil {
		return rep, err
	}
	rep.Files = len(m.Entries)
	return rep, os.WriteFile(filepath.Join(dir, ManifestName), m.Format(), 0o644)
}

// specsWith returns the spec files of a version: from set for v, from the
// corpus directory for the others.
func specsWith(dir string, v Version, set fileSet) func(Version) (map[string][]byte, error) {
	return func(w Version) (map[string][]byte, error) {
		if w != v {
			return specFilesOnDisk(dir)(w)
		}
		out := map[string][]byte{}
		for p, data := range set {
			if name, ok := strings.CutPrefix(p, KindSpec+"/"); ok {
				out[strings.TrimSuffix(name, ".json")] = data
			}
		}
		return out, nil
	}
}

// writeVersion replaces the synthesized files of one version directory
// with set, leaving captured files.
func writeVersion(vdir string, set fileSet) error {
	err := filepath.WalkDir(vdir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), CapturedPrefix) {
			return err
		}
		return os.Remove(p)
	})
	if err != nil {
		return err
	}
	for _, p := range set.paths() {
		full := filepath.Join(vdir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, set[p], 0o644); err != nil {
			return err
		}
	}
	return removeEmptyDirs(vdir)
}

func removeEmptyDirs(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			sub := filepath.Join(dir, e.Name())
			if err := removeEmptyDirs(sub); err != nil {
				return err
			}
			if left, _ := os.ReadDir(sub); len(left) == 0 {
				os.Remove(sub)
			}
		}
	}
	return nil
}

// rebuildManifest keeps the lines of released versions as they were and
// lists every file of the other versions with its hash now, sorted. A
// captured file is hashed only when captured is true for it (the capture
// command just wrote it); otherwise its old line is kept as it was, or it
// is left unlisted: Generate never vouches for a captured file.
func rebuildManifest(dir string, old Manifest, released map[Version]bool, captured map[string]bool) (Manifest, error) {
	var m Manifest
	kept := map[string]bool{}
	for _, e := range old.Entries {
		if fp, err := ParseFilePath(e.Path); err == nil && released[fp.Version] {
			m.Entries = append(m.Entries, ManifestEntry{SHA256: e.SHA256, Path: e.Path, Reason: e.Reason})
			kept[e.Path] = true
		}
	}
	files, err := ListFiles(filepath.Dir(dir))
	if err != nil {
		return m, err
	}
	for _, f := range files {
		fp, err := ParseFilePath(f)
		if err != nil {
			return m, fmt.Errorf("%s/%s: %w", Dir, f, err)
		}
		if released[fp.Version] {
			continue // never rewritten; CheckManifest reports it if unlisted
		}
		if isCaptured(f) && !captured[f] {
			if prev, ok := old.Lookup(f); ok {
				m.Entries = append(m.Entries, prev)
			}
			continue // CheckManifest reports it if unlisted or changed
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return m, err
		}
		e := ManifestEntry{SHA256: Sum(data), Path: f}
		if prev, ok := old.Lookup(f); ok {
			e.Reason = prev.Reason
		}
		m.Entries = append(m.Entries, e)
	}
	slices.SortStableFunc(m.Entries, func(a, b ManifestEntry) int { return strings.Compare(a.Path, b.Path) })
	return m, nil
}

// treeEqual reports the first difference between two corpus trees, for
// the determinism check.
func treeEqual(a, b string) error {
	read := func(dir string) (map[string][]byte, error) {
		out := map[string][]byte{}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if strings.HasSuffix(rel, ".go") || strings.HasPrefix(rel, "testdata") || rel == ReleasesName {
				return nil
			}
			data, err := os.ReadFile(p)
			out[filepath.ToSlash(rel)] = data
			return err
		})
		return out, err
	}
	ta, err := read(a)
	if err != nil {
		return err
	}
	tb, err := read(b)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range sortedKeys(ta) {
		if bd, ok := tb[p]; !ok {
			errs = append(errs, fmt.Errorf("%s: not written by the generator", p))
		} else if !bytes.Equal(ta[p], bd) {
			errs = append(errs, fmt.Errorf("%s: differs from what the generator writes", p))
		}
	}
	for _, p := range sortedKeys(tb) {
		if _, ok := ta[p]; !ok {
			errs = append(errs, fmt.Errorf("%s: the generator writes it, the corpus lacks it", p))
		}
	}
	return errors.Join(errs...)
}

// CheckFresh regenerates the corpus of root into a temporary directory and
// compares it byte for byte with the committed one: the synthesized files
// of versions in development must be what this commit's generator writes
// (a second run is the determinism check), and MANIFEST must list them.
// Captured files, which no generator writes, must have their provenance
// (CheckCaptured).
func CheckFresh(root string) error {
	released, err := Released(root)
	if err != nil {
		return err
	}
	if err := CheckCaptured(root); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "corpus-fresh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, Dir)
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(root, Dir))); err != nil {
		return fmt.Errorf("copy the corpus: %w", err)
	}
	if _, err := GenerateInto(dst, released, Generators); err != nil {
		return err
	}
	if err := treeEqual(filepath.Join(root, Dir), dst); err != nil {
		return fmt.Errorf("the corpus is not what 'go run ./cmd/corpusgen' writes on this commit:\n%w", err)
	}
	return nil
}

// versionDir is a version's corpus directory relative to Dir.
var versionDir = regexp.MustCompile(`^([a-z][a-z0-9-]*)/v([1-9][0-9]*)$`)

// CheckCoverage checks that every contract under root has a corpus: a
// Generator while it is in development, files once it is released; that
// every Generator's version has a contract; and that every corpus folder
// corpus/<api>/v<N> is that of a version with a contract.
func CheckCoverage(root string) error {
	released, err := Released(root)
	if err != nil {
		return err
	}
	docs, err := filepath.Glob(filepath.Join(root, "openapi", "*", "v*.yaml"))
	if err != nil {
		return err
	}
	gens := map[Version]bool{}
	for _, g := range Generators {
		gens[g.Version] = true
	}
	contracts := map[Version]bool{}
	var errs []error
	for _, d := range docs {
		var v Version
		api := filepath.Base(filepath.Dir(d))
		if _, err := fmt.Sscanf(filepath.Base(d), "v%d.yaml", &v.N); err != nil {
			continue
		}
		v.API = api
		contracts[v] = true
		switch {
		case released[v]:
			files, err := os.ReadDir(filepath.Join(root, Dir, filepath.FromSlash(v.String())))
			if err != nil || len(files) == 0 {
				errs = append(errs, fmt.Errorf("%s is released but has no corpus in %s/%s", v, Dir, v))
			}
		case !gens[v]:
			errs = append(errs, fmt.Errorf("%s has a contract but no corpus generator: add it to corpus.Generators (and its replay handlers to corpus.NewReplayer)", v))
		}
	}
	for _, g := range Generators {
		if !contracts[g.Version] {
			errs = append(errs, fmt.Errorf("corpus.Generators lists %s, which has no contract %s", g.Version, g.Version.ContractPath()))
		}
	}
	dirs, err := filepath.Glob(filepath.Join(root, Dir, "*", "v*"))
	if err != nil {
		return err
	}
	for _, d := range dirs {
		rel, err := filepath.Rel(filepath.Join(root, Dir), d)
		if err != nil {
			return err
		}
		m := versionDir.FindStringSubmatch(filepath.ToSlash(rel))
		if m == nil {
			continue
		}
		v := Version{API: m[1]}
		fmt.Sscan(m[2], &v.N)
		if !contracts[v] {
			errs = append(errs, fmt.Errorf("%s/%s is the corpus of a version with no contract (%s): remove it, or add the contract", Dir, v, v.ContractPath()))
		}
	}
	return errors.Join(errs...)
}
