package v1

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/apicheck"

	api "github.com/wagglevm/waggle/gen/control-plane/v1"
)

// The contract's error paragraph lists every code this package answers,
// and every code the paragraph or a response of the contract names is one
// answered: the set is closed on both sides.
func TestContractListsEveryCode(t *testing.T) {
	doc, err := api.GetSwagger()
	require.NoError(t, err)
	para := apicheck.ErrorParagraph(doc)
	require.NotEmpty(t, para, "the contract has no error paragraph")
	for _, c := range Codes {
		require.Contains(t, para, "`"+c+"`", "the contract does not list %s", c)
	}
	for _, c := range apicheck.QuotedCodes(para) {
		if c == "error_code" || c == "message" || c == "request_id" {
			continue
		}
		require.True(t, slices.Contains(Codes, c), "the error paragraph names %s, which is never answered", c)
	}
	for name, codes := range apicheck.ResponseCodes(doc) {
		for _, c := range codes {
			require.True(t, slices.Contains(Codes, c), "response %s names %s, which is never answered", name, c)
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
	require.ElementsMatch(t, sagaErrorCodes(), enum("SagaErrorCode"))
	require.ElementsMatch(t, sagaKinds(), enum("SagaKind"), "every kind the control plane runs, and none it does not")
}
