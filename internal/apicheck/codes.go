package apicheck

import (
	"regexp"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// quotedCode is a code as a contract's prose quotes it: `no_such_vmm`.
var quotedCode = regexp.MustCompile("`([a-z][a-z0-9_]*)`")

// ErrorParagraph returns a contract's error paragraph: the paragraph of its
// info description that starts with "**Errors.**" ("" when it has none).
func ErrorParagraph(doc *openapi3.T) string {
	desc := doc.Info.Description
	i := strings.Index(desc, "**Errors.**")
	if i < 0 {
		return ""
	}
	para := desc[i:]
	if j := strings.Index(para, "\n\n"); j >= 0 {
		para = para[:j]
	}
	return para
}

// QuotedCodes lists, in order and with repeats, the codes that text quotes
// (`name`).
func QuotedCodes(text string) []string {
	var out []string
	for _, m := range quotedCode.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// ResponseCodes maps each shared response of a contract
// (components.responses) to the codes its description quotes, by name.
func ResponseCodes(doc *openapi3.T) map[string][]string {
	out := map[string][]string{}
	names := make([]string, 0, len(doc.Components.Responses))
	for name := range doc.Components.Responses {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if r := doc.Components.Responses[name]; r != nil && r.Value != nil && r.Value.Description != nil {
			out[name] = QuotedCodes(*r.Value.Description)
		}
	}
	return out
}
