package corpus

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// The RELEASES format. One release per line, oldest first:
//
//	<name>  <commit>  <api>/v<N>[,<api>/v<N>...]
//
// name is the release's name (e.g. v0.1.0: letters, digits, '.', '-',
// '_'), commit the full 40-hex-digit id of the commit its waggle is built
// from, and the list the API versions that build serves. Blank lines and
// lines starting with "#" are comments. A name or a commit is listed once,
// a version once per line. Lines are only ever added, and each release's
// commit descends from those of the lines above it (the gate's history
// phase checks both against git).

// Release is one line of RELEASES.
type Release struct {
	Name     string
	Commit   string
	Versions []Version
	Line     int
}

var (
	releaseName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	commitID    = regexp.MustCompile(`^[0-9a-f]{40}$`)
	apiVersion  = regexp.MustCompile(`^([a-z][a-z0-9-]*)/v([1-9][0-9]*)$`)
)

// ParseReleases parses RELEASES content; every error names the file (name)
// and the line.
func ParseReleases(name string, data []byte) ([]Release, error) {
	var out []Release
	var errs []error
	names := map[string]int{}
	commits := map[string]Release{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s line %d: %s", name, n, fmt.Sprintf(format, args...)))
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			bad("want \"<name>  <commit>  <api>/v<N>[,...]\", got %q", line)
			continue
		}
		r := Release{Name: f[0], Commit: f[1], Line: n}
		switch {
		case !releaseName.MatchString(r.Name):
			bad("release name %q: letters, digits, '.', '-' and '_' only", r.Name)
			continue
		case !commitID.MatchString(r.Commit):
			bad("release %s: commit %q is not a full 40-digit lower-case commit id", r.Name, r.Commit)
			continue
		}
		if first, dup := names[r.Name]; dup {
			bad("release %s is already listed on line %d", r.Name, first)
			continue
		}
		names[r.Name] = n
		if first, dup := commits[r.Commit]; dup {
			bad("release %s: commit %s is already released as %s on line %d", r.Name, r.Commit, first.Name, first.Line)
			continue
		}
		commits[r.Commit] = r
		ok := true
		for _, v := range strings.Split(f[2], ",") {
			m := apiVersion.FindStringSubmatch(v)
			if m == nil {
				bad("release %s: %q is not an API version (<api>/v<N>)", r.Name, v)
				ok = false
				break
			}
			var num int
			fmt.Sscan(m[2], &num)
			ver := Version{API: m[1], N: num}
			if slices.Contains(r.Versions, ver) {
				bad("release %s lists %s twice", r.Name, ver)
				ok = false
				break
			}
			r.Versions = append(r.Versions, ver)
		}
		if ok {
			out = append(out, r)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read %s: %w", name, err))
	}
	return out, errors.Join(errs...)
}

// ReadReleases reads corpus/RELEASES under root and checks that every API
// version a release serves is released (its contract in openapi/LOCK).
func ReadReleases(root string) ([]Release, error) {
	name := path.Join(Dir, ReleasesName)
	data, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	rels, err := ParseReleases(name, data)
	if err != nil {
		return nil, err
	}
	released, err := Released(root)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, r := range rels {
		for _, v := range r.Versions {
			if !released[v] {
				errs = append(errs, fmt.Errorf("%s line %d: release %s serves %s, which openapi/LOCK does not list as released", name, r.Line, r.Name, v))
			}
		}
	}
	return rels, errors.Join(errs...)
}
