package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/spec"
)

// MaxBodyBytes bounds a request body; a larger one answers 413 body_too_large.
const MaxBodyBytes = httpkit.DefaultMaxBodyBytes

// Error codes: stable, listed in each contract's description. The generic
// ones are the skeleton's (httpkit); the rest name the VMM server's domain
// errors.
const (
	CodeInvalidRequest     = httpkit.CodeInvalidRequest
	CodeNotFound           = httpkit.CodeNotFound
	CodeMethodNotAllowed   = httpkit.CodeMethodNotAllowed
	CodeBodyTooLarge       = httpkit.CodeBodyTooLarge
	CodeUnsupportedMedia   = httpkit.CodeUnsupportedMedia
	CodeUnauthorized       = httpkit.CodeUnauthorized
	CodeRequestTimeout     = httpkit.CodeRequestTimeout
	CodeTooManyConnections = httpkit.CodeTooManyConnections
	CodeInternal           = httpkit.CodeInternal

	CodeInvalidSpec       = "invalid_spec"
	CodeNoInstance        = "no_instance"
	CodeInstanceExists    = "instance_exists"
	CodeInvalidTransition = "invalid_transition"
	CodeNoSuchMigration   = "no_such_migration"
	CodeNotUpgraded       = "not_upgraded"
	CodeVMError           = "vm_error"
	CodeNotExpressible    = "not_expressible"
	// The runtime's limits: a VM the host cannot back (409), every console
	// place taken (429), an ensure that gave up waiting for another (409).
	CodeInsufficientCapacity = "insufficient_capacity"
	CodeTooManyConsoles      = "too_many_consoles"
	CodeEnsureInProgress     = "ensure_in_progress"
	CodeShuttingDown         = "shutting_down"
)

// apiError is an error with its HTTP status and code, as the handlers
// produce them: the skeleton's httpkit.Error under a local name (a defined
// type, not an alias, so that its literals may leave out field names).
type apiError httpkit.Error

func (e *apiError) Error() string { return (*httpkit.Error)(e).Error() }

// errorBody is the contracts' Error schema. Every version has the same
// shape, so one type serves them all.
type errorBody = httpkit.ErrorBody

// classify maps an error from the Core or the HTTP plumbing to its status
// and code: the skeleton's own errors first, then the domain's.
func classify(err error) *httpkit.Error {
	return httpkit.Classify(err, classifyDomain)
}

// classifyDomain maps the handlers' and the Core's errors; nil for one it
// does not know. Other owners add their codes here.
func classifyDomain(err error) *httpkit.Error {
	var ae *apiError
	var ve *spec.ValidationError
	var te *TransitionError
	var vme *VMError
	switch {
	case errors.As(err, &ae):
		return (*httpkit.Error)(ae)
	case errors.As(err, &ve):
		return &httpkit.Error{Status: http.StatusBadRequest, Code: CodeInvalidSpec, Message: err.Error()}
	case errors.As(err, &te):
		return &httpkit.Error{Status: http.StatusConflict, Code: CodeInvalidTransition, Message: err.Error()}
	case errors.As(err, &vme):
		return &httpkit.Error{Status: http.StatusBadRequest, Code: CodeVMError, Message: err.Error()}
	case errors.Is(err, ErrNoInstance):
		return &httpkit.Error{Status: http.StatusNotFound, Code: CodeNoInstance, Message: err.Error()}
	case errors.Is(err, ErrInstanceExists):
		return &httpkit.Error{Status: http.StatusConflict, Code: CodeInstanceExists, Message: err.Error()}
	case errors.Is(err, ErrNoSuchMigration):
		return &httpkit.Error{Status: http.StatusNotFound, Code: CodeNoSuchMigration, Message: err.Error()}
	case errors.As(err, new(*CapacityError)):
		return &httpkit.Error{Status: http.StatusConflict, Code: CodeInsufficientCapacity, Message: err.Error()}
	case errors.Is(err, ErrTooManyConsoles):
		return &httpkit.Error{Status: http.StatusTooManyRequests, Code: CodeTooManyConsoles, Message: err.Error()}
	case errors.Is(err, ErrEnsureInProgress):
		return &httpkit.Error{Status: http.StatusConflict, Code: CodeEnsureInProgress, Message: err.Error()}
	case errors.Is(err, ErrShuttingDown):
		return &httpkit.Error{Status: http.StatusServiceUnavailable, Code: CodeShuttingDown, Message: err.Error()}
	case errors.As(err, new(*FieldError)):
		return &httpkit.Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: err.Error()}
	}
	return nil
}

// writeError answers err as the Error schema.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	httpkit.WriteError(w, r, classify(err))
}

// RequestID returns the id of the request ctx belongs to.
func RequestID(ctx context.Context) string { return httpkit.RequestID(ctx) }
