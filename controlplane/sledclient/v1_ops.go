package sledclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane"
	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
)

// Register registers and ensures a VMM (PUT /v1/vmms/{id}), from a spec or
// as a migration target. 200 (identical, registered already) and 201 are
// success; a spec refused by the agent (400 invalid_spec,
// unsupported_spec_version) or by the VMM server (409 vmm_refused) wraps
// controlplane.ErrInvalidSpec; 409 insufficient_capacity wraps
// controlplane.ErrNoCapacity. The migration secret appears in no error.
func (s *v1) Register(ctx context.Context, id uuid.UUID, r controlplane.VmmRegistration) error {
	what := fmt.Sprintf("register VMM %s", id)
	props := api.InstanceProperties{Id: r.InstanceID, Name: r.Name}
	if r.Description != "" {
		desc := r.Description
		props.Description = &desc
	}
	var body api.VmmEnsureRequest
	switch {
	case r.Migrate != nil && r.Spec == nil:
		m := r.Migrate
		if err := body.FromVmmEnsureAsMigrationTarget(api.VmmEnsureAsMigrationTarget{Instance: props,
			Migrate: api.VmmMigrationTarget{SrcAddr: m.SourceAddr, MigrationId: m.MigrationID, Secret: m.Secret,
				Resources: api.Resources{Cpus: int32(m.Resources.CPUs), MemoryMib: int64(m.Resources.MemoryMiB)}}}); err != nil {
			return fmt.Errorf("%s: encode the request: %w", what, err)
		}
	case r.Migrate == nil && r.Spec != nil:
		var spec map[string]any
		if err := json.Unmarshal(r.Spec, &spec); err != nil {
			return fmt.Errorf("%s: the spec is not a JSON object: %w: %v", what, controlplane.ErrInvalidSpec, err)
		}
		if err := body.FromVmmEnsureFromSpec(api.VmmEnsureFromSpec{Instance: props,
			Spec: api.SpecEnvelope{SpecVersion: r.SpecVersion, Spec: spec}}); err != nil {
			return fmt.Errorf("%s: encode the request: %w", what, err)
		}
	default:
		return fmt.Errorf("%s: exactly one of a spec and a migration is required", what)
	}
	// The agent answers once the VMM's server has started, which may take
	// longer than a read: the caller's deadline alone bounds it.
	c := s.c
	if dl, ok := ctx.Deadline(); ok {
		c.timeout = time.Until(dl)
	}
	cl, a, err := c.do(ctx, what, func(ctx context.Context, e editor) (*http.Response, error) {
		return s.api.VmmRegister(ctx, id, body, e)
	})
	if err != nil {
		return err
	}
	secret := ""
	if r.Migrate != nil {
		secret = r.Migrate.Secret
	}
	code := refusal(a).ErrorCode
	switch {
	case a.status == http.StatusOK || a.status == http.StatusCreated:
		return nil
	case a.status == http.StatusBadRequest && (code == "invalid_spec" || code == "unsupported_spec_version"),
		a.status == http.StatusConflict && code == "vmm_refused":
		return redact(fmt.Errorf("%w: %w", controlplane.ErrInvalidSpec, cl.failed(a)), secret)
	case a.status == http.StatusConflict && code == "insufficient_capacity":
		return redact(fmt.Errorf("%w: %w", controlplane.ErrNoCapacity, cl.failed(a)), secret)
	}
	return redact(cl.failed(a), secret)
}

// Request asks a VMM to run, stop or reboot (PUT /v1/vmms/{id}/state).
func (s *v1) Request(ctx context.Context, id uuid.UUID, what controlplane.VmmRequest) error {
	var req api.VmmStateRequested
	switch what {
	case controlplane.RequestRun:
		req = api.VmmStateRequestedRun
	case controlplane.RequestStop:
		req = api.VmmStateRequestedStop
	case controlplane.RequestReboot:
		req = api.VmmStateRequestedReboot
	default:
		return fmt.Errorf("ask VMM %s to %q: not a request the control plane makes", id, what)
	}
	return s.putState(ctx, id, fmt.Sprintf("ask VMM %s to %s", id, what), api.VmmStateChangeRequest{Requested: req}, "")
}

// ArmMigrationSource arms a VMM as the source of a migration with the
// given secret (PUT /v1/vmms/{id}/state, migrate_source).
func (s *v1) ArmMigrationSource(ctx context.Context, id, migration uuid.UUID, secret string) error {
	sec := secret
	return s.putState(ctx, id, fmt.Sprintf("arm VMM %s as the source of migration %s", id, migration),
		api.VmmStateChangeRequest{Requested: api.VmmStateRequestedMigrateSource, MigrationId: &migration, Secret: &sec}, secret)
}

// putState sends one state change; secret, when set, is cut from errors.
func (s *v1) putState(ctx context.Context, id uuid.UUID, what string, body api.VmmStateChangeRequest, secret string) error {
	cl, a, err := s.c.do(ctx, what, func(ctx context.Context, e editor) (*http.Response, error) {
		return s.api.VmmStatePut(ctx, id, body, e)
	})
	if err != nil {
		return err
	}
	switch {
	case a.status == http.StatusOK:
		return nil
	case a.status == http.StatusNotFound && refusal(a).ErrorCode == "no_such_vmm":
		return cl.gone(id)
	}
	return redact(cl.failed(a), secret)
}

// redacted is an error whose message has a secret cut out; it unwraps to
// the error it hides, for errors.Is.
type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }

// redact cuts secret out of err's message (an agent could echo it).
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redacted{msg: strings.ReplaceAll(err.Error(), secret, "<secret>"), err: err}
}

// Serial attaches to a VMM's serial console over the agent's WebSocket
// (GET /v1/vmms/{id}/serial). The dial is bounded by ctx and the client's
// timeout; the connection then lives until closed.
func (s *v1) Serial(ctx context.Context, id uuid.UUID) (io.ReadWriteCloser, error) {
	what := fmt.Sprintf("attach to the serial console of VMM %s", id)
	tok, err := s.c.token(s.c.addr)
	if err != nil || tok == "" {
		return nil, fmt.Errorf("%s: the token of the sled agent at %s: unavailable", what, s.c.addr)
	}
	cl := call{conn: s.c, what: what, tok: tok}
	dctx, cancel := context.WithTimeout(ctx, s.c.timeout)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	u := "ws://" + s.c.addr + "/v1/vmms/" + url.PathEscape(id.String()) + "/serial"
	ws, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPHeader: h,
		HTTPClient: &http.Client{Transport: s.c.hc.Transport, CheckRedirect: s.c.hc.CheckRedirect}})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
			resp.Body.Close()
			a := answer{status: resp.StatusCode, header: resp.Header, body: body}
			if a.status == http.StatusNotFound && refusal(a).ErrorCode == "no_such_vmm" {
				return nil, cl.gone(id)
			}
			return nil, cl.failed(a)
		}
		return nil, cl.unreachable(ctx, err)
	}
	ws.SetReadLimit(1 << 20)
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}
