package gate

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wagglevm/waggle/corpus"
	"github.com/wagglevm/waggle/internal/apicheck"
)

// MissingCommitError says a release's commit is not in the clone the gate
// runs in, and how to bring it.
type MissingCommitError struct {
	Release, Commit string
	Shallow         bool
	Err             error
}

func (e *MissingCommitError) Error() string {
	why := ""
	if e.Shallow {
		why = " (this clone is shallow)"
	}
	return fmt.Sprintf("release %s: commit %s is not in this clone%s: the gate builds every release from its commit; "+
		"fetch the whole history (git fetch --unshallow, or git fetch origin %s) and run it again", e.Release, e.Commit, why, e.Commit)
}

func (e *MissingCommitError) Unwrap() error { return e.Err }

// BuildRelease builds the waggle binary of rel from its commit in the git
// repository repo, into dir, and returns the binary's path. The source is
// taken with git archive, so the work tree is not touched.
func BuildRelease(ctx context.Context, repo string, rel corpus.Release, dir string) (string, error) {
	if _, err := apicheck.Git(ctx, repo, "cat-file", "-e", rel.Commit+"^{commit}"); err != nil {
		shallow, serr := apicheck.IsShallow(ctx, repo)
		if serr != nil {
			return "", fmt.Errorf("release %s: %w", rel.Name, errors.Join(err, serr))
		}
		return "", &MissingCommitError{Release: rel.Name, Commit: rel.Commit, Shallow: shallow, Err: err}
	}
	bin := filepath.Join(dir, "waggle")
	cached, key := cachedRelease(ctx, rel.Commit)
	if cached != "" {
		if err := copyFile(cached, bin); err == nil {
			return bin, nil
		}
	}
	src := filepath.Join(dir, "src")
	if err := extractCommit(ctx, repo, rel.Commit, src); err != nil {
		return "", fmt.Errorf("release %s: %w", rel.Name, err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/waggle")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("release %s: build waggle from %.12s: %w\n%s", rel.Name, rel.Commit, err, tail(out, 2000))
	}
	keepRelease(key, bin)
	return bin, nil
}

// extractCommit writes the tree of commit into dst, through git archive.
func extractCommit(ctx context.Context, repo, commit, dst string) error {
	cmd := exec.CommandContext(ctx, "git", "archive", "--format=tar", commit)
	cmd.Dir = repo
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	xerr := untar(out, dst)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive %.12s: %w: %s", commit, err, strings.TrimSpace(stderr.String()))
	}
	return xerr
}

// untar writes a tar stream's regular files and directories beneath dst.
func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name := filepath.FromSlash(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q leaves the directory", h.Name)
		}
		p := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// KVMAvailable reports whether this machine can run VMs (/dev/kvm opens).
func KVMAvailable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// ReleaseReport says what CheckReleases did.
type ReleaseReport struct {
	Releases int
	Built    []string
	// Ran lists the checks that ran, in words: those without a VM, then,
	// on KVM, each way a running VM migrated, with its figures.
	Ran []string
	// Skipped says which checks did not run and why.
	Skipped string
}

// BuildHead builds the waggle binary of the work tree at root into dir
// and returns its path.
func BuildHead(ctx context.Context, root, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "waggle")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/waggle")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build HEAD's waggle: %w\n%s", err, tail(out, 2000))
	}
	return bin, nil
}

// CheckReleases reads corpus/RELEASES and builds each release's waggle
// from its commit into tmp, and HEAD's from the work tree. Then, for each
// release that serves vmm-server/v1, it runs the checks that need no VM
// both ways (CrossDrive): the release's server driven by HEAD's CLI, and
// HEAD's server driven by the release's CLI. Where /dev/kvm exists, a
// running ticker, memcheck and disk guest then migrate from each such
// release into HEAD and back (MigrateBothWays); a way that fails is a
// *ReleaseMigrationError. Where it is missing, the migration is skipped,
// saying why.
func CheckReleases(ctx context.Context, root, tmp string) (ReleaseReport, error) {
	var rep ReleaseReport
	rels, err := corpus.ReadReleases(root)
	if err != nil {
		return rep, err
	}
	rep.Releases = len(rels)
	if len(rels) == 0 {
		return rep, nil
	}
	var errs []error
	bins := map[string]string{}
	for _, r := range rels {
		dir := filepath.Join(tmp, "release-"+r.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return rep, err
		}
		bin, err := BuildRelease(ctx, root, r, dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		bins[r.Name] = bin
		rep.Built = append(rep.Built, r.Name)
	}
	var skipped []string
	head, err := BuildHead(ctx, root, filepath.Join(tmp, "head"))
	if err != nil {
		errs = append(errs, err)
	}
	v1 := corpus.Version{API: "vmm-server", N: 1}
	for _, r := range rels {
		bin := bins[r.Name]
		switch {
		case bin == "" || head == "":
			skipped = append(skipped, fmt.Sprintf("%s driven both ways (a build failed)", r.Name))
			continue
		case !slices.Contains(r.Versions, v1):
			skipped = append(skipped, fmt.Sprintf("%s driven both ways (it does not serve %s, the CLI's API)", r.Name, v1))
			continue
		}
		for _, way := range []struct{ what, server, cli string }{
			{r.Name + "'s server by HEAD's CLI", bin, head},
			{"HEAD's server by " + r.Name + "'s CLI", head, bin},
		} {
			dir, err := os.MkdirTemp(tmp, "cross-")
			if err != nil {
				return rep, err
			}
			did, err := CrossDrive(ctx, way.server, way.cli, dir)
			if err != nil {
				errs = append(errs, fmt.Errorf("release %s: %s: %w", r.Name, way.what, err))
				continue
			}
			rep.Ran = append(rep.Ran, fmt.Sprintf("%s (%s)", way.what, strings.Join(did, ", ")))
		}
	}
	fleetRan, fleetSkipped, fleetErr := checkFleets(ctx, rels, bins, head)
	rep.Ran = append(rep.Ran, fleetRan...)
	skipped = append(skipped, fleetSkipped...)
	if fleetErr != nil {
		errs = append(errs, fleetErr)
	}
	if !KVMAvailable() {
		skipped = append(skipped, "migrating a running VM between each release and HEAD, both ways (needs /dev/kvm, which this machine lacks)")
	} else {
		for _, r := range rels {
			if bins[r.Name] == "" || head == "" || !slices.Contains(r.Versions, v1) {
				continue // said above
			}
			dir, err := os.MkdirTemp(tmp, "migrate-")
			if err != nil {
				return rep, err
			}
			ways, err := MigrateBothWays(ctx, r.Name, bins[r.Name], head, dir)
			for _, w := range ways {
				rep.Ran = append(rep.Ran, "migrated a running "+w.String())
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	rep.Skipped = strings.Join(skipped, "; ")
	return rep, errors.Join(errs...)
}
