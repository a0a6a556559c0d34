// Package v1 serves version 1 of the control-plane-internal contract (the
// doorbell and the sleds' registration) over the control plane's runtime:
// it converts the generated wire types to domain types and maps the
// runtime's errors to the contract's codes. Wire types stop here.
package v1

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/control-plane-internal/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/oapierr"
)

// Runtime is what version 1 asks of the control plane's runtime
// (*controlplane.ControlPlane). Its errors: controlplane.ErrNotFound (a
// ring for an unknown VMM), controlplane.ErrUnavailable (try again later).
type Runtime interface {
	// Ring queues a pull of the VMM's state from its sled and returns at
	// once.
	Ring(ctx context.Context, vmmID uuid.UUID) error
	// RegisterSled stores a sled's registration.
	RegisterSled(ctx context.Context, s model.Sled) error
}

// RuntimeTimeout bounds each call into the runtime: a database that hangs
// answers 503 unavailable after it, rather than holding the agent's
// request.
const RuntimeTimeout = 5 * time.Second

// Server implements version 1 of the contract over a Runtime.
type Server struct {
	rt      Runtime
	timeout time.Duration
}

var _ api.StrictServerInterface = (*Server)(nil)

// NewHandler returns the v1 handler (to mount at /v1) behind the
// contract's request validation. log receives what a 5xx answer does not
// tell the client (default slog.Default()).
func NewHandler(rt Runtime, log *slog.Logger) (http.Handler, error) {
	if rt == nil {
		return nil, errors.New("control-plane-internal v1: no runtime")
	}
	if log == nil {
		log = slog.Default()
	}
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load the control-plane-internal v1 contract: %w", err)
	}
	validate, err := httpkit.NewValidator(doc, "/v1")
	if err != nil {
		return nil, err
	}
	bad := func(w http.ResponseWriter, r *http.Request, err error) {
		httpkit.WriteError(w, r, &httpkit.Error{Status: http.StatusBadRequest, Code: httpkit.CodeInvalidRequest, Message: oapierr.Describe(err)})
	}
	strict := api.NewStrictHandlerWithOptions(&Server{rt: rt, timeout: RuntimeTimeout}, nil, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc:  bad,
		ResponseErrorHandlerFunc: errorWriter(log),
	})
	r := chi.NewRouter()
	r.Use(validate)
	return api.HandlerWithOptions(strict, api.ChiServerOptions{BaseRouter: r, ErrorHandlerFunc: bad}), nil
}

// VmmChanged is the doorbell: it queues a pull of the VMM's state and
// answers 202, never waiting for the pull.
func (s *Server) VmmChanged(ctx context.Context, req api.VmmChangedRequestObject) (api.VmmChangedResponseObject, error) {
	err := s.bounded(ctx, func(ctx context.Context) error { return s.rt.Ring(ctx, req.VmmId) })
	switch {
	case err == nil:
		return api.VmmChanged202Response{}, nil
	case errors.Is(err, controlplane.ErrNotFound):
		return nil, &unknownVmm{fmt.Errorf("the control plane knows no VMM %s", req.VmmId)}
	}
	return nil, fmt.Errorf("ring the doorbell of VMM %s: %w", req.VmmId, err)
}

// SledRegister stores a sled's registration.
func (s *Server) SledRegister(ctx context.Context, req api.SledRegisterRequestObject) (api.SledRegisterResponseObject, error) {
	sled, err := SledFromV1(req.SledId, *req.Body)
	if err != nil {
		return nil, err
	}
	if err := s.bounded(ctx, func(ctx context.Context) error { return s.rt.RegisterSled(ctx, sled) }); err != nil {
		return nil, fmt.Errorf("register sled %s: %w", req.SledId, err)
	}
	return api.SledRegister204Response{}, nil
}

// bounded runs f under the runtime timeout. When that timeout (not the
// client's going away) ends it, the error is controlplane.ErrUnavailable.
func (s *Server) bounded(ctx context.Context, f func(context.Context) error) error {
	if s.timeout <= 0 {
		return f(ctx)
	}
	inner, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := f(inner)
	if err != nil && ctx.Err() == nil && errors.Is(inner.Err(), context.DeadlineExceeded) && !errors.Is(err, controlplane.ErrUnavailable) {
		return fmt.Errorf("no answer within %s: %w: %w", s.timeout, controlplane.ErrUnavailable, err)
	}
	return err
}
