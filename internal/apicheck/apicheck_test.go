package apicheck

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// repoRoot is the waggle checkout these tests run in.
const repoRoot = "../.."

func TestRealContractsPass(t *testing.T) {
	require.NoError(t, CheckLock(repoRoot))
	docs, err := Documents(repoRoot)
	require.NoError(t, err)
	require.NotEmpty(t, docs)
	for _, d := range docs {
		require.NoError(t, ValidateDocument(repoRoot, d), d)
	}
}

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
}

func lockLine(content, path string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:]) + "  " + path + "\n"
}

// TestLockCatchesAChangedDocument changes a locked document on purpose and
// sees the check fail.
func TestLockCatchesAChangedDocument(t *testing.T) {
	root := t.TempDir()
	real, err := os.ReadFile(filepath.Join(repoRoot, "openapi/vmm-server/v1.yaml"))
	require.NoError(t, err)
	write(t, root, "openapi/vmm-server/v1.yaml", string(real))
	write(t, root, LockPath, lockLine(string(real), "openapi/vmm-server/v1.yaml"))
	require.NoError(t, CheckLockHashes(root))

	changed := strings.Replace(string(real), "maximum: 64", "maximum: 128", 1)
	require.NotEqual(t, string(real), changed)
	write(t, root, "openapi/vmm-server/v1.yaml", changed)
	err = CheckLockHashes(root)
	require.ErrorContains(t, err, "openapi/vmm-server/v1.yaml changed")

	// Even one byte of white space counts.
	write(t, root, "openapi/vmm-server/v1.yaml", string(real)+"\n")
	require.ErrorContains(t, CheckLockHashes(root), "changed")

	require.NoError(t, os.Remove(filepath.Join(root, "openapi/vmm-server/v1.yaml")))
	require.ErrorContains(t, CheckLockHashes(root), "released document openapi/vmm-server/v1.yaml")
}

// gitRepo makes a git repository in a temporary directory and returns it
// with a function that runs git there.
func gitRepo(t *testing.T) (string, func(args ...string)) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
	}
	run("init", "-q")
	return root, run
}

// TestLockLinesAreOnlyAdded removes a committed lock line and sees the check
// fail, using a real git history.
func TestLockLinesAreOnlyAdded(t *testing.T) {
	root, run := gitRepo(t)
	doc := "openapi: 3.0.3\n"
	write(t, root, "openapi/x/v1.yaml", doc)
	write(t, root, LockPath, lockLine(doc, "openapi/x/v1.yaml"))
	run("add", ".")
	run("commit", "-qm", "release x v1")
	require.NoError(t, CheckLock(root))

	write(t, root, LockPath, "# nothing released\n")
	require.ErrorContains(t, CheckLock(root), "lock lines are only ever added")

	// A commit that deleted the file, and one that brought back less, are
	// still caught.
	require.NoError(t, os.Remove(filepath.Join(root, LockPath)))
	run("add", "-A")
	run("commit", "-qm", "delete the lock")
	write(t, root, LockPath, "# nothing released\n")
	run("add", ".")
	run("commit", "-qm", "an empty lock")
	require.ErrorContains(t, CheckLock(root), "lock lines are only ever added")
}

// TestLockHistoryThatCannotBeReadFails: a check that cannot run must fail,
// never pass. Outside a git checkout, in a shallow clone, and where git
// refuses the repository, CheckLock says why it could not check.
func TestLockHistoryThatCannotBeReadFails(t *testing.T) {
	doc := "openapi: 3.0.3\n"

	notGit := t.TempDir()
	write(t, notGit, "openapi/x/v1.yaml", doc)
	write(t, notGit, LockPath, lockLine(doc, "openapi/x/v1.yaml"))
	require.NoError(t, CheckLockHashes(notGit))
	require.ErrorContains(t, CheckLock(notGit), "cannot check that lock lines are only ever added")

	root, run := gitRepo(t)
	write(t, root, "openapi/x/v1.yaml", doc)
	write(t, root, LockPath, lockLine(doc, "openapi/x/v1.yaml"))
	run("add", ".")
	run("commit", "-qm", "release x v1")
	write(t, root, "README", "more history\n")
	run("add", ".")
	run("commit", "-qm", "a second commit")
	require.NoError(t, CheckLock(root))

	shallow := filepath.Join(t.TempDir(), "shallow")
	run("clone", "-q", "--depth", "1", "file://"+root, shallow)
	err := CheckLock(shallow)
	require.ErrorContains(t, err, "shallow clone")

	// A repository git will not read (a broken HEAD stands in for
	// "dubious ownership" and the like).
	require.NoError(t, os.WriteFile(filepath.Join(root, ".git", "HEAD"), []byte("garbage\n"), 0o644))
	require.ErrorContains(t, CheckLock(root), "cannot check")
}

func TestParseLockRejectsGarbage(t *testing.T) {
	_, err := ParseLock([]byte("abc  openapi/x/v1.yaml\n"))
	require.ErrorContains(t, err, "line 1")
	_, err = ParseLock([]byte(strings.Repeat("z", 64) + "  p\n"))
	require.ErrorContains(t, err, "bad hash")
}

func TestValidateDocumentRules(t *testing.T) {
	base := `openapi: 3.0.3
info: {title: t, version: "1"}
servers: [{url: /v1}]
paths:
  /x:
    get:
      operationId: x_get
      summary: Get x
      responses:
        "200": {description: ok}
        "404":
          description: no
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Error"}
    put:
      operationId: x_put
      summary: Put x
      requestBody:
        content:
          application/json:
            schema: {type: object}
      responses:
        "204": {description: ok}
        "400": {$ref: "#/components/responses/E"}
        "413": {$ref: "#/components/responses/E"}
        "415": {$ref: "#/components/responses/E"}
components:
  responses:
    E:
      description: no
      content:
        application/json:
          schema: {$ref: "#/components/schemas/Error"}
  schemas:
    Error: {type: object}
`
	cases := []struct{ name, edit, want string }{
		{"good", "", ""},
		{"no operationId", "      operationId: x_get\n", "no operationId"},
		{"no summary", "      summary: Get x\n", "no summary"},
		{"wrong server", "servers: [{url: /v1}]\n", "servers must be exactly"},
		{"body without 413", "        \"413\": {$ref: \"#/components/responses/E\"}\n", "PUT /x: takes a body but lists no 413 response"},
		{"body without 415", "        \"415\": {$ref: \"#/components/responses/E\"}\n", "PUT /x: takes a body but lists no 415 response"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			doc := base
			if c.edit != "" {
				doc = strings.Replace(doc, c.edit, "", 1)
			}
			write(t, root, "openapi/x/v1.yaml", doc)
			err := ValidateDocument(root, "openapi/x/v1.yaml")
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.want)
		})
	}
	root := t.TempDir()
	write(t, root, "openapi/x/v1.yaml", strings.Replace(base, `"404"`, `"200x"`, 1))
	require.Error(t, ValidateDocument(root, "openapi/x/v1.yaml"))
}
