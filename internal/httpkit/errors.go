// Package httpkit is the HTTP skeleton every waggle API server stands on:
// the Error schema and its generic codes, request ids, the access log,
// request body limits and deadlines, contract-driven request validation,
// bearer-token authentication, and an http.Server with timeouts, a
// connection limit and a bounded shutdown.
//
// It names no API and no version. A server builds one handler per contract
// version (each behind NewValidator), hands them to NewHandler with the
// prefix each is mounted at, and serves the result with NewServer. Domain
// errors stay with the server: it maps them to an *Error with its own
// Classifier and answers them with WriteError.
package httpkit

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
)

// Generic error codes: the ones the skeleton itself answers. Servers add
// their own domain codes beside these. Each contract lists the codes it
// may answer.
const (
	CodeInvalidRequest     = "invalid_request"
	CodeNotFound           = "not_found"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeBodyTooLarge       = "body_too_large"
	CodeUnsupportedMedia   = "unsupported_media_type"
	CodeUnauthorized       = "unauthorized"
	CodeRequestTimeout     = "request_timeout"
	CodeTooManyConnections = "too_many_connections"
	CodeInternal           = "internal"
)

// Error is an error with the HTTP status and the stable code it is
// answered with. Message is for people and names the field at fault.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: sprintf(format, args...)}
}

// ErrorBody is the Error schema every contract shares:
// {error_code, message, request_id}.
type ErrorBody struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// Classifier maps a server's domain errors to an *Error. It returns nil
// for an error it does not know.
type Classifier func(error) *Error

// Classify returns the *Error err is answered with: err itself when it is
// (or wraps) an *Error; 413 for a body over its limit; else what domain
// says; else 500 internal.
func Classify(err error, domain Classifier) *Error {
	var e *Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &mbe):
		return Errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
			"request body is larger than %s", byteSize(mbe.Limit))
	}
	if domain != nil {
		if e := domain(err); e != nil {
			return e
		}
	}
	return &Error{http.StatusInternalServerError, CodeInternal, err.Error()}
}

// BodyReadError returns the answer to a failure to read a request body:
// 413 when it is over its limit, 408 when the client did not send it in
// time (HandlerOptions.BodyReadTimeout), else 400.
func BodyReadError(err error) *Error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return Classify(err, nil)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{http.StatusRequestTimeout, CodeRequestTimeout, "request body: not received in time"}
	}
	return &Error{http.StatusBadRequest, CodeInvalidRequest, "request body: " + err.Error()}
}

// WriteError answers e as the Error schema, with the request's id. A 401
// carries WWW-Authenticate: Bearer, and a 405 the Allow header that the
// caller has set.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.Status == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
		h.Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(ErrorBody{ErrorCode: e.Code, Message: e.Message, RequestID: RequestID(r.Context())})
}
