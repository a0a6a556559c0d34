package v1

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
)

var quotedCode = regexp.MustCompile("`([a-z][a-z0-9_]*)`")

// The contract's error paragraph lists every code the agent answers, and
// every code a response of the contract names is one the agent answers:
// the set is closed on both sides.
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
	for _, c := range AgentCodes {
		require.Contains(t, para, "`"+c+"`", "the contract does not list %s", c)
	}
	for name, r := range doc.Components.Responses {
		for _, m := range quotedCode.FindAllStringSubmatch(*r.Value.Description, -1) {
			require.True(t, slices.Contains(AgentCodes, m[1]), "response %s names %s, which the agent never answers", name, m[1])
		}
	}
	for _, m := range quotedCode.FindAllStringSubmatch(para, -1) {
		if m[1] == "error_code" || m[1] == "message" || m[1] == "force" {
			continue
		}
		require.True(t, slices.Contains(AgentCodes, m[1]), "the error paragraph names %s, which the agent never answers", m[1])
	}
}
