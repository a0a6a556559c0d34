package main

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Error codes of the contract (every version) that the CLI explains in its own words.
const (
	codeNoInstance        = "no_instance"
	codeInstanceExists    = "instance_exists"
	codeInvalidTransition = "invalid_transition"
	codeUnauthorized      = "unauthorized"
	codeNotExpressible    = "not_expressible"
	codeEnsureInProgress  = "ensure_in_progress"
	codeTooManyConsoles   = "too_many_consoles"
)

// apiError is an error answer of a server, as the CLI shows it: what went
// wrong and what to do, in terms of CLI commands (the server's messages
// are written for API users and may name HTTP routes), then the status,
// code and request id for whoever reads the server's log.
type apiError struct {
	Server    string // host:port of the server that answered
	Status    int
	Code      string // the contract's error_code; "" when the body was not an Error
	Message   string // the server's message, or its body
	RequestID string
	// Text replaces Message when set; Hint follows it.
	Text, Hint string
}

func (e *apiError) Error() string {
	var b strings.Builder
	if e.Text != "" {
		b.WriteString(e.Text)
	} else {
		b.WriteString(e.Message)
	}
	if e.Hint != "" {
		b.WriteString("; " + e.Hint)
	}
	if e.Code == "" {
		fmt.Fprintf(&b, " (the server at %s answered %d)", e.Server, e.Status)
		return b.String()
	}
	fmt.Fprintf(&b, " (%d %s", e.Status, e.Code)
	if e.RequestID != "" {
		fmt.Fprintf(&b, ", request %s", e.RequestID)
	}
	b.WriteString(")")
	return b.String()
}

// apiErr turns a non-2xx answer of the server at server into an apiError
// with the CLI's own words for the codes it knows.
func apiErr(server string, status int, body []byte) *apiError {
	e := &apiError{Server: server, Status: status}
	var eb struct {
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(body, &eb) != nil || eb.ErrorCode == "" {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "..."
		}
		if e.Message == "" {
			e.Message = "no answer body"
		}
		return e
	}
	e.Code, e.Message, e.RequestID = eb.ErrorCode, eb.Message, eb.RequestID
	switch e.Code {
	case codeNoInstance:
		e.Text = fmt.Sprintf("the server at %s has no VM", server)
		e.Hint = "create one with `waggle vm create -config FILE` (or -spec FILE)"
	case codeInstanceExists:
		e.Text = fmt.Sprintf("the server at %s already has a different VM", server)
		e.Hint = "it holds one VM at a time: stop that one first with `waggle vm stop`"
	case codeInvalidTransition:
		e.Hint = "`waggle vm get` shows its state"
	case codeUnauthorized:
		e.Text = fmt.Sprintf("the server at %s refused the CLI's token", server)
		e.Hint = "the CLI sends the token in -token-file, else the one the server wrote at start " +
			"(waggle/tokens/HOST_PORT under $XDG_STATE_HOME or ~/.local/state); for a server started with " +
			"--auth-token-file FILE, give the CLI `-token-file FILE`"
	case codeEnsureInProgress:
		e.Hint = "another create is still under way at that server; see how it went with `waggle vm get`"
	case codeTooManyConsoles:
		e.Hint = "detach another `waggle vm serial`, or read what the guest printed with `waggle vm serial -history`"
	case codeNotExpressible:
		e.Hint = "the API version spoken cannot say this VM; without -api the CLI speaks the newest version the server serves"
	}
	return e
}
