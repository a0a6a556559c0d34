package v1

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// The control plane's own error codes in version 1, beside the skeleton's
// generic ones; stable, and listed in the contract's description.
const (
	// CodeInvalidSpec: the spec does not decode or validate in its version
	// (400; the message names the field).
	CodeInvalidSpec = "invalid_spec"
	// CodeNotUpgraded: the console was asked without a WebSocket upgrade.
	CodeNotUpgraded = "not_upgraded"
	// CodeNoSuchInstance: no instance has that id or name (404).
	CodeNoSuchInstance = "no_such_instance"
	// CodeNoSuchSaga: no saga has that id (404).
	CodeNoSuchSaga = "no_such_saga"
	// CodeNoSuchSled: a migration's target is no sled of the fleet (404).
	CodeNoSuchSled = "no_such_sled"
	// CodeNameInUse: another instance has the name (409).
	CodeNameInUse = "name_in_use"
	// CodeInstanceBusy: another saga acts on the instance (409).
	CodeInstanceBusy = "instance_busy"
	// CodeInvalidState: the instance's state does not allow the operation
	// (409).
	CodeInvalidState = "invalid_state"
	// CodeInsufficientCapacity: no sled (or not the one named) has room
	// (409: the fleet as it is now stands in the way, as for the sled
	// agent's code of the same name; not 507, which is WebDAV's storage).
	CodeInsufficientCapacity = "insufficient_capacity"
	// CodeSameSled: a migration to the sled the instance runs on (409).
	CodeSameSled = "same_sled"
	// CodeUnavailable: the control plane's database is away (503).
	CodeUnavailable = "unavailable"
	// CodeSledUnavailable: the sled agent of the instance's VMM does not
	// answer (503).
	CodeSledUnavailable = "sled_unavailable"
)

// Codes lists every error code version 1 answers: the control plane's own
// and the skeleton's. The set is closed; the contract lists it.
var Codes = []string{
	httpkit.CodeInvalidRequest, CodeInvalidSpec, CodeNotUpgraded, httpkit.CodeUnauthorized,
	CodeNoSuchInstance, CodeNoSuchSaga, CodeNoSuchSled, httpkit.CodeNotFound,
	CodeNameInUse, CodeInstanceBusy, CodeInvalidState, CodeInsufficientCapacity, CodeSameSled,
	httpkit.CodeMethodNotAllowed, httpkit.CodeBodyTooLarge, httpkit.CodeUnsupportedMedia,
	httpkit.CodeRequestTimeout, httpkit.CodeTooManyConnections, CodeUnavailable, CodeSledUnavailable,
	httpkit.CodeInternal,
}

// fieldError is a request the contract's schema lets through but the
// boundary refuses; Field names the field as the validator does
// ("body.name", "path instance").
type fieldError struct {
	Field, Problem string
}

func (e *fieldError) Error() string { return e.Field + ": " + e.Problem }

// subject is what an operation's not-found names.
type subject int

const (
	subjectInstance subject = iota
	subjectSaga
	subjectSled
)

// opError is an error of an Operations call, with what the call was about:
// classify words its answer from them.
type opError struct {
	op      string  // "start", "create", ... for messages
	subject subject // what a controlplane.ErrNotFound means
	ref     string  // the instance's id or name, the saga's or the sled's id
	err     error
}

func (e *opError) Error() string { return e.op + " " + e.ref + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

// classify maps every error a handler returns to its status, code and
// message: the one place where the Operations' domain errors meet the
// contract's codes. A 4xx message may carry the domain error's words (they
// name the field, the state, what is free); a 5xx never carries any of the
// control plane's words.
func classify(err error) *httpkit.Error {
	var he *httpkit.Error
	var fe *fieldError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &mbe):
		return httpkit.Classify(mbe, nil)
	case errors.As(err, &fe):
		return &httpkit.Error{Status: http.StatusBadRequest, Code: httpkit.CodeInvalidRequest, Message: fe.Error()}
	}
	var op opError
	var oe *opError
	if errors.As(err, &oe) {
		op = *oe
	}
	e := func(status int, code, format string, args ...any) *httpkit.Error {
		return &httpkit.Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
	}
	inst := "instance " + op.ref
	switch {
	case errors.Is(err, controlplane.ErrUnavailable):
		return e(http.StatusServiceUnavailable, CodeUnavailable, "the control plane cannot take this request now; try again later")
	case errors.Is(err, controlplane.ErrSledUnreachable):
		return e(http.StatusServiceUnavailable, CodeSledUnavailable,
			"the sled agent of %s's VMM does not answer; try again later", inst)
	case errors.Is(err, controlplane.ErrInvalidSpec):
		return e(http.StatusBadRequest, CodeInvalidSpec, "%s", errText(err))
	case errors.Is(err, controlplane.ErrNameInUse):
		return e(http.StatusConflict, CodeNameInUse, "another instance is named %s; choose another name", op.ref)
	case errors.Is(err, controlplane.ErrInstanceBusy), errors.Is(err, controlplane.ErrConflict):
		return e(http.StatusConflict, CodeInstanceBusy,
			"another operation on %s is under way; wait for it to end and try again", inst)
	case errors.Is(err, controlplane.ErrSameSled):
		return e(http.StatusConflict, CodeSameSled, "%s runs on that sled already; name another, or none for any other", inst)
	case errors.Is(err, controlplane.ErrNoCapacity):
		return e(http.StatusConflict, CodeInsufficientCapacity, "%s", errText(err))
	case errors.Is(err, controlplane.ErrInvalidState):
		return e(http.StatusConflict, CodeInvalidState, "%s", errText(err))
	case errors.Is(err, controlplane.ErrVmmGone):
		return e(http.StatusConflict, CodeInvalidState, "%s has no VMM on its sled any more; its state will show it shortly", inst)
	case errors.Is(err, controlplane.ErrNotFound):
		switch op.subject {
		case subjectSaga:
			return e(http.StatusNotFound, CodeNoSuchSaga, "no saga has the id %s", op.ref)
		case subjectSled:
			return e(http.StatusNotFound, CodeNoSuchSled, "no sled of the fleet has the id %s", op.ref)
		}
		return e(http.StatusNotFound, CodeNoSuchInstance, "no instance has the id or name %s", op.ref)
	}
	return e(http.StatusInternalServerError, httpkit.CodeInternal, "internal error")
}

// errText is the message of a 4xx the domain error words itself.
func errText(err error) string {
	const most = 1024
	s := err.Error()
	if len(s) > most {
		s = s[:most] + "..."
	}
	return s
}

// errorWriter answers an error in the Error schema, and logs what a 5xx
// hides from the client.
func errorWriter(log *slog.Logger) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		e := classify(err)
		if e.Status >= 500 {
			log.LogAttrs(r.Context(), slog.LevelWarn, "external API request failed",
				slog.String("request_id", httpkit.RequestID(r.Context())), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.Int("status", e.Status), slog.String("error", err.Error()))
		}
		httpkit.WriteError(w, r, e)
	}
}
