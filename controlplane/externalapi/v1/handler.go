// Package v1 serves version 1 of the control plane's external API (the
// control-plane contract: instances, sagas, sleds and the serial console)
// over controlplane.Operations: it converts the generated wire types to
// the control plane's types and back, and maps the Operations' domain
// errors to the contract's codes. Wire types stop here.
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
	api "github.com/wagglevm/waggle/gen/control-plane/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/oapierr"
)

// OpsTimeout bounds each call into the Operations (but the console's,
// which lives as long as its connection): a database that hangs answers
// 503 unavailable after it, rather than holding the user's request.
const OpsTimeout = 10 * time.Second

// Server implements version 1 of the contract over the Operations.
type Server struct {
	ops     controlplane.Operations
	timeout time.Duration
}

var _ api.StrictServerInterface = (*Server)(nil)

// NewHandler returns the v1 handler (to mount at /v1) behind the
// contract's request validation. log receives what a 5xx answer does not
// tell the client (default slog.Default()).
func NewHandler(ops controlplane.Operations, log *slog.Logger) (http.Handler, error) {
	if ops == nil {
		return nil, errors.New("control-plane v1: no operations")
	}
	if log == nil {
		log = slog.Default()
	}
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load the control-plane v1 contract: %w", err)
	}
	validate, err := httpkit.NewValidator(doc, "/v1")
	if err != nil {
		return nil, err
	}
	bad := func(w http.ResponseWriter, r *http.Request, err error) {
		httpkit.WriteError(w, r, &httpkit.Error{Status: http.StatusBadRequest, Code: httpkit.CodeInvalidRequest, Message: oapierr.Describe(err)})
	}
	strict := api.NewStrictHandlerWithOptions(&Server{ops: ops, timeout: OpsTimeout}, []api.StrictMiddlewareFunc{withRawHTTP},
		api.StrictHTTPServerOptions{RequestErrorHandlerFunc: bad, ResponseErrorHandlerFunc: errorWriter(log)})
	r := chi.NewRouter()
	r.Use(validate)
	return api.HandlerWithOptions(strict, api.ChiServerOptions{BaseRouter: r, ErrorHandlerFunc: bad}), nil
}

// InstanceCreate creates an instance, and answers the saga it began, if
// any.
func (s *Server) InstanceCreate(ctx context.Context, req api.InstanceCreateRequestObject) (api.InstanceCreateResponseObject, error) {
	c, err := CreateFromV1(*req.Body)
	if err != nil {
		return nil, err
	}
	var v controlplane.InstanceView
	var saga *controlplane.SagaView
	err = s.bounded(ctx, func(ctx context.Context) (err error) {
		v, saga, err = s.ops.CreateInstance(ctx, c)
		return err
	})
	if err != nil {
		return nil, &opError{op: "create", ref: c.Name, err: err}
	}
	inst, err := InstanceToV1(v)
	if err != nil {
		return nil, err
	}
	out := api.InstanceCreate201JSONResponse{Instance: inst}
	if saga != nil {
		sg := SagaToV1(*saga)
		out.Saga = &sg
	}
	return out, nil
}

// InstanceList answers a page of the instances, ordered by name, and the
// token of the next page when more may follow: it asks the operations for
// one more than the limit, to know.
func (s *Server) InstanceList(ctx context.Context, req api.InstanceListRequestObject) (api.InstanceListResponseObject, error) {
	limit, err := pageLimit(req.Params.Limit)
	if err != nil {
		return nil, err
	}
	var after string
	if req.Params.PageToken != nil {
		if after, err = decodePageToken(listInstances, *req.Params.PageToken); err != nil {
			return nil, err
		}
	}
	var vs []controlplane.InstanceView
	err = s.bounded(ctx, func(ctx context.Context) (err error) {
		vs, err = s.ops.ListInstancesPage(ctx, after, limit+1)
		return err
	})
	if err != nil {
		return nil, &opError{op: "list", ref: "instances", err: err}
	}
	out := api.InstanceList{Instances: make([]api.Instance, 0, min(len(vs), limit))}
	if len(vs) > limit {
		vs = vs[:limit]
		next := encodePageToken(listInstances, vs[limit-1].Instance.Name)
		out.NextPageToken = &next
	}
	for _, v := range vs {
		inst, err := InstanceToV1(v)
		if err != nil {
			return nil, err
		}
		out.Instances = append(out.Instances, inst)
	}
	return api.InstanceList200JSONResponse(out), nil
}

// InstanceGet answers one instance.
func (s *Server) InstanceGet(ctx context.Context, req api.InstanceGetRequestObject) (api.InstanceGetResponseObject, error) {
	ref, err := ParseRef(req.Instance)
	if err != nil {
		return nil, err
	}
	var v controlplane.InstanceView
	err = s.bounded(ctx, func(ctx context.Context) (err error) {
		v, err = s.ops.GetInstance(ctx, ref)
		return err
	})
	if err != nil {
		return nil, &opError{op: "get", ref: ref, err: err}
	}
	inst, err := InstanceToV1(v)
	if err != nil {
		return nil, err
	}
	return api.InstanceGet200JSONResponse(inst), nil
}

// saga runs one of the operations that begin a saga on an instance.
func (s *Server) saga(ctx context.Context, op, raw string, f func(context.Context, string) (controlplane.SagaView, error)) (api.Saga, error) {
	ref, err := ParseRef(raw)
	if err != nil {
		return api.Saga{}, err
	}
	var sv controlplane.SagaView
	err = s.bounded(ctx, func(ctx context.Context) (err error) {
		sv, err = f(ctx, ref)
		return err
	})
	if err != nil {
		return api.Saga{}, &opError{op: op, ref: ref, err: err}
	}
	return SagaToV1(sv), nil
}

// InstanceStart begins the start saga.
func (s *Server) InstanceStart(ctx context.Context, req api.InstanceStartRequestObject) (api.InstanceStartResponseObject, error) {
	sg, err := s.saga(ctx, "start", req.Instance, s.ops.StartInstance)
	if err != nil {
		return nil, err
	}
	return api.InstanceStart202JSONResponse(sg), nil
}

// InstanceStop begins the stop saga.
func (s *Server) InstanceStop(ctx context.Context, req api.InstanceStopRequestObject) (api.InstanceStopResponseObject, error) {
	sg, err := s.saga(ctx, "stop", req.Instance, s.ops.StopInstance)
	if err != nil {
		return nil, err
	}
	return api.InstanceStop202JSONResponse(sg), nil
}

// InstanceReboot begins the reboot saga.
func (s *Server) InstanceReboot(ctx context.Context, req api.InstanceRebootRequestObject) (api.InstanceRebootResponseObject, error) {
	sg, err := s.saga(ctx, "reboot", req.Instance, s.ops.RebootInstance)
	if err != nil {
		return nil, err
	}
	return api.InstanceReboot202JSONResponse(sg), nil
}

// InstanceDelete begins the delete saga.
func (s *Server) InstanceDelete(ctx context.Context, req api.InstanceDeleteRequestObject) (api.InstanceDeleteResponseObject, error) {
	sg, err := s.saga(ctx, "delete", req.Instance, s.ops.DeleteInstance)
	if err != nil {
		return nil, err
	}
	return api.InstanceDelete202JSONResponse(sg), nil
}

// InstanceMigrate begins the migrate saga. A not-found with a target
// named is the sled's when the instance exists.
func (s *Server) InstanceMigrate(ctx context.Context, req api.InstanceMigrateRequestObject) (api.InstanceMigrateResponseObject, error) {
	var target uuid.NullUUID
	if req.Body != nil && req.Body.TargetSled != nil {
		if *req.Body.TargetSled == uuid.Nil {
			return nil, &fieldError{Field: "body.target_sled", Problem: "the nil UUID is no sled; leave it out to let the control plane choose"}
		}
		target = uuid.NullUUID{UUID: *req.Body.TargetSled, Valid: true}
	}
	sg, err := s.saga(ctx, "migrate", req.Instance, func(ctx context.Context, ref string) (controlplane.SagaView, error) {
		return s.ops.MigrateInstance(ctx, ref, target)
	})
	if err != nil && target.Valid && errors.Is(err, controlplane.ErrNotFound) {
		ref, _ := ParseRef(req.Instance)
		if gerr := s.bounded(ctx, func(ctx context.Context) error {
			_, err := s.ops.GetInstance(ctx, ref)
			return err
		}); gerr == nil {
			return nil, &opError{op: "migrate", subject: subjectSled, ref: target.UUID.String(), err: err}
		}
	}
	if err != nil {
		return nil, err
	}
	return api.InstanceMigrate202JSONResponse(sg), nil
}

// SagaGet answers a saga's progress.
func (s *Server) SagaGet(ctx context.Context, req api.SagaGetRequestObject) (api.SagaGetResponseObject, error) {
	var sv controlplane.SagaView
	err := s.bounded(ctx, func(ctx context.Context) (err error) {
		sv, err = s.ops.Saga(ctx, req.SagaId)
		return err
	})
	if err != nil {
		return nil, &opError{op: "get saga", subject: subjectSaga, ref: req.SagaId.String(), err: err}
	}
	if !api.SagaKind(sv.Kind).Valid() {
		// A kind this version cannot name (a later control plane's): the
		// saga is not this version's to show.
		return nil, &opError{op: "get saga", subject: subjectSaga, ref: req.SagaId.String(), err: controlplane.ErrNotFound}
	}
	return api.SagaGet200JSONResponse(SagaToV1(sv)), nil
}

// SledList answers a page of the sleds, ordered by id, and the token of
// the next page when more may follow (as InstanceList).
func (s *Server) SledList(ctx context.Context, req api.SledListRequestObject) (api.SledListResponseObject, error) {
	limit, err := pageLimit(req.Params.Limit)
	if err != nil {
		return nil, err
	}
	var after uuid.NullUUID
	if req.Params.PageToken != nil {
		key, err := decodePageToken(listSleds, *req.Params.PageToken)
		if err != nil {
			return nil, err
		}
		after = uuid.NullUUID{UUID: uuid.MustParse(key), Valid: true} // decodePageToken checked it
	}
	var vs []controlplane.SledView
	err = s.bounded(ctx, func(ctx context.Context) (err error) {
		vs, err = s.ops.ListSledsPage(ctx, after, limit+1)
		return err
	})
	if err != nil {
		return nil, &opError{op: "list", ref: "sleds", err: err}
	}
	out := api.SledList{Sleds: make([]api.Sled, 0, min(len(vs), limit))}
	if len(vs) > limit {
		vs = vs[:limit]
		next := encodePageToken(listSleds, vs[limit-1].Sled.ID.String())
		out.NextPageToken = &next
	}
	for _, v := range vs {
		out.Sleds = append(out.Sleds, SledToV1(v))
	}
	return api.SledList200JSONResponse(out), nil
}

// bounded runs f under the operations' timeout. When that timeout (not the
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
