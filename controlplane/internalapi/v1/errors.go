package v1

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// The control plane's own error codes in version 1, beside the skeleton's
// generic ones; stable.
const (
	// CodeNoSuchVmm: a ring for a VMM the control plane does not know.
	CodeNoSuchVmm = "no_such_vmm"
	// CodeUnavailable: the control plane cannot take the request now (its
	// database is unreachable, or its queue of rings is full); the caller
	// tries again later. Answered with 503.
	CodeUnavailable = "unavailable"
)

// Codes lists every error code version 1 answers: the control plane's own
// and the skeleton's.
var Codes = []string{
	httpkit.CodeInvalidRequest, httpkit.CodeUnauthorized, CodeNoSuchVmm, httpkit.CodeNotFound,
	httpkit.CodeMethodNotAllowed, httpkit.CodeBodyTooLarge, httpkit.CodeUnsupportedMedia,
	httpkit.CodeRequestTimeout, httpkit.CodeTooManyConnections, CodeUnavailable, httpkit.CodeInternal,
}

// fieldError is a request the contract's schema lets through but the
// boundary refuses; Field names the field as the validator does
// ("body.address").
type fieldError struct {
	Field, Problem string
}

func (e *fieldError) Error() string { return e.Field + ": " + e.Problem }

// unknownVmm is a ring for a VMM the runtime does not know.
type unknownVmm struct{ err error }

func (e *unknownVmm) Error() string { return e.err.Error() }
func (e *unknownVmm) Unwrap() error { return e.err }

// classify maps the runtime's errors to the contract's statuses and codes.
// Nothing the runtime says reaches the client but through a fixed message:
// a database's address or a query is for the log only.
func classify(err error) *httpkit.Error {
	var fe *fieldError
	var uv *unknownVmm
	var he *httpkit.Error
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &fe):
		return &httpkit.Error{Status: http.StatusBadRequest, Code: httpkit.CodeInvalidRequest, Message: fe.Error()}
	case errors.As(err, &uv):
		return &httpkit.Error{Status: http.StatusNotFound, Code: CodeNoSuchVmm, Message: uv.Error()}
	case errors.Is(err, controlplane.ErrUnavailable):
		return &httpkit.Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			Message: "the control plane cannot take this request now; try again later"}
	}
	return &httpkit.Error{Status: http.StatusInternalServerError, Code: httpkit.CodeInternal, Message: "internal error"}
}

// errorWriter answers an error in the Error schema, and logs what a 5xx
// hides from the client.
func errorWriter(log *slog.Logger) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		e := classify(err)
		if e.Status >= 500 {
			log.LogAttrs(r.Context(), slog.LevelWarn, "internal API request failed",
				slog.String("request_id", httpkit.RequestID(r.Context())), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.Int("status", e.Status), slog.String("error", err.Error()))
		}
		httpkit.WriteError(w, r, e)
	}
}
