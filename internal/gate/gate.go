package gate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/wagglevm/waggle/corpus"
	"github.com/wagglevm/waggle/internal/apicheck"
)

// Phase is one check of the gate: it returns what it covered, in words.
type Phase struct {
	Name  string
	Check func(ctx context.Context, root, tmp string) (string, error)
}

// Phases lists the gate's checks in the order Run runs them.
var Phases = []Phase{
	{"lock", func(_ context.Context, root, _ string) (string, error) {
		return "released contracts unchanged, LOCK lines only added", apicheck.CheckLock(root)
	}},
	{"contract", func(_ context.Context, root, _ string) (string, error) {
		rep, err := CheckContracts(root)
		return describeContracts(rep), err
	}},
	{"manifest", func(_ context.Context, root, _ string) (string, error) {
		rep, err := corpus.CheckManifest(root)
		return fmt.Sprintf("%d files listed and unchanged (%d after-files, %d of released versions)", rep.Files, rep.AfterFiles, rep.Released), err
	}},
	{"history", func(ctx context.Context, root, _ string) (string, error) {
		rep, err := CheckCorpusHistory(ctx, root)
		if len(rep.Checked) == 0 {
			return "no released corpus to compare with its release commit", err
		}
		return "released corpus as released: " + strings.Join(rep.Checked, "; "), err
	}},
	{"fresh", func(_ context.Context, root, _ string) (string, error) {
		const covered = "every contract has a corpus and every corpus folder a contract"
		if err := corpus.CheckCoverage(root); err != nil {
			return covered, err
		}
		return covered + "; captured files carry their provenance; the corpus of versions in development is what 'go run ./cmd/corpusgen' writes", corpus.CheckFresh(root)
	}},
	{"replay", func(_ context.Context, root, tmp string) (string, error) {
		sum, err := corpus.NewReplayer(root, tmp).Replay()
		return sum.String(), err
	}},
	{"releases", func(ctx context.Context, root, tmp string) (string, error) {
		rep, err := CheckReleases(ctx, root, tmp)
		s := fmt.Sprintf("%d releases in %s/%s, %d built from their commits", rep.Releases, corpus.Dir, corpus.ReleasesName, len(rep.Built))
		if len(rep.Ran) > 0 {
			s += "; ran without a VM: " + strings.Join(rep.Ran, "; ")
		}
		if rep.Skipped != "" {
			s += "; SKIPPED: " + rep.Skipped
		}
		return s, err
	}},
}

func describeContracts(rep ContractReport) string {
	var parts []string
	parts = append(parts, rep.Diffed...)
	for _, u := range rep.Undiffed {
		parts = append(parts, "nothing to diff for "+u)
	}
	if len(parts) == 0 {
		return "no contract in development"
	}
	return strings.Join(parts, "; ")
}

// Run runs phases over the repository at root, printing one line per phase
// with its time and what it covered, and a closing line. It runs every
// phase even after a failure and returns them all, each naming its phase.
func Run(ctx context.Context, root string, phases []Phase, w io.Writer) error {
	tmp, err := os.MkdirTemp("", "compat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	var errs []error
	for _, p := range phases {
		t0 := time.Now()
		what, err := p.Check(ctx, root, tmp)
		d := time.Since(t0).Round(time.Millisecond)
		if err != nil {
			fmt.Fprintf(w, "compat: %-8s FAIL  %8v  %s\n", p.Name, d, what)
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			continue
		}
		fmt.Fprintf(w, "compat: %-8s ok    %8v  %s\n", p.Name, d, what)
	}
	total := time.Since(start).Round(time.Millisecond)
	if len(errs) > 0 {
		fmt.Fprintf(w, "compat: %d of %d phases failed in %v\n", len(errs), len(phases), total)
		return errors.Join(errs...)
	}
	fmt.Fprintf(w, "compat: all %d phases ok in %v\n", len(phases), total)
	return nil
}
