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
	// CodeVmmRefused: the VMM's server refused the request (its state does
	// not allow it, this host cannot build the VM, no console slot is
	// free...); the message carries the server's own code and message.
	CodeVmmRefused = "vmm_refused"
)

// AgentCodes lists every error code version 1 answers: the agent's own
// and the skeleton's. The set is closed (the contract lists it); the VMM
// servers' codes are never answered as codes.
var AgentCodes = []string{
	httpkit.CodeInvalidRequest, CodeInvalidSpec, CodeUnsupportedSpecVersion, CodeNotUpgraded, httpkit.CodeUnauthorized,
	CodeNoSuchVmm, CodeVmmExists, CodeVmmNotTerminal, CodeInsufficientCapacity, CodeNoFreePort, CodeVmmRefused,
	CodeVmmUnavailable, httpkit.CodeNotFound, httpkit.CodeMethodNotAllowed, httpkit.CodeBodyTooLarge,
	httpkit.CodeUnsupportedMedia, httpkit.CodeRequestTimeout, httpkit.CodeTooManyConnections, httpkit.CodeInternal,
}

// protocolCodes are VMM server refusals that no caller of the agent can
// cause: the agent and its VMM server disagree (a path, a method, a body),
// or the server no longer takes the agent's token. They answer 502.
var protocolCodes = map[string]bool{
	httpkit.CodeNotFound: true, httpkit.CodeMethodNotAllowed: true, httpkit.CodeUnsupportedMedia: true,
	httpkit.CodeBodyTooLarge: true, httpkit.CodeRequestTimeout: true, httpkit.CodeUnauthorized: true,
}

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
		// The VMM server's codes are its own contract, not the agent's:
		// they are named in the message, never answered as codes.
		if re.Status >= 400 && re.Status < 500 && re.Status != http.StatusUnauthorized && !protocolCodes[re.Code] {
			return e(http.StatusConflict, CodeVmmRefused)
		}
		return e(http.StatusBadGateway, CodeVmmUnavailable)
	case errors.Is(err, sledagent.ErrTokenRefused):
		return e(http.StatusBadGateway, CodeVmmUnavailable)
	case errors.Is(err, sledagent.ErrNoSuchVmm):
		return e(http.StatusNotFound, CodeNoSuchVmm)
	case errors.Is(err, sledagent.ErrVmmExists):
		return e(http.StatusConflict, CodeVmmExists)
	case errors.Is(err, sledagent.ErrNotTerminal):
		return e(http.StatusConflict, CodeVmmNotTerminal)
	case errors.Is(err, sledagent.ErrNoFreePort):
		return e(http.StatusConflict, CodeNoFreePort)
	case errors.Is(err, sledagent.ErrVMMUnavailable), errors.Is(err, sledagent.ErrClosed):
		return e(http.StatusServiceUnavailable, CodeVmmUnavailable)
	}
	return nil
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	httpkit.WriteError(w, r, classify(err))
}
