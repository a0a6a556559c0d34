package v1

import (
	"errors"
	"net/http"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/spec"
)

// The agent's error codes, beside the skeleton's generic ones; stable, and
// listed in the contract's description.
const (
	CodeInvalidSpec            = "invalid_spec"
	CodeUnsupportedSpecVersion = "unsupported_spec_version"
	CodeNoSuchVmm              = "no_such_vmm"
	CodeVmmExists              = "vmm_exists"
	CodeVmmNotTerminal         = "vmm_not_terminal"
	CodeInsufficientCapacity   = "insufficient_capacity"
	CodeNoFreePort             = "no_free_port"
	CodeVmmUnavailable         = "vmm_unavailable"
)

// classify maps the agent's domain errors to statuses and codes.
func classify(err error) *httpkit.Error {
	return httpkit.Classify(err, classifyDomain)
}

func classifyDomain(err error) *httpkit.Error {
	var fe *sledagent.FieldError
	var ce *sledagent.CapacityError
	var re *sledagent.RefusedError
	var ve *spec.ValidationError
	var uv *unsupportedVersion
	var is *invalidSpec
	e := func(status int, code string) *httpkit.Error {
		return &httpkit.Error{Status: status, Code: code, Message: err.Error()}
	}
	switch {
	case errors.As(err, &fe):
		return e(http.StatusBadRequest, httpkit.CodeInvalidRequest)
	case errors.As(err, &uv):
		return e(http.StatusBadRequest, CodeUnsupportedSpecVersion)
	case errors.As(err, &ve), errors.As(err, &is):
		return e(http.StatusBadRequest, CodeInvalidSpec)
	case errors.As(err, &ce):
		return e(http.StatusConflict, CodeInsufficientCapacity)
	case errors.As(err, &re):
		switch re.Status {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict:
			return &httpkit.Error{Status: re.Status, Code: re.Code, Message: err.Error()}
		case http.StatusTooManyRequests, http.StatusUnprocessableEntity:
			return &httpkit.Error{Status: http.StatusConflict, Code: re.Code, Message: err.Error()}
		}
		if re.Status >= 400 && re.Status < 500 {
			return &httpkit.Error{Status: http.StatusBadRequest, Code: re.Code, Message: err.Error()}
		}
		return e(http.StatusServiceUnavailable, CodeVmmUnavailable)
	case errors.Is(err, sledagent.ErrNoSuchVmm):
		return e(http.StatusNotFound, CodeNoSuchVmm)
	case errors.Is(err, sledagent.ErrVmmExists):
		return e(http.StatusConflict, CodeVmmExists)
	case errors.Is(err, sledagent.ErrNotTerminal):
		return e(http.StatusConflict, CodeVmmNotTerminal)
	case errors.Is(err, sledagent.ErrNoFreePort):
		return e(http.StatusConflict, CodeNoFreePort)
	case errors.Is(err, sledagent.ErrVMMUnavailable), errors.Is(err, sledagent.ErrClosed), errors.Is(err, sledagent.ErrTokenRefused):
		return e(http.StatusServiceUnavailable, CodeVmmUnavailable)
	}
	return nil
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	httpkit.WriteError(w, r, classify(err))
}
