package oapierr

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/require"
)

// A oneOf of two closed shapes told apart by which property they hold, as
// the v1 ensure request is.
const oneOfDoc = `{"openapi":"3.0.3","info":{"title":"t","version":"1"},"paths":{},
"components":{"schemas":{
 "Req":{"oneOf":[{"$ref":"#/components/schemas/A"},{"$ref":"#/components/schemas/B"}]},
 "A":{"type":"object","additionalProperties":false,"required":["name","spec"],
      "properties":{"name":{"type":"string"},"spec":{"type":"object","properties":{"cpus":{"type":"integer","minimum":1}}}}},
 "B":{"type":"object","additionalProperties":false,"required":["name","migrate"],
      "properties":{"name":{"type":"string"},"migrate":{"type":"object","properties":{"id":{"type":"string","minLength":3}}}}}}}}`

func describeBody(t *testing.T, body string) string {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData([]byte(oneOfDoc))
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()))
	var v any
	require.NoError(t, json.Unmarshal([]byte(body), &v))
	err = doc.Components.Schemas["Req"].Value.VisitJSON(v, openapi3.MultiErrors())
	require.Error(t, err)
	return prefixed("body", err, "")
}

func TestOneOfNamesOnlyTheBranchTheClientMeant(t *testing.T) {
	msg := describeBody(t, `{"name":"a","spec":{"cpus":0}}`)
	require.Equal(t, "body.spec.cpus: number must be at least 1", msg)

	msg = describeBody(t, `{"name":"a","migrate":{"id":"x"}}`)
	require.Equal(t, "body.migrate.id: minimum string length is 3", msg)
}

func TestOneOfWithNoClearBranchListsEach(t *testing.T) {
	msg := describeBody(t, `{"name":"a"}`)
	require.Contains(t, msg, `body.spec: property "spec" is missing`)
	require.Contains(t, msg, `body.migrate: property "migrate" is missing`)

	msg = describeBody(t, `{"name":"a","spec":{},"migrate":{}}`)
	require.Contains(t, msg, `property "migrate" is unsupported`)
	require.Contains(t, msg, `property "spec" is unsupported`)
}
