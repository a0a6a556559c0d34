package v1

import (
	"testing"

	"github.com/google/uuid"
)

// FuzzParseRef: a path's instance reference never panics; what it accepts
// is a canonical UUID or a name CheckName accepts, never both, and a
// refusal names the path parameter.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"ticker", "web-1", "0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10", "0C6A4A046A2F4D6E9F532B8B2F6A9A10",
		"{0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10}", "urn:uuid:0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10", "-x", "x-", "", "a_b", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		out, err := ParseRef(ref)
		if err != nil {
			fe, ok := err.(*fieldError)
			if !ok || fe.Field != "path instance" {
				t.Fatalf("ParseRef(%q): %v does not name the path parameter", ref, err)
			}
			return
		}
		id, perr := uuid.Parse(out)
		isName := CheckName(out) == nil
		switch {
		case perr == nil && isName:
			t.Fatalf("ParseRef(%q) = %q: both an id and a name", ref, out)
		case perr == nil && id.String() != out:
			t.Fatalf("ParseRef(%q) = %q: not canonical", ref, out)
		case perr != nil && !isName:
			t.Fatalf("ParseRef(%q) = %q: neither an id nor a name", ref, out)
		}
	})
}
