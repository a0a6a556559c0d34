package v1

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/control-plane/v1"
)

var quotedCode = regexp.MustCompile("`([a-z][a-z0-9_]*)`")

// The contract's error paragraph lists every code this package answers,
// and every code the paragraph or a response of the contract names is one
// answered: the set is closed on both sides.
func TestContractListsEveryCode(t *testing.T) {
	doc, err := api.GetSwagger()
	require.NoError(t, err)
	desc := doc.Info.Description
	i := strings.Index(desc, "**Errors.**")
	require.GreaterOrEqual(t, i, 0)
	para := desc[i:]
	if j := strings.Index(para, "\n\n"); j >= 0 {
		para = para[:j]
	}
	for _, c := range Codes {
		require.Contains(t, para, "`"+c+"`", "the contract does not list %s", c)
	}
	for _, m := range quotedCode.FindAllStringSubmatch(para, -1) {
		if m[1] == "error_code" || m[1] == "message" || m[1] == "request_id" {
			continue
		}
		require.True(t, slices.Contains(Codes, m[1]), "the error paragraph names %s, which is never answered", m[1])
	}
	for name, r := range doc.Components.Responses {
		for _, m := range quotedCode.FindAllStringSubmatch(*r.Value.Description, -1) {
			require.True(t, slices.Contains(Codes, m[1]), "response %s names %s, which is never answered", name, m[1])
		}
	}
}

// Every schema's enum that mirrors a domain type lists what the domain
// has, so that no view converts to a value the contract refuses.
func TestEnumsMirrorTheDomain(t *testing.T) {
	doc, err := api.GetSwagger()
	require.NoError(t, err)
	enum := func(schema string) []string {
		s := doc.Components.Schemas[schema].Value
		var out []string
		for _, v := range s.Enum {
			out = append(out, v.(string))
		}
		return out
	}
	require.ElementsMatch(t, vmmStateNames(), enum("VmmState"))
	require.ElementsMatch(t, visibleStates(), enum("InstanceState"))
	require.ElementsMatch(t, failureKinds(), doc.Components.Schemas["FailureReason"].Value.Properties["kind"].Value.Enum)
}
