package server

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

// newValidator returns middleware that checks each request under prefix
// against doc (parameters, body schema, content type) before any handler
// sees it. A request that breaks the contract answers 400 invalid_request
// naming the field; an unknown path or method answers 404 or 405.
func newValidator(doc *openapi3.T, prefix string) (func(http.Handler) http.Handler, error) {
	registerFormats()
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("contract at %s is invalid: %w", prefix, err)
	}
	// Routes are matched on the path below the mount point.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route contract at %s: %w", prefix, err)
	}
	opts := &openapi3filter.Options{MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inner := *r
			u := *r.URL
			u.Path, u.RawPath = strings.TrimPrefix(r.URL.Path, prefix), ""
			inner.URL = &u
			route, params, err := router.FindRoute(&inner)
			var re *routers.RouteError
			switch {
			case errors.As(err, &re) && re.Reason == routers.ErrMethodNotAllowed.Error():
				writeError(w, r, &apiError{http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method + " is not allowed on " + r.URL.Path})
				return
			case err != nil:
				writeError(w, r, &apiError{http.StatusNotFound, CodeNotFound, "no such path: " + r.URL.Path})
				return
			}
			if err := requireOneJSONValue(&inner); err != nil {
				writeError(w, r, requestError(err))
				return
			}
			in := &openapi3filter.RequestValidationInput{Request: &inner, PathParams: params, Route: route, Options: opts}
			if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
				writeError(w, r, requestError(err))
				return
			}
			// ValidateRequest read the body and left a fresh reader in inner.
			r.Body = inner.Body
			next.ServeHTTP(w, r)
		})
	}, nil
}

// requireOneJSONValue refuses a JSON body that is not exactly one value:
// kin-openapi and the generated handlers read the first value and would
// ignore whatever follows it. The body is read (within the body limit) and
// put back for the next reader.
func requireOneJSONValue(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody || !isJSON(r.Header.Get("Content-Type")) {
		return nil // the content type is kin-openapi's to judge
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := strictjson.Single(body); err != nil {
		return &apiError{http.StatusBadRequest, CodeInvalidRequest, "request body is not one JSON value: " + err.Error()}
	}
	return nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
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

func requestError(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return mbe
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) && re.RequestBody != nil && strings.Contains(re.Reason, "header Content-Type") {
		return &apiError{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, oapierr.Describe(err)}
	}
	return &apiError{http.StatusBadRequest, CodeInvalidRequest, oapierr.Describe(err)}
}
