package gate

import (
	"strings"
	"testing"
)

// FuzzParseChanges: every error names the file and the line, every
// declaration accepted has a rule and a reason, and no input panics.
func FuzzParseChanges(f *testing.F) {
	f.Add(allDeclared)
	f.Add("## v2\n- breaking `a` at `*`:\n- breaking\n## v2\n")
	f.Fuzz(func(t *testing.T, data string) {
		entries, err := ParseChanges("C", []byte(data))
		if err != nil {
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, "C line ") && !strings.HasPrefix(l, "read ") {
					t.Fatalf("error line %q does not name the file and line", l)
				}
			}
		}
		for _, e := range entries {
			for _, d := range e.Declarations {
				if d.Rule == "" || d.Reason == "" || d.Line < 1 {
					t.Fatalf("accepted a bad declaration %+v", d)
				}
			}
		}
	})
}
