package corpus

import (
	"strings"
	"testing"
)

// Every error of the corpus's index parsers names the file and the line,
// and no input makes them panic.

func FuzzParseManifest(f *testing.F) {
	f.Add("# c\n" + strings.Repeat("a", 64) + "  vmm-server/v1/spec/x.json\n")
	f.Add(strings.Repeat("b", 64) + "  vmm-server/v1/spec/x.after.json  reason: why\n")
	f.Add(strings.Repeat("b", 64) + "  vmm-server/v1/spec/x.after.json\nzz\n\n")
	f.Fuzz(func(t *testing.T, data string) {
		m, err := ParseManifest("M", []byte(data))
		checkLineErrors(t, "M line ", err)
		for _, e := range m.Entries {
			if _, perr := ParseFilePath(e.Path); perr != nil || len(e.SHA256) != 64 {
				t.Fatalf("accepted a bad entry %+v", e)
			}
		}
	})
}

func FuzzParseReleases(f *testing.F) {
	f.Add("v0.1.0  " + strings.Repeat("ab", 20) + "  vmm-server/v1,vmm-server/v2\n")
	f.Add("# only a comment\n")
	f.Add("v1 abc vmm-server/v1\nv1 abc\n")
	f.Fuzz(func(t *testing.T, data string) {
		_, err := ParseReleases("R", []byte(data))
		checkLineErrors(t, "R line ", err)
	})
}

// checkLineErrors fails unless every line of err's message (one per joined
// error) starts with prefix followed by a line number, or is a read error.
func checkLineErrors(t *testing.T, prefix string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, l := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(l, prefix) && !strings.HasPrefix(l, "read ") {
			t.Fatalf("error line %q does not name the file and line", l)
		}
	}
}

func FuzzParseCaptured(f *testing.F) {
	f.Add(strings.Repeat("a", 64) + "  vmm-server/v1/device/captured-x.json  commit " + strings.Repeat("c", 40) + "  command go run ./cmd/corpusgen -capture\n")
	f.Add("# header\nabc x commit y command\n")
	f.Fuzz(func(t *testing.T, data string) {
		got, err := ParseCaptured("C", []byte(data))
		checkLineErrors(t, "C line ", err)
		for p, e := range got {
			if p != e.Path || len(e.SHA256) != 64 || len(e.Commit) != 40 || e.Command == "" || e.Line < 1 {
				t.Fatalf("accepted a bad record %+v", e)
			}
		}
	})
}
