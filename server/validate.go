package server

import (
	"net/http"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// newValidator returns middleware that checks each request under prefix
// against doc before any handler sees it: route (404, 405 with Allow),
// credentials where the contract asks for them (401), then content type,
// parameters and body (400, 415). See httpkit.NewValidator.
func newValidator(doc *openapi3.T, prefix string) (func(http.Handler) http.Handler, error) {
	return httpkit.NewValidator(doc, prefix)
}
