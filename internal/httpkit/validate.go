package httpkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/uuid"

	"github.com/wagglevm/waggle/internal/oapierr"
	"github.com/wagglevm/waggle/internal/strictjson"
)

// NewValidator returns middleware that holds each request under prefix to
// the contract doc before any handler sees it, in this order:
//
//   - an unknown path answers 404 not_found, a method the path lacks 405
//     method_not_allowed with the Allow header listing the path's methods;
//   - an operation that the contract secures (its own security, else the
//     document's) answers 401 unauthorized unless the request proved its
//     credentials (see Authenticated), before anything about its
//     parameters or body is looked at;
//   - an operation that takes no body (none in the contract) ignores
//     one: it is not read nor judged, its handler sees none, and the
//     request cannot be upgraded (its Upgrade header is dropped);
//   - for one that takes a body: a declared length over the limit
//     answers 413 body_too_large; a body (one that is not empty) must
//     have one well-formed Content-Type (else 415
//     unsupported_media_type), and a JSON body must be exactly one JSON
//     value (else 400 invalid_request);
//   - parameters and body must match the contract (400 invalid_request
//     naming the field, 415 for a content type the operation does not
//     take).
//
// doc is validated first, and every security scheme it uses must be one
// that the skeleton can check (HTTP bearer). NewValidator changes doc's
// Servers: routes are matched on the path below the mount point.
func NewValidator(doc *openapi3.T, prefix string) (func(http.Handler) http.Handler, error) {
	registerFormats()
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("contract at %s is invalid: %w", prefix, err)
	}
	if err := checkSchemes(doc); err != nil {
		return nil, fmt.Errorf("contract at %s: %w", prefix, err)
	}
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route contract at %s: %w", prefix, err)
	}
	v := &validator{doc: doc, router: router, prefix: prefix}
	return v.middleware, nil
}

type validator struct {
	doc    *openapi3.T
	router routers.Router
	prefix string
}

var filterOptions = &openapi3filter.Options{
	MultiError: true,
	// Credentials are checked before validation, by checkSecurity.
	AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
}

func (v *validator) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner := *r
		u := *r.URL
		u.Path, u.RawPath = strings.TrimPrefix(r.URL.Path, v.prefix), ""
		inner.URL = &u
		route, params, err := v.router.FindRoute(&inner)
		if err != nil {
			// kin-openapi's router tells a wrong method from an unknown
			// path only on paths without parameters: ask it per method.
			if allowed := v.allowed(&inner); len(allowed) > 0 {
				setAllow(w, allowed)
				WriteError(w, r, Errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
					"%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
				return
			}
			WriteError(w, r, &Error{http.StatusNotFound, CodeNotFound, "no such path: " + r.URL.Path})
			return
		}
		if e := v.checkSecurity(r, route.Operation); e != nil {
			WriteError(w, r, e)
			return
		}
		if route.Operation.RequestBody == nil {
			// The operation takes no body: whatever was sent is not read
			// nor judged (the answer closes the connection; see
			// withBodyLimit), and cannot become the start of an upgraded
			// connection's stream either.
			if HasBody(r) {
				r.Header.Del("Upgrade")
			}
			r.Body, r.ContentLength = http.NoBody, 0
			inner.Body, inner.ContentLength = http.NoBody, 0
		} else {
			if max := bodyLimit(r.Context()); r.ContentLength > max {
				WriteError(w, r, Errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
					"request body is larger than %s", byteSize(max)))
				return
			}
			if e := readBody(r); e != nil {
				WriteError(w, r, e)
				return
			}
			inner.Body = r.Body
		}
		in := &openapi3filter.RequestValidationInput{Request: &inner, PathParams: params, Route: route, Options: filterOptions}
		if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
			WriteError(w, r, requestError(err))
			return
		}
		// ValidateRequest read the body and left a fresh reader in inner.
		r.Body = inner.Body
		next.ServeHTTP(w, r)
	})
}

// allowed lists the methods the contract has on r's path.
func (v *validator) allowed(r *http.Request) []string {
	var out []string
	for _, m := range methods {
		probe := *r
		probe.Method = m
		if _, _, err := v.router.FindRoute(&probe); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// readBody reads r's body into memory and puts it back, refusing a body
// whose Content-Type is malformed or given more than once, and a JSON
// body that is not exactly one JSON value: kin-openapi and the generated
// handlers read the first value and would ignore whatever follows it. The
// Content-Type header is rewritten in canonical form, so that every later
// reader judges the type that was checked here. A body known to be empty
// becomes http.NoBody, whatever its Content-Type says.
func readBody(r *http.Request) *Error {
	if !HasBody(r) {
		r.Body, r.ContentLength = http.NoBody, 0
		return nil
	}
	max := bodyLimit(r.Context())
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return BodyReadError(err)
	}
	if int64(len(body)) > max {
		return Errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body is larger than %s", byteSize(max))
	}
	if len(body) == 0 {
		r.Body, r.ContentLength = http.NoBody, 0
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	cts := r.Header.Values("Content-Type")
	switch {
	case len(cts) == 0:
		return nil // the operation's to judge: it wants a type or takes no body
	case len(cts) > 1:
		return &Error{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "header Content-Type: give it once"}
	}
	mt, params, err := mime.ParseMediaType(cts[0])
	canonical := mime.FormatMediaType(mt, params)
	if err != nil || canonical == "" {
		return &Error{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "header Content-Type: not a media type"}
	}
	r.Header.Set("Content-Type", canonical)
	if mt == "application/json" {
		if err := strictjson.Single(body); err != nil {
			return &Error{http.StatusBadRequest, CodeInvalidRequest, "request body is not one JSON value: " + err.Error()}
		}
	}
	return nil
}

// registerFormats teaches kin-openapi the string formats our contracts use
// that it does not check by default. The registry is global, so once.
var registerFormats = sync.OnceFunc(func() {
	openapi3.DefineStringFormatCallback("uuid", func(s string) error {
		if len(s) != 36 {
			return fmt.Errorf("not a UUID in 8-4-4-4-12 form")
		}
		if _, err := uuid.Parse(s); err != nil {
			return fmt.Errorf("not a UUID: %v", err)
		}
		return nil
	})
})

// requestError maps a kin-openapi validation error to its answer.
func requestError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) && re.RequestBody != nil && strings.Contains(re.Reason, "header Content-Type") {
		return &Error{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, oapierr.Describe(err)}
	}
	return &Error{http.StatusBadRequest, CodeInvalidRequest, oapierr.Describe(err)}
}
