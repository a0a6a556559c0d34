package gate

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/oasdiff/oasdiff/checker"
	"github.com/oasdiff/oasdiff/diff"
	"github.com/oasdiff/oasdiff/load"

	"github.com/wagglevm/waggle/internal/apicheck"
)

// Change is one breaking change oasdiff reports.
type Change struct {
	Rule, Method, Path, Text string
	// Args are what changed, as oasdiff's text names them (its args, in
	// its order): a declaration names them too.
	Args []string
}

// Key identifies the change, as a Declaration's Key does.
func (c Change) Key() string { return changeKey(c.Rule, c.Method, c.Path, c.Args) }

// BreakingChanges diffs two contract documents with oasdiff and returns
// every breaking change it reports (level WARN and above, what `oasdiff
// breaking` lists).
func BreakingChanges(base, revision string) ([]Change, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	s1, err := load.NewSpecInfo(loader, load.NewSource(base))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", base, err)
	}
	s2, err := load.NewSpecInfo(loader, load.NewSource(revision))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", revision, err)
	}
	d, sources, err := diff.GetWithOperationsSourcesMap(diff.NewConfig(), s1, s2)
	if err != nil {
		return nil, fmt.Errorf("diff %s and %s: %w", base, revision, err)
	}
	changes := checker.CheckBackwardCompatibilityUntilLevel(checker.NewConfig(checker.GetAllChecks()), d, sources, checker.WARN)
	loc := checker.NewDefaultLocalizer()
	var out []Change
	for _, c := range changes {
		if !c.IsBreaking() {
			continue
		}
		ch := Change{Rule: c.GetId(), Method: c.GetOperation(), Path: c.GetPath(), Text: c.GetUncolorizedText(loc)}
		for _, a := range c.GetArgs() {
			ch.Args = append(ch.Args, fmt.Sprint(a))
		}
		out = append(out, ch)
	}
	slices.SortFunc(out, func(a, b Change) int {
		if a.Key() < b.Key() {
			return -1
		}
		if a.Key() > b.Key() {
			return 1
		}
		return 0
	})
	return out, nil
}

// CheckDeclared fails unless every change is declared and every
// declaration matches a change: rule, operation and what changed (its
// args). Each declaration covers one reported change: should oasdiff
// report the same key n times (the same property of one response in two
// media types, say), it needs n declarations, no fewer and no more.
// changesFile names the CHANGES.md in messages.
func CheckDeclared(changesFile string, version int, changes []Change, decls []Declaration) error {
	declared := map[string][]Declaration{}
	for _, d := range decls {
		declared[d.Key()] = append(declared[d.Key()], d)
	}
	reported := map[string]int{}
	for _, c := range changes {
		reported[c.Key()]++
	}
	var errs []error
	seen := map[string]int{}
	for _, c := range changes {
		k := c.Key()
		seen[k]++
		if seen[k] <= len(declared[k]) {
			continue
		}
		times := ""
		if reported[k] > 1 {
			times = fmt.Sprintf(" (oasdiff reports it %d times and each needs its own line; %d declared)", reported[k], len(declared[k]))
		}
		errs = append(errs, fmt.Errorf("undeclared breaking change in v%d: %s (%s)%s; declare it in %s under \"## v%d\" as: - breaking `%s` at `%s`%s: <why>",
			version, k, c.Text, times, changesFile, version, c.Rule, declaredAt(c), declaredOn(c)))
	}
	nth := map[string]int{}
	for _, d := range decls {
		k := d.Key()
		nth[k]++
		if n := nth[k]; n > reported[k] {
			if reported[k] == 0 {
				errs = append(errs, fmt.Errorf("%s line %d: stale declaration: oasdiff reports no %s in v%d; remove the line", changesFile, d.Line, k, version))
			} else {
				errs = append(errs, fmt.Errorf("%s line %d: stale declaration: oasdiff reports %s %d times in v%d, and this is declaration %d of it; remove the line", changesFile, d.Line, k, reported[k], version, n))
			}
		}
	}
	return errors.Join(errs...)
}

// declaredOn is the " on `<arg>`..." of a declaration of c, or "".
func declaredOn(c Change) string {
	if len(c.Args) == 0 {
		return ""
	}
	return " on " + quoteArgs(c.Args)
}

func declaredAt(c Change) string {
	if c.Method == "" && c.Path == "" {
		return "*"
	}
	return c.Method + " " + c.Path
}

// ContractReport says what CheckContracts diffed.
type ContractReport struct {
	// Diffed lists "<revision> against <base>: N breaking changes".
	Diffed []string
	// Undiffed lists versions in development with no released base.
	Undiffed []string
}

var contractName = regexp.MustCompile(`^openapi/([a-z][a-z0-9-]*)/v([1-9][0-9]*)\.yaml$`)

// CheckContracts diffs every contract in development (not in openapi/LOCK)
// against the newest released version of its API below it, and checks the
// breaking changes against the version's entry in openapi/<api>/CHANGES.md.
// A version with no released predecessor has nothing to diff, but its
// CHANGES.md must still parse.
func CheckContracts(root string) (ContractReport, error) {
	var rep ContractReport
	data, err := os.ReadFile(filepath.Join(root, apicheck.LockPath))
	if err != nil {
		return rep, fmt.Errorf("read %s: %w", apicheck.LockPath, err)
	}
	lock, err := apicheck.ParseLock(data)
	if err != nil {
		return rep, err
	}
	released := map[string]bool{}
	for _, e := range lock {
		released[e.Path] = true
	}
	docs, err := apicheck.Documents(root)
	if err != nil {
		return rep, err
	}
	var errs []error
	for _, doc := range docs {
		m := contractName.FindStringSubmatch(doc)
		if m == nil || released[doc] {
			continue
		}
		api := m[1]
		n, _ := strconv.Atoi(m[2])
		changesFile := path.Join("openapi", api, "CHANGES.md")
		cd, err := os.ReadFile(filepath.Join(root, changesFile))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s is in development and needs an entry in %s: %w", doc, changesFile, err))
			continue
		}
		entries, err := ParseChanges(changesFile, cd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entry := entries[n]
		if entry == nil {
			errs = append(errs, fmt.Errorf("%s has no entry \"## v%d\" for %s", changesFile, n, doc))
			continue
		}
		base := newestReleasedBelow(released, api, n)
		if base == "" {
			rep.Undiffed = append(rep.Undiffed, fmt.Sprintf("%s (no released version of %s before it)", doc, api))
			errs = append(errs, CheckDeclared(changesFile, n, nil, entry.Declarations))
			continue
		}
		changes, err := BreakingChanges(filepath.Join(root, base), filepath.Join(root, doc))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Diffed = append(rep.Diffed, fmt.Sprintf("%s against %s: %d breaking changes, %d declared", doc, base, len(changes), len(entry.Declarations)))
		errs = append(errs, CheckDeclared(changesFile, n, changes, entry.Declarations))
	}
	return rep, errors.Join(errs...)
}

// newestReleasedBelow returns the path of the highest released version of
// api below n, or "".
func newestReleasedBelow(released map[string]bool, api string, n int) string {
	for v := n - 1; v >= 1; v-- {
		p := fmt.Sprintf("openapi/%s/v%d.yaml", api, v)
		if released[p] {
			return p
		}
	}
	return ""
}
