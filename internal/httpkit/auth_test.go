package httpkit

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAuthFromTheContract(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken)})
	cases := []struct {
		name, method, path, body, auth string
		status                         int
	}{
		{"secured, no token", http.MethodGet, itemPath, "", "", 401},
		{"secured, wrong token", http.MethodGet, itemPath, "", "Bearer " + goodToken[:len(goodToken)-1] + "X", 401},
		{"secured, token prefix", http.MethodGet, itemPath, "", "Bearer " + goodToken[:20], 401},
		{"secured, token with more", http.MethodGet, itemPath, "", "Bearer " + goodToken + "x", 401},
		{"secured, other scheme", http.MethodGet, itemPath, "", "Basic " + goodToken, 401},
		{"secured, empty bearer", http.MethodGet, itemPath, "", "Bearer ", 401},
		{"secured, good token", http.MethodGet, itemPath, "", "Bearer " + goodToken, 200},
		{"scheme in any case", http.MethodGet, itemPath, "", "bEARER " + goodToken, 200},
		{"open operation, no token", http.MethodGet, "/v1/open", "", "", 200},
		{"open operation, wrong token", http.MethodGet, "/v1/open", "", "Bearer nope", 200},
		// Credentials come before validation: a caller without them learns
		// nothing about what it sent.
		{"bad parameter, no token", http.MethodGet, "/v1/items/not-a-uuid?n=0", "", "", 401},
		{"bad body, no token", http.MethodPut, itemPath, `{"color":1} trailing`, "", 401},
		{"bad parameter, good token", http.MethodGet, "/v1/items/not-a-uuid", "", "Bearer " + goodToken, 400},
		// Routing comes first: an unknown path is 404 whatever the token.
		{"unknown path, no token", http.MethodGet, "/v1/nothing", "", "", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := newRequest(c.method, c.path, c.body, "Content-Type", "application/json")
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			rec := serve(h, req)
			require.Equal(t, c.status, rec.Code, rec.Body.String())
			if c.status == 401 {
				e := errorOf(t, rec, 401)
				require.Equal(t, CodeUnauthorized, e.ErrorCode)
				require.Equal(t, "Bearer", rec.Header().Get("WWW-Authenticate"))
				require.NotContains(t, rec.Body.String(), goodToken[:8], "the token is never echoed")
			}
		})
	}
}

func TestTwoAuthorizationHeadersAreRefused(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: BearerToken(goodToken)})
	req := newRequest(http.MethodGet, itemPath, "", "Authorization", "Bearer "+goodToken, "Authorization", "Bearer "+goodToken)
	require.Equal(t, 401, serve(h, req).Code)
}

func TestZeroAuthAcceptsNothing(t *testing.T) {
	for _, a := range []Auth{{}, BearerToken("")} {
		h := testHandler(t, HandlerOptions{Auth: a})
		for _, cred := range []string{"", "Bearer ", "Bearer " + goodToken, "Bearer x"} {
			req := newRequest(http.MethodGet, itemPath, "")
			if cred != "" {
				req.Header.Set("Authorization", cred)
			}
			require.Equal(t, 401, serve(h, req).Code, "credential %q", cred)
		}
		require.Equal(t, 200, serve(h, newRequest(http.MethodGet, "/v1/open", "")).Code)
	}
}

func TestNoAuthLetsAllIn(t *testing.T) {
	h := testHandler(t, HandlerOptions{Auth: NoAuth()})
	require.Equal(t, 200, serve(h, newRequest(http.MethodGet, itemPath, "")).Code)
}

// TestValidatorAloneRefuses: the validator used without NewHandler's
// credential check refuses secured operations rather than let them in.
func TestValidatorAloneRefuses(t *testing.T) {
	validate, err := NewValidator(loadDoc(t, testDoc), "/v1")
	require.NoError(t, err)
	h := withRequestID(validate(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })))
	req := newRequest(http.MethodGet, itemPath, "", "Authorization", "Bearer "+goodToken)
	require.Equal(t, 401, serve(h, req).Code)
}

func TestOperationSecurityOverridesTheDocument(t *testing.T) {
	// No global requirement; one operation asks for bearer itself.
	doc := loadDoc(t, `
openapi: 3.0.3
info: {title: t, version: "1"}
components:
  securitySchemes:
    bearerAuth: {type: http, scheme: bearer}
paths:
  /a:
    get:
      security: [{bearerAuth: []}]
      responses: {"200": {description: ok}}
  /b:
    get:
      responses: {"200": {description: ok}}
`)
	validate, err := NewValidator(doc, "")
	require.NoError(t, err)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	h, err := NewHandler(HandlerOptions{Auth: BearerToken(goodToken), Log: quiet}, Version{Prefix: "/x", Handler: http.StripPrefix("/x", validate(ok))})
	require.NoError(t, err)
	require.Equal(t, 401, serve(h, newRequest(http.MethodGet, "/x/a", "")).Code)
	require.Equal(t, 200, serve(h, newRequest(http.MethodGet, "/x/a", "", "Authorization", "Bearer "+goodToken)).Code)
	require.Equal(t, 200, serve(h, newRequest(http.MethodGet, "/x/b", "")).Code)
}

func TestUnsupportedSchemeIsRefusedAtStart(t *testing.T) {
	doc := loadDoc(t, `
openapi: 3.0.3
info: {title: t, version: "1"}
security: [{key: []}]
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-Key}
paths:
  /a:
    get:
      responses: {"200": {description: ok}}
`)
	_, err := NewValidator(doc, "/v1")
	require.ErrorContains(t, err, "key")
}

func TestBearerAuthEditor(t *testing.T) {
	req, err := http.NewRequest(http.MethodGet, "http://x/", nil)
	require.NoError(t, err)
	require.NoError(t, BearerAuth(goodToken)(context.Background(), req))
	require.True(t, BearerToken(goodToken).check(req))
	require.Equal(t, "Bearer "+goodToken, BearerHeader(goodToken).Get("Authorization"))
}
