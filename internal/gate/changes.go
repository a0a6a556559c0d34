package gate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The machine-readable part of openapi/<api>/CHANGES.md. Each version has
// one entry, headed "## v<N>" (anything may follow on the line). Inside it,
// every breaking change oasdiff reports against the newest released
// version must be declared on a line of its own:
//
//	- breaking `<oasdiff rule id>` at `<METHOD> <path>`: <why, in words>
//	- breaking `<oasdiff rule id>` at `*`: <why>      (a change of no operation)
//
// Everything else in the file is prose for people. A line that starts with
// "- breaking" and does not follow the form is an error naming the file and
// the line, as is a declaration outside an entry, one without a reason, a
// version with two entries, or the same declaration twice.

// Declaration is one declared breaking change.
type Declaration struct {
	Rule   string
	Method string // empty with Path "*": a change of no operation
	Path   string
	Reason string
	Line   int
}

// Key identifies the reported change a declaration covers.
func (d Declaration) Key() string { return changeKey(d.Rule, d.Method, d.Path) }

func changeKey(rule, method, path string) string {
	if method == "" && path == "" {
		path = "*"
	}
	return rule + " " + strings.TrimSpace(method+" "+path)
}

// ChangesEntry is one version's entry.
type ChangesEntry struct {
	Version      int
	Line         int
	Declarations []Declaration
}

var (
	entryHeading = regexp.MustCompile(`^## v([1-9][0-9]*)\b`)
	declPrefix   = "- breaking"
	declLine     = regexp.MustCompile("^- breaking `([a-z0-9-]+)` at `(?:([A-Z]+) (/[^`]*)|\\*)`: *(.*)$")
)

// ParseChanges parses a CHANGES.md. name is the file's name in messages.
func ParseChanges(name string, data []byte) (map[int]*ChangesEntry, error) {
	out := map[int]*ChangesEntry{}
	var cur *ChangesEntry
	var errs []error
	bad := func(n int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s line %d: %s", name, n, fmt.Sprintf(format, args...)))
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t")
		if m := entryHeading.FindStringSubmatch(line); m != nil {
			v, _ := strconv.Atoi(m[1])
			if prev, dup := out[v]; dup {
				bad(n, "a second entry for v%d (the first is on line %d)", v, prev.Line)
				cur = nil
				continue
			}
			cur = &ChangesEntry{Version: v, Line: n}
			out[v] = cur
			clear(seen)
			continue
		}
		if !strings.HasPrefix(line, declPrefix) {
			continue
		}
		m := declLine.FindStringSubmatch(line)
		switch {
		case m == nil:
			bad(n, "malformed declaration %q; want \"- breaking `<rule-id>` at `<METHOD> <path>`: <reason>\" (or at `*`)", line)
		case cur == nil:
			bad(n, "declaration outside a version's entry (\"## v<N>\")")
		case strings.TrimSpace(m[4]) == "":
			bad(n, "declaration of %s has no reason: say why the break is accepted", m[1])
		default:
			d := Declaration{Rule: m[1], Method: m[2], Path: m[3], Reason: strings.TrimSpace(m[4]), Line: n}
			if first, dup := seen[d.Key()]; dup {
				bad(n, "%s is declared twice (first on line %d)", d.Key(), first)
				continue
			}
			seen[d.Key()] = n
			cur.Declarations = append(cur.Declarations, d)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read %s: %w", name, err))
	}
	return out, errors.Join(errs...)
}
