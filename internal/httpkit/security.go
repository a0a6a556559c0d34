package httpkit

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// checkSecurity answers 401 unless r meets op's effective security
// requirement: the operation's own when it has one (an empty one means
// none), else the document's. The requirement is a list of alternatives,
// any of which will do; an alternative names schemes, all of which must
// be met. The only scheme the skeleton knows is HTTP bearer, met by a
// request that Authenticated accepts.
func (v *validator) checkSecurity(r *http.Request, op *openapi3.Operation) *Error {
	reqs := v.doc.Security
	if op.Security != nil {
		reqs = *op.Security
	}
	if len(reqs) == 0 {
		return nil
	}
	authed := Authenticated(r.Context())
	for _, alt := range reqs {
		met := true
		for name := range alt {
			if !isBearer(v.doc, name) || !authed {
				met = false
			}
		}
		if met {
			return nil
		}
	}
	msg := "this operation needs a bearer token: send header Authorization: Bearer <token>"
	if _, ok := bearer(r.Header); ok {
		msg = "the bearer token is not valid"
	}
	return &Error{http.StatusUnauthorized, CodeUnauthorized, msg}
}

// isBearer reports whether doc's security scheme name is HTTP bearer.
func isBearer(doc *openapi3.T, name string) bool {
	if doc.Components == nil {
		return false
	}
	ref := doc.Components.SecuritySchemes[name]
	return ref != nil && ref.Value != nil && ref.Value.Type == "http" && strings.EqualFold(ref.Value.Scheme, "bearer")
}

// checkSchemes fails when doc requires a security scheme that the
// skeleton cannot check, so a contract is never served with a requirement
// that would silently refuse every request.
func checkSchemes(doc *openapi3.T) error {
	var bad []string
	note := func(reqs openapi3.SecurityRequirements) {
		for _, alt := range reqs {
			for name := range alt {
				if !isBearer(doc, name) {
					bad = append(bad, name)
				}
			}
		}
	}
	note(doc.Security)
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			if op.Security != nil {
				note(*op.Security)
			}
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("security schemes %v are not HTTP bearer, the only kind the server checks", bad)
	}
	return nil
}
