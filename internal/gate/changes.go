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
// one entry, headed "## v<N>" exactly (then the end of the line, or a space
// and anything: "## v1 (in development)"; "## v1.5" is no entry). Inside
// it, every breaking change oasdiff reports against the newest released
// version must be declared on a line of its own, one line per change:
//
//	- breaking `<oasdiff rule id>` at `<METHOD> <path>` on `<arg>` `<arg>`...: <why, in words>
//	- breaking `<oasdiff rule id>` at `*` on `<arg>`...: <why>   (a change of no operation)
//
// The args are what oasdiff says changed, in its order (for
// response-required-property-removed: the property and the status, as in
// "removed the required property `size` from the response with the `200`
// status"); a rule with no args has no "on". So two properties removed from
// one response are two declarations, and one cannot cover the other. Each
// declaration covers one change: should oasdiff report the same key twice
// (one property in two media types of a response), it is declared twice,
// each line with its own reason. The gate's message for an undeclared
// change gives the exact line to write.
//
// Everything else in the file is prose for people, but a list item ("-",
// "*", "+" or "1." at any indentation, quoted or not) that mentions
// "breaking" (in any case, "non-breaking" included) must be a
// declaration in the form above, at the start of its line: anything else is
// an error naming the file and the line, as is a declaration outside an
// entry, one without a reason, or a version with two entries.

// Declaration is one declared breaking change.
type Declaration struct {
	Rule   string
	Method string // empty with Path "*": a change of no operation
	Path   string
	// Args are what oasdiff says changed (the backquoted words after
	// "on"), in its order.
	Args   []string
	Reason string
	Line   int
}

// Key identifies the reported change a declaration covers.
func (d Declaration) Key() string { return changeKey(d.Rule, d.Method, d.Path, d.Args) }

// changeKey is "<rule> <METHOD> <path>" (or "<rule> *"), then " on" and
// each arg in backquotes.
func changeKey(rule, method, path string, args []string) string {
	if method == "" && path == "" {
		path = "*"
	}
	k := rule + " " + strings.TrimSpace(method+" "+path)
	if len(args) > 0 {
		k += " on " + quoteArgs(args)
	}
	return k
}

// quoteArgs writes args as a declaration does: each in backquotes,
// separated by spaces.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "`" + a + "`"
	}
	return strings.Join(q, " ")
}

// ChangesEntry is one version's entry.
type ChangesEntry struct {
	Version      int
	Line         int
	Declarations []Declaration
}

var (
	entryHeading = regexp.MustCompile(`^## v([1-9][0-9]*)(?:[ \t]|$)`)
	declLine     = regexp.MustCompile("^- breaking `([a-z0-9-]+)` at `(?:([A-Z]+) (/[^`]*)|\\*)`((?: on(?: `[^`]*`)+)?): *(.*)$")
	declArg      = regexp.MustCompile("`([^`]*)`")
	// listItem is a Markdown list item's marker, at any indentation,
	// in a block quote or not.
	listItem = regexp.MustCompile(`^[ \t>]*(?:[-*+]|[0-9]+[.)])(?:[ \t]|$)`)
	// mentionsBreaking finds the word in any case.
	mentionsBreaking = regexp.MustCompile(`(?i)breaking`)
)

// ParseChanges parses a CHANGES.md. name is the file's name in messages.
func ParseChanges(name string, data []byte) (map[int]*ChangesEntry, error) {
	out := map[int]*ChangesEntry{}
	var cur *ChangesEntry
	var errs []error
	bad := func(n int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s line %d: %s", name, n, fmt.Sprintf(format, args...)))
	}
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
			continue
		}
		if !strings.HasPrefix(line, "- breaking") && !(isListItem(line) && mentionsBreaking.MatchString(line)) {
			continue
		}
		m := declLine.FindStringSubmatch(line)
		switch {
		case m == nil:
			bad(n, "malformed declaration %q: a list item that mentions breaking must be \"- breaking `<rule-id>` at `<METHOD> <path>` on `<arg>`...: <reason>\" (or at `*`; no \"on\" for a rule with no args) at the start of the line; say it in prose outside a list otherwise", line)
		case cur == nil:
			bad(n, "declaration outside a version's entry (\"## v<N>\")")
		case strings.TrimSpace(m[5]) == "":
			bad(n, "declaration of %s has no reason: say why the break is accepted", m[1])
		default:
			d := Declaration{Rule: m[1], Method: m[2], Path: m[3], Reason: strings.TrimSpace(m[5]), Line: n}
			for _, a := range declArg.FindAllStringSubmatch(m[4], -1) {
				d.Args = append(d.Args, a[1])
			}
			cur.Declarations = append(cur.Declarations, d)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read %s: %w", name, err))
	}
	return out, errors.Join(errs...)
}

// isListItem reports whether line is a Markdown list item (a "-", "*" or
// "+" marker, or a number and "." or ")", at any indentation), or a
// marker directly followed by the word breaking ("-breaking").
func isListItem(line string) bool {
	if listItem.MatchString(line) {
		return true
	}
	t := strings.TrimLeft(line, " \t>")
	return len(t) > 0 && strings.ContainsRune("-*+", rune(t[0])) && strings.HasPrefix(strings.ToLower(strings.TrimLeft(t[1:], " \t")), "breaking")
}
