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
	require.NoError(t, CheckLock(root))

	changed := strings.Replace(string(real), "maximum: 64", "maximum: 128", 1)
	require.NotEqual(t, string(real), changed)
	write(t, root, "openapi/vmm-server/v1.yaml", changed)
	err = CheckLock(root)
	require.ErrorContains(t, err, "openapi/vmm-server/v1.yaml changed")

	// Even one byte of white space counts.
	write(t, root, "openapi/vmm-server/v1.yaml", string(real)+"\n")
	require.ErrorContains(t, CheckLock(root), "changed")

	require.NoError(t, os.Remove(filepath.Join(root, "openapi/vmm-server/v1.yaml")))
	require.ErrorContains(t, CheckLock(root), "released document openapi/vmm-server/v1.yaml")
}

// TestLockLinesAreOnlyAdded removes a committed lock line and sees the check
// fail, using a real git history.
func TestLockLinesAreOnlyAdded(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root := t.TempDir()
	run := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
	}
	doc := "openapi: 3.0.3\n"
	write(t, root, "openapi/x/v1.yaml", doc)
	write(t, root, LockPath, lockLine(doc, "openapi/x/v1.yaml"))
	run("init", "-q")
	run("add", ".")
	run("commit", "-qm", "release x v1")
	require.NoError(t, CheckLock(root))

	write(t, root, LockPath, "# nothing released\n")
	require.ErrorContains(t, CheckLock(root), "lock lines are only ever added")
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
