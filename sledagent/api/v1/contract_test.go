package v1

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/apicheck"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
)

// The contract's error paragraph lists every code the agent answers, and
// every code a response of the contract names is one the agent answers:
// the set is closed on both sides.
func TestContractListsEveryCode(t *testing.T) {
	doc, err := api.GetSwagger()
	require.NoError(t, err)
	para := apicheck.ErrorParagraph(doc)
	require.NotEmpty(t, para, "the contract has no error paragraph")
	for _, c := range AgentCodes {
		require.Contains(t, para, "`"+c+"`", "the contract does not list %s", c)
	}
	for name, codes := range apicheck.ResponseCodes(doc) {
		for _, c := range codes {
			require.True(t, slices.Contains(AgentCodes, c), "response %s names %s, which the agent never answers", name, c)
		}
	}
	for _, c := range apicheck.QuotedCodes(para) {
		if c == "error_code" || c == "message" || c == "force" {
			continue
		}
		require.True(t, slices.Contains(AgentCodes, c), "the error paragraph names %s, which the agent never answers", c)
	}
}
