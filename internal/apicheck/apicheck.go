// Package apicheck holds the checks `make check` runs over the contracts in
// openapi/: every document is a valid, self-contained OpenAPI 3.0.3 document
// that follows our rules, and every released document (listed in
// openapi/LOCK with its SHA-256) is unchanged, byte for byte.
package apicheck

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// LockPath is where the lock file lives, relative to the repository root.
const LockPath = "openapi/LOCK"

// LockEntry is one line of the lock file: a released document and its hash.
type LockEntry struct {
	SHA256 string
	Path   string
}

// ParseLock reads lock file content: lines "<sha256 hex>  <path>", blank
// lines and "#" comments ignored.
func ParseLock(data []byte) ([]LockEntry, error) {
	var out []LockEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || len(f[0]) != 64 {
			return nil, fmt.Errorf("%s line %d: want \"<sha256>  <path>\", got %q", LockPath, n, line)
		}
		if _, err := hex.DecodeString(f[0]); err != nil {
			return nil, fmt.Errorf("%s line %d: bad hash: %v", LockPath, n, err)
		}
		out = append(out, LockEntry{SHA256: f[0], Path: f[1]})
	}
	return out, sc.Err()
}

// CheckLock verifies, under the repository root, that every locked document
// still has its recorded hash and that no line was ever removed from or
// changed in the lock file. The second needs the repository's whole git
// history: where it is not at hand (not a checkout, a shallow clone, git
// failing) the check fails and says so; it never passes unchecked.
func CheckLock(root string) error {
	entries, err := readLock(root)
	if err != nil {
		return err
	}
	return errors.Join(checkLockHashes(root, entries), checkLockHistory(root, entries))
}

// CheckLockHashes verifies only that every locked document still has its
// recorded hash, for trees that are not git checkouts (tests).
func CheckLockHashes(root string) error {
	entries, err := readLock(root)
	if err != nil {
		return err
	}
	return checkLockHashes(root, entries)
}

func readLock(root string) ([]LockEntry, error) {
	data, err := os.ReadFile(filepath.Join(root, LockPath))
	if err != nil {
		return nil, fmt.Errorf("read lock: %w", err)
	}
	return ParseLock(data)
}

func checkLockHashes(root string, entries []LockEntry) error {
	var errs []error
	for _, e := range entries {
		doc, err := os.ReadFile(filepath.Join(root, e.Path))
		if err != nil {
			errs = append(errs, fmt.Errorf("released document %s: %w", e.Path, err))
			continue
		}
		sum := sha256.Sum256(doc)
		if got := hex.EncodeToString(sum[:]); got != e.SHA256 {
			errs = append(errs, fmt.Errorf("released document %s changed (sha256 %s, locked %s); a released contract never changes: add a new version instead", e.Path, got, e.SHA256))
		}
	}
	return errors.Join(errs...)
}

// checkLockHistory compares the lock file with every committed version of
// it: a line once committed must still be there.
func checkLockHistory(root string, now []LockEntry) error {
	const cannot = "%s: cannot check that lock lines are only ever added: %w"
	ctx := context.Background()
	shallow, err := IsShallow(ctx, root)
	if err != nil {
		return fmt.Errorf(cannot, LockPath, err)
	}
	if shallow {
		return fmt.Errorf(cannot, LockPath, errors.New("the checkout is a shallow clone; fetch the whole history (git fetch --unshallow)"))
	}
	// Commits that added or modified the file; in each of them it exists.
	revs, err := Git(ctx, root, "log", "--format=%H", "--diff-filter=AM", "--", LockPath)
	if err != nil {
		return fmt.Errorf(cannot, LockPath, err)
	}
	var errs []error
	for _, rev := range strings.Fields(revs) {
		old, err := Git(ctx, root, "show", rev+":"+LockPath)
		if err != nil {
			return fmt.Errorf(cannot, LockPath, err)
		}
		entries, err := ParseLock([]byte(old))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s as of commit %.12s: %w", LockPath, rev, err))
			continue
		}
		for _, e := range entries {
			if !slices.Contains(now, e) {
				errs = append(errs, fmt.Errorf("%s: line for %s (sha256 %s) from commit %.12s was removed or changed; lock lines are only ever added", LockPath, e.Path, e.SHA256, rev))
			}
		}
	}
	return errors.Join(errs...)
}

// Git runs git in dir and returns its standard output; a failure carries
// what git said. The gate's history checks use it too.
func Git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// IsShallow reports whether the checkout at dir is a shallow clone, whose
// history a check of what was ever committed cannot trust.
func IsShallow(ctx context.Context, dir string) (bool, error) {
	out, err := Git(ctx, dir, "rev-parse", "--is-shallow-repository")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(out) != "false", nil
}

var docName = regexp.MustCompile(`^openapi/([a-z][a-z0-9-]*)/v([1-9][0-9]*)\.yaml$`)

// Documents lists the contract documents under root, as slash paths.
func Documents(root string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(root, "openapi", "*", "v*.yaml"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		rel, _ := filepath.Rel(root, m)
		out = append(out, filepath.ToSlash(rel))
	}
	return out, nil
}

// ValidateDocument checks one contract: valid OpenAPI 3.0.3, no external
// references, served at /v<N> as its file name says, every operation with
// an operationId, a summary, a 4xx response and the Error schema for it,
// and an operation that takes a body lists 413 and 415 (the server sends
// them for a body too large or not JSON).
func ValidateDocument(root, path string) error {
	m := docName.FindStringSubmatch(path)
	if m == nil {
		return fmt.Errorf("%s: a contract is named openapi/<api>/v<N>.yaml", path)
	}
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromFile(filepath.Join(root, path))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return fmt.Errorf("%s: invalid OpenAPI: %w", path, err)
	}
	var errs []error
	if doc.OpenAPI != "3.0.3" {
		errs = append(errs, fmt.Errorf("%s: openapi is %q; our contracts are 3.0.3", path, doc.OpenAPI))
	}
	if want := "/v" + m[2]; len(doc.Servers) != 1 || doc.Servers[0].URL != want {
		errs = append(errs, fmt.Errorf("%s: servers must be exactly [{url: %s}]", path, want))
	}
	if doc.Components == nil || doc.Components.Schemas["Error"] == nil {
		errs = append(errs, fmt.Errorf("%s: has no Error schema", path))
	}
	for p, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := fmt.Sprintf("%s: %s %s", path, method, p)
			if op.OperationID == "" {
				errs = append(errs, fmt.Errorf("%s: no operationId", where))
			}
			if op.Summary == "" {
				errs = append(errs, fmt.Errorf("%s: no summary", where))
			}
			has4xx := false
			for code, resp := range op.Responses.Map() {
				if !strings.HasPrefix(code, "4") && !strings.HasPrefix(code, "5") {
					continue
				}
				has4xx = has4xx || strings.HasPrefix(code, "4")
				if !refersToError(resp) {
					errs = append(errs, fmt.Errorf("%s: response %s does not use the Error schema", where, code))
				}
			}
			if !has4xx {
				errs = append(errs, fmt.Errorf("%s: no 4xx response", where))
			}
			if op.RequestBody != nil {
				for _, code := range []string{"413", "415"} {
					if op.Responses.Value(code) == nil {
						errs = append(errs, fmt.Errorf("%s: takes a body but lists no %s response", where, code))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func refersToError(resp *openapi3.ResponseRef) bool {
	if resp == nil || resp.Value == nil {
		return false
	}
	mt := resp.Value.Content.Get("application/json")
	return mt != nil && mt.Schema != nil && strings.HasSuffix(mt.Schema.Ref, "/Error")
}
