package gate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
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

// CheckCorpusHistory checks that each released version's corpus still has
// every MANIFEST line it had in the commit that released it (the first
// commit whose openapi/LOCK lists its contract). CheckManifest alone
// cannot see a file changed together with its MANIFEST line; this can.
// It needs the whole git history: in a shallow clone, or when git fails,
// it fails and says how to fix it.
func CheckCorpusHistory(ctx context.Context, root string) (HistoryReport, error) {
	var rep HistoryReport
	released, err := corpus.Released(root)
	if err != nil {
		return rep, err
	}
	if len(released) == 0 {
		return rep, nil
	}
	const cannot = "cannot check that released corpus files never change: %w"
	shallow, err := isShallow(ctx, root)
	if err != nil {
		return rep, fmt.Errorf(cannot, err)
	}
	if shallow {
		return rep, fmt.Errorf(cannot, errors.New("the checkout is a shallow clone; fetch the whole history (git fetch --unshallow)"))
	}
	now, err := corpus.ReadManifest(root)
	if err != nil {
		return rep, err
	}
	revs, err := git(ctx, root, "log", "--reverse", "--format=%H", "--diff-filter=AM", "--", apicheck.LockPath)
	if err != nil {
		return rep, fmt.Errorf(cannot, err)
	}
	var errs []error
	for _, v := range slices.SortedFunc(maps.Keys(released), compareVersions) {
		rev, err := releaseCommit(ctx, root, strings.Fields(revs), v)
		if err != nil {
			return rep, fmt.Errorf(cannot, err)
		}
		if rev == "" {
			continue // its LOCK line is not committed yet: this is the release commit
		}
		name := path.Join(corpus.Dir, corpus.ManifestName)
		old, err := git(ctx, root, "show", rev+":"+name)
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
		if lines == 0 {
			errs = append(errs, fmt.Errorf("%s was released in commit %.12s with no corpus in %s", v, rev, name))
		}
		rep.Checked = append(rep.Checked, fmt.Sprintf("%s (released in %.12s): %d lines", v, rev, lines))
	}
	return rep, errors.Join(errs...)
}

// releaseCommit returns the first of revs whose LOCK lists v's contract.
func releaseCommit(ctx context.Context, root string, revs []string, v corpus.Version) (string, error) {
	for _, rev := range revs {
		data, err := git(ctx, root, "show", rev+":"+apicheck.LockPath)
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
