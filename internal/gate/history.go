package gate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wagglevm/waggle/corpus"
	"github.com/wagglevm/waggle/internal/apicheck"
)

// HistoryReport says what CheckCorpusHistory compared.
type HistoryReport struct {
	// Checked lists "<version> (released in <commit>): N lines".
	Checked []string
}

// CheckCorpusHistory checks the released corpus, the releases and the
// captured files against git history:
//
//   - each released version's MANIFEST lines other than after-files are
//     exactly those of the commit that released it (the first commit whose
//     openapi/LOCK lists its contract): none removed or changed, none
//     added (a released version gains no files);
//   - each after-file line of a released version stays as the first
//     commit that listed it wrote it (an accepted difference is reviewed
//     once and never rewritten);
//   - every corpus/RELEASES line ever committed is still there, unchanged,
//     and each release's commit descends from those of the lines above it;
//   - every captured file's recorded commit (corpus/CAPTURED) is in
//     HEAD's history.
//
// CheckManifest alone cannot see a file changed together with its
// MANIFEST line; this can. It needs the whole git history: in a shallow
// clone, or when git fails, it fails and says how to fix it.
func CheckCorpusHistory(ctx context.Context, root string) (HistoryReport, error) {
	var rep HistoryReport
	released, err := corpus.Released(root)
	if err != nil {
		return rep, err
	}
	captured, err := corpus.ReadCaptured(root)
	if err != nil {
		return rep, err
	}
	if len(released) == 0 && len(captured) == 0 {
		return rep, nil
	}
	const cannot = "cannot check that released corpus files never change: %w"
	shallow, err := apicheck.IsShallow(ctx, root)
	if err != nil {
		return rep, fmt.Errorf(cannot, err)
	}
	if shallow {
		return rep, fmt.Errorf(cannot, errors.New("the checkout is a shallow clone; fetch the whole history (git fetch --unshallow)"))
	}
	capErr := checkCaptureCommits(ctx, root, captured)
	if len(released) == 0 {
		return rep, capErr
	}
	now, err := corpus.ReadManifest(root)
	if err != nil {
		return rep, err
	}
	revs, err := apicheck.Git(ctx, root, "log", "--reverse", "--format=%H", "--diff-filter=AM", "--", apicheck.LockPath)
	if err != nil {
		return rep, fmt.Errorf(cannot, err)
	}
	var errs []error
	manifests := map[string]corpus.Manifest{} // by commit
	for _, v := range slices.SortedFunc(maps.Keys(released), compareVersions) {
		rev, err := releaseCommit(ctx, root, strings.Fields(revs), v)
		if err != nil {
			return rep, fmt.Errorf(cannot, err)
		}
		if rev == "" {
			continue // its LOCK line is not committed yet: this is the release commit
		}
		name := path.Join(corpus.Dir, corpus.ManifestName)
		old, err := apicheck.Git(ctx, root, "show", rev+":"+name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s was released in commit %.12s without a %s: %w", v, rev, name, err))
			continue
		}
		m, err := corpus.ParseManifest(name+"@"+rev[:12], []byte(old))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lines := 0
		for _, e := range m.Entries {
			fp, err := corpus.ParseFilePath(e.Path)
			if err != nil || fp.Version != v {
				continue
			}
			lines++
			cur, ok := now.Lookup(e.Path)
			if !ok || cur.SHA256 != e.SHA256 || cur.Reason != e.Reason {
				errs = append(errs, fmt.Errorf("%s: the line of %s (sha256 %s) that %s was released with in commit %.12s was removed or changed; a released corpus never changes: restore it, and add a %s sibling with a reason for a difference",
					name, e.Path, e.SHA256, v, rev, corpus.AfterSuffix))
			}
		}
		for _, e := range now.Entries {
			fp, err := corpus.ParseFilePath(e.Path)
			if err != nil || fp.Version != v || fp.After {
				continue
			}
			if _, ok := m.Lookup(e.Path); !ok {
				errs = append(errs, fmt.Errorf("%s line %d: %s is listed, but %s was released in commit %.12s without it; a released version gains no files but reviewed after-files: remove the file and its line",
					name, e.Line, e.Path, v, rev))
			}
		}
		if lines == 0 {
			errs = append(errs, fmt.Errorf("%s was released in commit %.12s with no corpus in %s", v, rev, name))
		}
		errs = append(errs, checkAfterPins(ctx, root, v, rev, now, manifests))
		rep.Checked = append(rep.Checked, fmt.Sprintf("%s (released in %.12s): %d lines", v, rev, lines))
	}
	errs = append(errs, checkReleasesHistory(ctx, root), capErr)
	return rep, errors.Join(errs...)
}

// releaseCommit returns the first of revs whose LOCK lists v's contract.
func releaseCommit(ctx context.Context, root string, revs []string, v corpus.Version) (string, error) {
	for _, rev := range revs {
		data, err := apicheck.Git(ctx, root, "show", rev+":"+apicheck.LockPath)
		if err != nil {
			return "", err
		}
		entries, err := apicheck.ParseLock([]byte(data))
		if err != nil {
			continue // a malformed old LOCK is apicheck's to report
		}
		if slices.ContainsFunc(entries, func(e apicheck.LockEntry) bool { return e.Path == v.ContractPath() }) {
			return rev, nil
		}
	}
	return "", nil
}

func compareVersions(a, b corpus.Version) int {
	if c := strings.Compare(a.API, b.API); c != 0 {
		return c
	}
	return a.N - b.N
}

// checkAfterPins checks that every after-file line of v that a commit
// since v's release (rev, included) listed is in now as the first of them
// wrote it. manifests caches parsed MANIFESTs by commit.
func checkAfterPins(ctx context.Context, root string, v corpus.Version, rev string, now corpus.Manifest, manifests map[string]corpus.Manifest) error {
	name := path.Join(corpus.Dir, corpus.ManifestName)
	out, err := apicheck.Git(ctx, root, "log", "--reverse", "--format=%H", "--diff-filter=AM", rev+"..HEAD", "--", name)
	if err != nil {
		return fmt.Errorf("cannot check the after-files of %s against history: %w", v, err)
	}
	type pin struct {
		e   corpus.ManifestEntry
		rev string
	}
	pins := map[string]pin{}
	var order []string
	for _, c := range append([]string{rev}, strings.Fields(out)...) {
		m, ok := manifests[c]
		if !ok {
			data, err := apicheck.Git(ctx, root, "show", c+":"+name)
			if err != nil {
				return fmt.Errorf("cannot check the after-files of %s against history: %w", v, err)
			}
			// A malformed old MANIFEST was the manifest phase's to report
			// then; the lines that parse still pin.
			m, _ = corpus.ParseManifest(name+"@"+c[:12], []byte(data))
			manifests[c] = m
		}
		for _, e := range m.Entries {
			fp, err := corpus.ParseFilePath(e.Path)
			if err != nil || fp.Version != v || !fp.After {
				continue
			}
			if _, seen := pins[e.Path]; !seen {
				pins[e.Path] = pin{e, c}
				order = append(order, e.Path)
			}
		}
	}
	var errs []error
	for _, p := range order {
		first := pins[p]
		cur, ok := now.Lookup(p)
		if !ok || cur.SHA256 != first.e.SHA256 || cur.Reason != first.e.Reason {
			errs = append(errs, fmt.Errorf("%s: the line of %s (sha256 %s, reason %q) first committed in %.12s was removed or changed; an accepted difference of a released version is reviewed once and never rewritten: restore the file and its line",
				name, p, first.e.SHA256, first.e.Reason, first.rev))
		}
	}
	return errors.Join(errs...)
}

// checkReleasesHistory checks that every corpus/RELEASES line ever
// committed (in HEAD's history) is in today's RELEASES unchanged, and that
// each release's commit descends from the commits of the lines above it.
func checkReleasesHistory(ctx context.Context, root string) error {
	name := path.Join(corpus.Dir, corpus.ReleasesName)
	const cannot = "cannot check that %s lines are only added: %w"
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	// Lines that do not parse are the releases phase's to report; here
	// they count as missing.
	cur, _ := corpus.ParseReleases(name, data)
	byName := map[string]corpus.Release{}
	for _, r := range cur {
		byName[r.Name] = r
	}
	revs, err := apicheck.Git(ctx, root, "log", "--reverse", "--format=%H", "--diff-filter=AM", "--", name)
	if err != nil {
		return fmt.Errorf(cannot, name, err)
	}
	var errs []error
	reported := map[string]bool{}
	for _, rev := range strings.Fields(revs) {
		old, err := apicheck.Git(ctx, root, "show", rev+":"+name)
		if err != nil {
			return fmt.Errorf(cannot, name, err)
		}
		rels, _ := corpus.ParseReleases(name+"@"+rev[:12], []byte(old))
		for _, r := range rels {
			key := r.Name + " " + r.Commit + " " + fmt.Sprint(r.Versions)
			if reported[key] {
				continue
			}
			if c, ok := byName[r.Name]; ok && c.Commit == r.Commit && slices.Equal(c.Versions, r.Versions) {
				continue
			}
			reported[key] = true
			errs = append(errs, fmt.Errorf("%s: release %s (%.12s, serving %s), committed in %.12s, was removed or changed; releases are only ever added: restore its line",
				name, r.Name, r.Commit, versionList(r.Versions), rev))
		}
	}
	for i := 1; i < len(cur); i++ {
		prev, r := cur[i-1], cur[i]
		ok, err := isAncestor(ctx, root, prev.Commit, r.Commit)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf(cannot, name, err))
		case !ok:
			errs = append(errs, fmt.Errorf("%s line %d: release %s (line %d) is out of order: its commit %.12s does not descend from %.12s of release %s on line %d; a release comes after the ones above it in git history",
				name, r.Line, r.Name, r.Line, r.Commit, prev.Commit, prev.Name, prev.Line))
		}
	}
	return errors.Join(errs...)
}

// isAncestor reports whether commit a is an ancestor of commit b (or b
// itself), through git merge-base --is-ancestor.
func isAncestor(ctx context.Context, root, a, b string) (bool, error) {
	_, err := apicheck.Git(ctx, root, "merge-base", "--is-ancestor", a, b)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false, nil
	}
	return false, err
}

func versionList(vs []corpus.Version) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

// checkCaptureCommits checks that the commit recorded for each captured
// file is HEAD or one of its ancestors: a capture names the build it ran.
func checkCaptureCommits(ctx context.Context, root string, captured map[string]corpus.CapturedEntry) error {
	name := path.Join(corpus.Dir, corpus.CapturedName)
	var errs []error
	ok := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(captured)) {
		e := captured[p]
		if ok[e.Commit] {
			continue
		}
		in, err := isAncestor(ctx, root, e.Commit, "HEAD")
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s line %d: %s was captured at commit %.12s, which this clone cannot place in HEAD's history: %w", name, e.Line, p, e.Commit, err))
		case !in:
			errs = append(errs, fmt.Errorf("%s line %d: %s was captured at commit %.12s, which is not in HEAD's history: capture it again from this branch", name, e.Line, p, e.Commit))
		default:
			ok[e.Commit] = true
		}
	}
	return errors.Join(errs...)
}
