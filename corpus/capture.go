package corpus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
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

// CaptureHook captures files for version v from running servers. It is nil
// in this build: no capturer is written yet, because none could be run
// where this was built (no /dev/kvm). cmd/corpusgen -capture calls it.
var CaptureHook func(ctx context.Context, v Version) (map[string][]byte, error)

// ErrNoCapturer says no CaptureHook is installed.
var ErrNoCapturer = errors.New("no capturer is built yet: capturing files from running servers needs KVM (see corpus/capture.go)")

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
	var written []string
	for _, g := range Generators {
		if released[g.Version] {
			continue
		}
		files, err := CaptureHook(ctx, g.Version)
		if err != nil {
			return written, fmt.Errorf("capture %s: %w", g.Version, err)
		}
		w, err := WriteCaptured(root, g.Version, files)
		written = append(written, w...)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// WriteCaptured writes captured files of version v (path "<kind>/<name>.json"
// relative to the version's directory; the name gets CapturedPrefix) and
// lists them in MANIFEST. A released version's corpus is never written.
func WriteCaptured(root string, v Version, files map[string][]byte) ([]string, error) {
	released, err := Released(root)
	if err != nil {
		return nil, err
	}
	if released[v] {
		return nil, fmt.Errorf("%s is released: its corpus never changes, captured files included", v)
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
	}
	old, err := ReadManifest(root)
	if err != nil {
		return written, err
	}
	m, err := rebuildManifest(dir, old, released)
	if err != nil {
		return written, err
	}
	return written, os.WriteFile(filepath.Join(dir, ManifestName), m.Format(), 0o644)
}
