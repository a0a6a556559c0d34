package corpus

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// Captured files come from running servers of the version being recorded:
// a ticker that has ticked, a disk guest with data written, the device and
// machine payloads of a VM that migrated. They are realistic where the
// synthesized files are exhaustive. Capturing boots VMs, so it needs KVM.
//
// A capturer (on a machine with KVM) runs a server of this build, drives
// it, and hands what it saw to WriteCaptured as files of the ordinary kinds
// (device, machine, frame, instance, ...), which replay then treats like any
// other. Their names start with CapturedPrefix; Generate leaves them in
// place, and they freeze with their version like every corpus file.
//
// Provenance. A captured file cannot be regenerated, so the fresh check
// cannot tell a stale or hand-edited one by its bytes. Instead the capture
// command records, for each file it writes, its SHA-256, the commit whose
// build captured it and the command, in corpus/CAPTURED:
//
//	<sha256>  <path relative to corpus/>  commit <40 hex digits>  command <command line>
//
// Only WriteCaptured writes that file and the MANIFEST lines of captured
// files: Generate never re-hashes a captured file (it keeps the line the
// capture wrote, or lists nothing), so an edited file fails the manifest
// check, and CheckCaptured (in the fresh check) fails a captured file with
// no record, or whose bytes are not those recorded.

// CapturedName is the provenance record of captured files, in Dir.
const CapturedName = "CAPTURED"

// CaptureCommand is the command line recorded as the capturer of the
// files Capture writes.
const CaptureCommand = "go run ./cmd/corpusgen -capture"

// Provenance says where captured files come from.
type Provenance struct {
	// Commit is the full id of the commit whose build captured them.
	Commit string
	// Command is the command line that captured them.
	Command string
}

// sha256Hex is a lower-case SHA-256 in hex.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// CapturedEntry is one line of corpus/CAPTURED.
type CapturedEntry struct {
	SHA256, Path string
	Provenance
	Line int
}

const capturedHeader = `# The provenance of every captured file (see corpus/capture.go); written by the capture command only.
# Format: <sha256>  <path>  commit <40 hex digits>  command <command line>
`

// ParseCaptured parses corpus/CAPTURED content; every error names the
// file (name) and the line.
func ParseCaptured(name string, data []byte) (map[string]CapturedEntry, error) {
	out := map[string]CapturedEntry{}
	var errs []error
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 || f[2] != "commit" || f[4] != "command" || !sha256Hex.MatchString(f[0]) || !commitID.MatchString(f[3]) {
			errs = append(errs, fmt.Errorf("%s line %d: want \"<sha256>  <path>  commit <40 hex digits>  command <command line>\", got %q", name, n+1, line))
			continue
		}
		if first, dup := out[f[1]]; dup {
			errs = append(errs, fmt.Errorf("%s line %d: %s is already recorded on line %d", name, n+1, f[1], first.Line))
			continue
		}
		out[f[1]] = CapturedEntry{SHA256: f[0], Path: f[1], Line: n + 1,
			Provenance: Provenance{Commit: f[3], Command: strings.Join(f[5:], " ")}}
	}
	return out, errors.Join(errs...)
}

// readCaptured reads corpus/CAPTURED in the corpus directory dir; a
// missing file records nothing.
func readCaptured(dir string) (map[string]CapturedEntry, error) {
	data, err := os.ReadFile(filepath.Join(dir, CapturedName))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]CapturedEntry{}, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseCaptured(path.Join(Dir, CapturedName), data)
}

// ReadCaptured reads corpus/CAPTURED under root (path relative to Dir ->
// its record); a missing file records nothing.
func ReadCaptured(root string) (map[string]CapturedEntry, error) {
	return readCaptured(filepath.Join(root, Dir))
}

// isCaptured reports whether a corpus path names a captured file.
func isCaptured(p string) bool { return strings.HasPrefix(path.Base(p), CapturedPrefix) }

// CheckCaptured checks that every captured file under root has its line
// in corpus/CAPTURED with its bytes' SHA-256, and that every line there
// names a file that exists.
func CheckCaptured(root string) error {
	dir := filepath.Join(root, Dir)
	rec, err := readCaptured(dir)
	if err != nil {
		return err
	}
	files, err := ListFiles(root)
	if err != nil {
		return err
	}
	name := path.Join(Dir, CapturedName)
	var errs []error
	seen := map[string]bool{}
	for _, f := range files {
		if !isCaptured(f) {
			continue
		}
		seen[f] = true
		e, ok := rec[f]
		if !ok {
			errs = append(errs, fmt.Errorf("%s/%s: no provenance in %s: captured files are written by %q only, which records the commit and command; capture it again or remove it", Dir, f, name, CaptureCommand))
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return err
		}
		if got := Sum(data); got != e.SHA256 {
			errs = append(errs, fmt.Errorf("%s/%s: its sha256 %s is not the one %s records (line %d: %s, captured at %.12s by %s): a captured file is never edited by hand; capture it again",
				Dir, f, got, name, e.Line, e.SHA256, e.Commit, e.Command))
		}
	}
	for _, p := range sortedKeys(rec) {
		if !seen[p] {
			errs = append(errs, fmt.Errorf("%s line %d: %s/%s does not exist; remove the line with the file", name, rec[p].Line, Dir, p))
		}
	}
	return errors.Join(errs...)
}

// CaptureHook captures files for version v from running servers. It is nil
// until a program installs a capturer: cmd/corpusgen -capture installs
// ServerCapture's Hook (capture_servers.go), which needs KVM.
var CaptureHook func(ctx context.Context, v Version) (map[string][]byte, error)

// ErrNoCapturer says no CaptureHook is installed.
var ErrNoCapturer = errors.New("no capturer installed: set CaptureHook (go run ./cmd/corpusgen -capture installs ServerCapture, which needs KVM)")

// Capture runs CaptureHook for every version in development and writes
// what it returns.
func Capture(ctx context.Context, root string) ([]string, error) {
	if CaptureHook == nil {
		return nil, ErrNoCapturer
	}
	released, err := Released(root)
	if err != nil {
		return nil, err
	}
	head, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		return nil, fmt.Errorf("capture: the commit of this build (git rev-parse HEAD): %w", err)
	}
	prov := Provenance{Commit: strings.TrimSpace(string(head)), Command: CaptureCommand}
	var written []string
	for _, g := range Generators {
		if released[g.Version] {
			continue
		}
		files, err := CaptureHook(ctx, g.Version)
		if err != nil {
			return written, fmt.Errorf("capture %s: %w", g.Version, err)
		}
		w, err := WriteCaptured(root, g.Version, files, prov)
		written = append(written, w...)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// WriteCaptured writes captured files of version v (path "<kind>/<name>.json"
// relative to the version's directory; the name gets CapturedPrefix),
// records their provenance in corpus/CAPTURED and lists them in MANIFEST.
// A released version's corpus is never written.
func WriteCaptured(root string, v Version, files map[string][]byte, prov Provenance) ([]string, error) {
	if !commitID.MatchString(prov.Commit) {
		return nil, fmt.Errorf("captured files' provenance: commit %q is not a full 40-digit lower-case commit id", prov.Commit)
	}
	if strings.TrimSpace(prov.Command) == "" || strings.ContainsAny(prov.Command, "\n\r") {
		return nil, fmt.Errorf("captured files' provenance: the command must be one non-empty line, not %q", prov.Command)
	}
	released, err := Released(root)
	if err != nil {
		return nil, err
	}
	if released[v] {
		return nil, fmt.Errorf("%s is released: its corpus never changes, captured files included", v)
	}
	rec, err := readCaptured(filepath.Join(root, Dir))
	if err != nil {
		return nil, fmt.Errorf("fix %s before capturing: %w", path.Join(Dir, CapturedName), err)
	}
	dir := filepath.Join(root, Dir)
	var written []string
	for _, p := range sortedKeys(files) {
		kind, name := path.Split(p)
		if !strings.HasPrefix(name, CapturedPrefix) {
			name = CapturedPrefix + name
		}
		rel := path.Join(v.String(), kind, name)
		if _, err := ParseFilePath(rel); err != nil {
			return written, err
		}
		full := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return written, err
		}
		if err := os.WriteFile(full, files[p], 0o644); err != nil {
			return written, err
		}
		written = append(written, rel)
		rec[rel] = CapturedEntry{SHA256: Sum(files[p]), Path: rel, Provenance: prov}
	}
	var b strings.Builder
	b.WriteString(capturedHeader)
	for _, p := range sortedKeys(rec) {
		e := rec[p]
		fmt.Fprintf(&b, "%s  %s  commit %s  command %s\n", e.SHA256, e.Path, e.Commit, e.Command)
	}
	if err := os.WriteFile(filepath.Join(dir, CapturedName), []byte(b.String()), 0o644); err != nil {
		return written, err
	}
	old, err := ReadManifest(root)
	if err != nil {
		return written, err
	}
	wrote := map[string]bool{}
	for _, w := range written {
		wrote[w] = true
	}
	m, err := rebuildManifest(dir, old, released, wrote)
	if err != nil {
		return written, err
	}
	return written, os.WriteFile(filepath.Join(dir, ManifestName), m.Format(), 0o644)
}
