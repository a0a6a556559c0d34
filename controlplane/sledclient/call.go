package sledclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/strictjson"
)

// conn is what every version's client needs to reach one agent.
type conn struct {
	sled    uuid.UUID
	addr    string
	hc      *http.Client
	token   TokenFunc
	timeout time.Duration // bounds each call (with the caller's context)
}

// baseURL is the agent's API in one version.
func (c conn) baseURL(version string) string { return "http://" + c.addr + "/" + version }

// editor sets a request's credentials; its type converts to every
// generated client's RequestEditorFn.
type editor = func(ctx context.Context, req *http.Request) error

// call is one call to an agent: what it does, for errors, and the token
// it sends, which no error may hold.
type call struct {
	conn
	what string
	tok  string
}

// answer is an agent's whole answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request through send, with the agent's token, and reads
// its whole answer (bounded in size; the http.Client and ctx bound it in
// time).
func (c conn) do(ctx context.Context, what string, send func(context.Context, editor) (*http.Response, error)) (call, answer, error) {
	cl := call{conn: c, what: what}
	tok, err := c.token(c.addr)
	if err != nil {
		return cl, answer{}, fmt.Errorf("%s: the token of the sled agent at %s: %w", what, c.addr, err)
	}
	if tok == "" {
		return cl, answer{}, fmt.Errorf("%s: the token of the sled agent at %s is empty", what, c.addr)
	}
	cl.tok = tok
	// The client's timeout bounds the call, and so does the caller's
	// context, whichever ends first.
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := send(ctx, httpkit.BearerAuth(tok))
	if err != nil {
		return cl, answer{}, cl.unreachable(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return cl, answer{}, cl.unreachable(ctx, err)
	}
	if len(body) > maxAnswer {
		return cl, answer{}, cl.bad("answered %d with a body larger than %d bytes", resp.StatusCode, maxAnswer)
	}
	return cl, answer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// unreachable is the error of a call that got no (whole) answer. A call
// its caller cancelled is not the agent's fault, and says so.
func (cl call) unreachable(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%s: cancelled before the sled agent at %s answered: %w", cl.what, cl.addr, ctx.Err())
	}
	return fmt.Errorf("%s: %w at %s: %w", cl.what, controlplane.ErrSledUnreachable, cl.addr, err)
}

// bad is the error of an answer outside the agent's contract.
func (cl call) bad(format string, args ...any) error {
	return fmt.Errorf("%s: %w: the agent at %s %s", cl.what, ErrBadAnswer, cl.addr, cl.quote(fmt.Sprintf(format, args...)))
}

// errorBody is the Error schema every version shares.
type errorBody struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

// refusal reads an error answer's code and message ("" when its body is
// not the Error schema).
func refusal(a answer) errorBody {
	var e errorBody
	if json.Unmarshal(a.body, &e) != nil {
		return errorBody{}
	}
	return e
}

// failed is the error of an answer with a status the call did not want.
func (cl call) failed(a answer) error {
	e := refusal(a)
	switch {
	case a.status == http.StatusUnauthorized:
		return fmt.Errorf("%s: the sled agent at %s refused the control plane's token (401)", cl.what, cl.addr)
	case a.status >= 400 && e.ErrorCode != "":
		return fmt.Errorf("%s: the sled agent at %s answered %d %s: %s", cl.what, cl.addr, a.status,
			cl.quote(e.ErrorCode), cl.quote(e.Message))
	}
	return cl.bad("answered %d, which the call does not expect: %q", a.status, snippet(a.body))
}

// decode reads a 2xx answer's JSON body into v: exactly one JSON value,
// declared as JSON.
func (cl call) decode(a answer, v any) error {
	if len(a.body) == 0 {
		return cl.bad("answered %d without a body", a.status)
	}
	mt, _, err := mime.ParseMediaType(a.header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return cl.bad("answered %d with Content-Type %q, not JSON", a.status, a.header.Get("Content-Type"))
	}
	if err := strictjson.Single(a.body); err != nil {
		return cl.bad("answered %d with a body that is not one JSON value: %v", a.status, err)
	}
	if err := json.Unmarshal(a.body, v); err != nil {
		return cl.bad("answered %d with a body that does not decode: %v", a.status, err)
	}
	return nil
}

// quote makes text an agent sent fit for an error: the token is cut out
// (an agent could echo it) and the length bounded.
func (cl call) quote(s string) string {
	if cl.tok != "" {
		s = strings.ReplaceAll(s, cl.tok, "<token>")
	}
	return snippet([]byte(s))
}

// snippet is at most 256 bytes of b, cut on a rune boundary.
func snippet(b []byte) string {
	const max = 256
	if len(b) <= max {
		return string(b)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return string(b[:cut]) + "..."
}

// gone is the error of a VMM the agent does not know.
func (cl call) gone(id uuid.UUID) error {
	return fmt.Errorf("%s: the sled agent at %s knows no VMM %s: %w", cl.what, cl.addr, id, controlplane.ErrVmmGone)
}
