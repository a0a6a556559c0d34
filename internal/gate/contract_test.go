package gate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const repoRoot = "../.."

// allDeclared declares the three breaking changes of breaking.yaml.
const allDeclared = "# fixture API\n\n## v1\n\nThe first.\n\n## v2 (in development)\n\nProse about v2.\n\n" +
	"- breaking `api-path-removed-without-deprecation` at `GET /old`: nobody called it.\n" +
	"- breaking `request-property-became-required` at `PUT /items` on `color`: an item needs a color now.\n" +
	"- breaking `response-required-property-removed` at `GET /items` on `size` `200`: size moved elsewhere.\n"

// contractRoot lays out a repository with fixture/v1 released and
// fixture/v2 (rev) in development, and CHANGES.md.
func contractRoot(t *testing.T, rev, changes string) string {
	t.Helper()
	r := t.TempDir()
	dir := filepath.Join(r, "openapi", "fixture")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	copyFile := func(src, dst string) {
		data, err := os.ReadFile(src)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(dst, data, 0o644))
	}
	copyFile("testdata/contract/base.yaml", filepath.Join(dir, "v1.yaml"))
	copyFile("testdata/contract/"+rev+".yaml", filepath.Join(dir, "v2.yaml"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "CHANGES.md"), []byte(changes), 0o644))
	lock := strings.Repeat("0", 64) + "  openapi/fixture/v1.yaml\n"
	require.NoError(t, os.WriteFile(filepath.Join(r, "openapi", "LOCK"), []byte(lock), 0o644))
	return r
}

func TestContractDiff(t *testing.T) {
	withoutOne := strings.Replace(allDeclared, "- breaking `request-property-became-required` at `PUT /items` on `color`: an item needs a color now.\n", "", 1)
	cases := []struct {
		name, rev, changes string
		want               []string // empty: passes
	}{
		{"compatible, nothing declared", "compatible", "## v2\nno breaks\n", nil},
		{"every break declared", "breaking", allDeclared, nil},
		{"undeclared breaking change", "breaking", withoutOne,
			[]string{"undeclared breaking change in v2: request-property-became-required PUT /items", "openapi/fixture/CHANGES.md"}},
		{"nothing declared at all", "breaking", "## v2\n",
			[]string{"api-path-removed-without-deprecation GET /old", "response-required-property-removed GET /items"}},
		{"stale declaration", "compatible", allDeclared,
			[]string{"openapi/fixture/CHANGES.md line 11: stale declaration", "api-path-removed-without-deprecation GET /old"}},
		{"declaration of the wrong operation", "breaking", strings.Replace(allDeclared, "at `GET /old`", "at `DELETE /old`", 1),
			[]string{"stale declaration", "DELETE /old", "undeclared breaking change in v2: api-path-removed-without-deprecation GET /old"}},
		{"malformed entry", "breaking", allDeclared + "- breaking request-property-removed PUT /items: no backticks\n",
			[]string{"openapi/fixture/CHANGES.md line 14: malformed declaration"}},
		{"declaration without reason", "breaking", allDeclared + "- breaking `x-y` at `*`:\n",
			[]string{"CHANGES.md line 14", "has no reason"}},
		{"no entry for the version", "compatible", "## v1\n", []string{"no entry \"## v2\""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, err := CheckContracts(contractRoot(t, c.rev, c.changes))
			if c.want == nil {
				require.NoError(t, err)
				require.Len(t, rep.Diffed, 1)
				require.Contains(t, rep.Diffed[0], "openapi/fixture/v2.yaml against openapi/fixture/v1.yaml")
				return
			}
			require.Error(t, err)
			for _, w := range c.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

func TestParseChanges(t *testing.T) {
	_, err := ParseChanges("C.md", []byte("- breaking `a-b` at `GET /x`: before any entry\n"))
	require.ErrorContains(t, err, "C.md line 1: declaration outside a version's entry")
	_, err = ParseChanges("C.md", []byte("## v2\n## v3\n## v2 again\n"))
	require.ErrorContains(t, err, "C.md line 3: a second entry for v2 (the first is on line 1)")
	got, err := ParseChanges("C.md", []byte("## v2\n- breaking `a-b` at `GET /x`: one\n- breaking `a-b` at `GET /x`: two\n"))
	require.NoError(t, err, "a key may be declared as often as oasdiff reports it")
	require.Len(t, got[2].Declarations, 2)
	got, err = ParseChanges("C.md", []byte("## v4 (in development)\n- breaking `a-b` at `*`: components changed\n"))
	require.NoError(t, err)
	require.Equal(t, []Declaration{{Rule: "a-b", Reason: "components changed", Line: 2}}, got[4].Declarations)
	require.Equal(t, "a-b *", got[4].Declarations[0].Key())
}

// TestTodaysContracts: the real CHANGES.md parses (v1, released first,
// declares nothing), and with no release yet there is nothing to diff.
func TestTodaysContracts(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "openapi", "vmm-server", "CHANGES.md"))
	require.NoError(t, err)
	entries, err := ParseChanges("openapi/vmm-server/CHANGES.md", data)
	require.NoError(t, err)
	require.NotNil(t, entries[1])
	require.Empty(t, entries[1].Declarations)
	rep, err := CheckContracts(repoRoot)
	require.NoError(t, err)
	t.Logf("diffed %v; nothing to diff for %v", rep.Diffed, rep.Undiffed)
}

// TestOneDeclarationPerChange: two properties removed from one response
// are two changes under one rule on one operation; one declaration covers
// only the one it names, so the other fails the gate.
func TestOneDeclarationPerChange(t *testing.T) {
	one := "## v2\n- breaking `response-required-property-removed` at `GET /items` on `size` `200`: size moved elsewhere.\n"
	_, err := CheckContracts(contractRoot(t, "two-removals", one))
	require.ErrorContains(t, err, "undeclared breaking change in v2: response-required-property-removed GET /items on `name` `200`")
	require.NotContains(t, err.Error(), "on `size` `200` (")

	// Declared without saying what changed: covers neither.
	bare := "## v2\n- breaking `response-required-property-removed` at `GET /items`: two properties moved elsewhere.\n"
	_, err = CheckContracts(contractRoot(t, "two-removals", bare))
	require.ErrorContains(t, err, "on `name` `200`")
	require.ErrorContains(t, err, "on `size` `200`")
	require.ErrorContains(t, err, "CHANGES.md line 2: stale declaration")

	both := one + "- breaking `response-required-property-removed` at `GET /items` on `name` `200`: name moved too.\n"
	_, err = CheckContracts(contractRoot(t, "two-removals", both))
	require.NoError(t, err)
}

// TestChangesHeadingsAndListItems: a heading is one version exactly, and
// a list item that mentions breaking must be a declaration.
func TestChangesHeadingsAndListItems(t *testing.T) {
	got, err := ParseChanges("C.md", []byte("## v1.5\n## v1\n## v12 (in development)\n## v3\tdraft\n"))
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, 2, got[1].Line, "\"## v1.5\" is not the entry of v1")
	require.NotNil(t, got[12])
	require.NotNil(t, got[3])

	for _, line := range []string{
		"  - breaking `a-b` at `GET /x`: indented",
		"* breaking `a-b` at `GET /x`: another marker",
		"+ breaking `a-b` at `GET /x`: another marker",
		"- Breaking `a-b` at `GET /x`: capital",
		"- this is a breaking change of GET /x",
		"-breaking `a-b` at `GET /x`: no space",
		"1. breaking `a-b` at `GET /x`: ordered list",
		"> - breaking `a-b` at `GET /x`: quoted",
	} {
		_, err := ParseChanges("C.md", []byte("## v2\n\nprose\n"+line+"\n"))
		require.ErrorContains(t, err, "C.md line 4:", "line %q", line)
	}
	_, err = ParseChanges("C.md", []byte("## v2\nProse may say breaking anywhere outside a list item.\n- no break here\n"))
	require.NoError(t, err)
}

// TestDeclarationsCounted: a key oasdiff reports n times needs n
// declarations, no fewer and no more.
func TestDeclarationsCounted(t *testing.T) {
	c := Change{Rule: "response-required-property-removed", Method: "GET", Path: "/items", Args: []string{"size", "200"}, Text: "removed size"}
	decl := func(line int) Declaration {
		return Declaration{Rule: c.Rule, Method: c.Method, Path: c.Path, Args: c.Args, Reason: "why", Line: line}
	}
	require.NoError(t, CheckDeclared("C.md", 2, []Change{c}, []Declaration{decl(3)}))
	require.NoError(t, CheckDeclared("C.md", 2, []Change{c, c}, []Declaration{decl(3), decl(4)}))
	err := CheckDeclared("C.md", 2, []Change{c, c}, []Declaration{decl(3)})
	require.ErrorContains(t, err, "undeclared breaking change in v2: response-required-property-removed GET /items on `size` `200` (removed size) (oasdiff reports it 2 times and each needs its own line; 1 declared)")
	err = CheckDeclared("C.md", 2, []Change{c}, []Declaration{decl(3), decl(4)})
	require.ErrorContains(t, err, "C.md line 4: stale declaration: oasdiff reports response-required-property-removed GET /items on `size` `200` 1 times in v2, and this is declaration 2 of it")
	require.NotContains(t, err.Error(), "line 3")
}
