package corpus

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/wagglevm/waggle/internal/apicheck"
)

// Dir is the corpus directory relative to the repository root.
const Dir = "corpus"

// ManifestName and ReleasesName are the corpus's two index files, in Dir.
const (
	ManifestName = "MANIFEST"
	ReleasesName = "RELEASES"
)

// AfterSuffix ends the name of an accepted difference's file, beside the
// original <name>.json.
const AfterSuffix = ".after.json"

// filePattern is what a corpus file's path (relative to Dir) looks like:
// <api>/v<N>/<kind>/<name>.json.
var filePattern = regexp.MustCompile(`^([a-z][a-z0-9-]*)/v([1-9][0-9]*)/([a-z][a-z0-9-]*)/([a-z0-9][a-z0-9._-]*)\.json$`)

// Version names one version of one API, e.g. {API: "vmm-server", N: 1}.
type Version struct {
	API string
	N   int
}

// String returns "<api>/v<N>", the version's directory under Dir.
func (v Version) String() string { return fmt.Sprintf("%s/v%d", v.API, v.N) }

// ContractPath returns the path of the version's contract in the
// repository, as openapi/LOCK names it.
func (v Version) ContractPath() string { return fmt.Sprintf("openapi/%s/v%d.yaml", v.API, v.N) }

// FilePath is a corpus file's path relative to Dir, parsed.
type FilePath struct {
	Version Version
	Kind    string
	// Name is the file name without ".json" (and, for an after-file,
	// without ".after.json").
	Name string
	// After says the file is an accepted difference of <Name>.json.
	After bool
}

// ParseFilePath parses a path relative to Dir.
func ParseFilePath(p string) (FilePath, error) {
	m := filePattern.FindStringSubmatch(p)
	if m == nil {
		return FilePath{}, fmt.Errorf("%q is not a corpus file path (<api>/v<N>/<kind>/<name>.json, lower case)", p)
	}
	var n int
	fmt.Sscan(m[2], &n)
	fp := FilePath{Version: Version{API: m[1], N: n}, Kind: m[3], Name: m[4]}
	if base, ok := strings.CutSuffix(p, AfterSuffix); ok {
		fp.After = true
		fp.Name = path.Base(base)
	}
	return fp, nil
}

// String returns the path relative to Dir.
func (f FilePath) String() string {
	suffix := ".json"
	if f.After {
		suffix = AfterSuffix
	}
	return path.Join(f.Version.String(), f.Kind, f.Name+suffix)
}

// Original returns the path of the file an after-file replaces.
func (f FilePath) Original() FilePath { f.After = false; return f }

// AfterPath returns the path of f's after-file.
func (f FilePath) AfterPath() FilePath { f.After = true; return f }

// ListFiles returns every file under the corpus's version directories
// (corpus/<api>/v<N>/...), as slash paths relative to Dir, sorted. Files
// directly in Dir (MANIFEST, RELEASES) are not listed.
func ListFiles(root string) ([]string, error) {
	base := filepath.Join(root, Dir)
	var out []string
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.Contains(rel, "/") && !strings.HasPrefix(rel, "testdata/") {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list corpus files: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// Released returns the versions whose contracts openapi/LOCK lists: their
// corpus is frozen. It reads LOCK under root.
func Released(root string) (map[Version]bool, error) {
	data, err := os.ReadFile(filepath.Join(root, apicheck.LockPath))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", apicheck.LockPath, err)
	}
	entries, err := apicheck.ParseLock(data)
	if err != nil {
		return nil, err
	}
	out := map[Version]bool{}
	contract := regexp.MustCompile(`^openapi/([a-z][a-z0-9-]*)/v([1-9][0-9]*)\.yaml$`)
	for _, e := range entries {
		if m := contract.FindStringSubmatch(e.Path); m != nil {
			var n int
			fmt.Sscan(m[2], &n)
			out[Version{API: m[1], N: n}] = true
		}
	}
	return out, nil
}
