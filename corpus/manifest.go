package corpus

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// The MANIFEST format. One file per line:
//
//	<sha256 hex>  <path relative to corpus/>
//	<sha256 hex>  <path>.after.json  reason: <why the difference is accepted>
//
// Blank lines and lines starting with "#" are comments. Every file under
// corpus/<api>/v<N>/ has exactly one line; an after-file's line must carry
// a reason, and no other line may. Generate writes the lines of versions in
// development sorted by path; lines of released versions are never
// rewritten.

// ManifestEntry is one line of MANIFEST.
type ManifestEntry struct {
	SHA256 string
	Path   string
	// Reason says why an after-file's difference is accepted; empty for
	// other files.
	Reason string
	// Line is the line number in MANIFEST (1-based), for messages.
	Line int
}

// Manifest is the parsed MANIFEST, in file order.
type Manifest struct {
	Entries []ManifestEntry
}

// reasonPrefix introduces an after-file's reason.
const reasonPrefix = "reason:"

// ParseManifest parses MANIFEST content. name is the file's name in
// messages; every error names it and the line.
func ParseManifest(name string, data []byte) (Manifest, error) {
	var m Manifest
	var errs []error
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseManifestLine(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %w", name, n, err))
			continue
		}
		e.Line = n
		if first, dup := seen[e.Path]; dup {
			errs = append(errs, fmt.Errorf("%s line %d: %s is already listed on line %d", name, n, e.Path, first))
			continue
		}
		seen[e.Path] = n
		m.Entries = append(m.Entries, e)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read %s: %w", name, err))
	}
	return m, errors.Join(errs...)
}

func parseManifestLine(line string) (ManifestEntry, error) {
	const want = `want "<sha256>  <path>" or "<sha256>  <path>.after.json  reason: <text>"`
	hash, rest, ok := strings.Cut(line, " ")
	if !ok {
		return ManifestEntry{}, fmt.Errorf("%q: %s", line, want)
	}
	if len(hash) != 64 || strings.ToLower(hash) != hash {
		return ManifestEntry{}, fmt.Errorf("%q is not a lower-case SHA-256 (64 hex digits); %s", hash, want)
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return ManifestEntry{}, fmt.Errorf("%q is not a SHA-256: %v", hash, err)
	}
	rest = strings.TrimSpace(rest)
	p, reason, _ := strings.Cut(rest, " ")
	reason = strings.TrimSpace(reason)
	fp, err := ParseFilePath(p)
	if err != nil {
		return ManifestEntry{}, err
	}
	e := ManifestEntry{SHA256: hash, Path: p}
	switch {
	case reason != "" && !strings.HasPrefix(reason, reasonPrefix):
		return ManifestEntry{}, fmt.Errorf("%s: unexpected %q after the path; %s", p, reason, want)
	case fp.After && strings.TrimSpace(strings.TrimPrefix(reason, reasonPrefix)) == "":
		return ManifestEntry{}, fmt.Errorf("%s is an accepted difference without a reason: add \"  reason: <why>\"", p)
	case !fp.After && reason != "":
		return ManifestEntry{}, fmt.Errorf("%s has a reason, but only an after-file (<name>%s) carries one", p, AfterSuffix)
	}
	e.Reason = strings.TrimSpace(strings.TrimPrefix(reason, reasonPrefix))
	return e, nil
}

// Format writes the manifest: a header comment, then one line per entry.
func (m Manifest) Format() []byte {
	var b bytes.Buffer
	b.WriteString(manifestHeader)
	for _, e := range m.Entries {
		fmt.Fprintf(&b, "%s  %s", e.SHA256, e.Path)
		if e.Reason != "" {
			fmt.Fprintf(&b, "  %s %s", reasonPrefix, e.Reason)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

const manifestHeader = `# The SHA-256 of every corpus file (see package corpus).
# Format: <sha256>  <path>    or, for an accepted difference,
#         <sha256>  <path>.after.json  reason: <why>
# Lines of a version in development are rewritten by 'go run ./cmd/corpusgen';
# lines of a released version (its contract in openapi/LOCK) never change.
`

// Lookup returns the entry for path p.
func (m Manifest) Lookup(p string) (ManifestEntry, bool) {
	i := slices.IndexFunc(m.Entries, func(e ManifestEntry) bool { return e.Path == p })
	if i < 0 {
		return ManifestEntry{}, false
	}
	return m.Entries[i], true
}

// ReadManifest reads and parses corpus/MANIFEST under root.
func ReadManifest(root string) (Manifest, error) {
	name := path.Join(Dir, ManifestName)
	data, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		return Manifest{}, fmt.Errorf("read %s: %w", name, err)
	}
	return ParseManifest(name, data)
}

// Sum returns the SHA-256 of data in hex.
func Sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// ManifestReport says what CheckManifest looked at.
type ManifestReport struct {
	Files, AfterFiles, Released int
}

// CheckManifest checks the corpus under root against its MANIFEST: every
// file is listed, every listed file exists with its hash, every after-file
// has a listed original and differs from it. It checks versions in
// development and released ones alike: a forgotten regeneration fails too.
func CheckManifest(root string) (ManifestReport, error) {
	var rep ManifestReport
	m, err := ReadManifest(root)
	if err != nil {
		return rep, err
	}
	files, err := ListFiles(root)
	if err != nil {
		return rep, err
	}
	released, err := Released(root)
	if err != nil {
		return rep, err
	}
	name := path.Join(Dir, ManifestName)
	var errs []error
	for _, f := range files {
		if _, ok := m.Lookup(f); !ok {
			errs = append(errs, fmt.Errorf("%s/%s is not listed in %s: %s", Dir, f, name, unlistedHint(f, released)))
		}
	}
	for _, e := range m.Entries {
		fp, _ := ParseFilePath(e.Path)
		if released[fp.Version] {
			rep.Released++
		}
		data, err := os.ReadFile(filepath.Join(root, Dir, filepath.FromSlash(e.Path)))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %s/%s is missing: %s", name, e.Line, Dir, e.Path, fixHint(e.Path, released)))
			continue
		}
		rep.Files++
		if got := Sum(data); got != e.SHA256 {
			errs = append(errs, fmt.Errorf("%s line %d: %s/%s changed (sha256 %s, listed %s): %s", name, e.Line, Dir, e.Path, got, e.SHA256, fixHint(e.Path, released)))
		}
		if !fp.After {
			continue
		}
		rep.AfterFiles++
		orig := fp.Original().String()
		if _, ok := m.Lookup(orig); !ok {
			errs = append(errs, fmt.Errorf("%s line %d: %s replaces %s, which is not listed", name, e.Line, e.Path, orig))
			continue
		}
		od, err := os.ReadFile(filepath.Join(root, Dir, filepath.FromSlash(orig)))
		if err == nil && bytes.Equal(od, data) {
			errs = append(errs, fmt.Errorf("%s line %d: %s is identical to %s: an after-file records a difference; remove it and its line", name, e.Line, e.Path, orig))
		}
	}
	return rep, errors.Join(errs...)
}

// unlistedHint says what to do about a file MANIFEST does not list.
func unlistedHint(p string, released map[Version]bool) string {
	fp, err := ParseFilePath(p)
	if err == nil && !released[fp.Version] && isCaptured(p) {
		return fmt.Sprintf("captured files are listed by %q only, with their provenance in %s/%s: capture it again, or remove it", CaptureCommand, Dir, CapturedName)
	}
	if err == nil && released[fp.Version] {
		if fp.After {
			return "list it with its reason: <sha256>  " + p + "  reason: <why>"
		}
		return fmt.Sprintf("%s is released and its corpus gains no files but reviewed after-files: remove it", fp.Version)
	}
	return fixHint(p, released)
}

// fixHint says what to do about a file that disagrees with MANIFEST.
func fixHint(p string, released map[Version]bool) string {
	fp, err := ParseFilePath(p)
	if err != nil {
		return "only <api>/v<N>/<kind>/<name>.json files belong in the corpus"
	}
	if released[fp.Version] {
		return fmt.Sprintf("%s is released and its corpus never changes: restore the file from git; if today's code must write something else, add %s with a reason in MANIFEST", fp.Version, fp.AfterPath())
	}
	return fmt.Sprintf("%s is in development: run 'go run ./cmd/corpusgen' and commit the corpus", fp.Version)
}
