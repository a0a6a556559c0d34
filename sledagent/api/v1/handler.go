// Package v1 serves version 1 of the sled-agent contract over a
// sledagent.Agent: it converts the generated wire types to the agent's
// domain types and back, and maps domain errors to the contract's codes.
// Wire types stop here.
package v1

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
	vmmapi "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/oapierr"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/versions"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
)

// Server implements version 1 of the contract over an agent.
type Server struct {
	a *sledagent.Agent
}

var _ api.StrictServerInterface = (*Server)(nil)

// NewHandler returns the v1 handler (to mount at /v1) behind the
// contract's request validation.
func NewHandler(a *sledagent.Agent) (http.Handler, error) {
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load the sled-agent v1 contract: %w", err)
	}
	validate, err := httpkit.NewValidator(doc, "/v1")
	if err != nil {
		return nil, err
	}
	bad := func(w http.ResponseWriter, r *http.Request, err error) {
		httpkit.WriteError(w, r, &httpkit.Error{Status: http.StatusBadRequest, Code: httpkit.CodeInvalidRequest, Message: oapierr.Describe(err)})
	}
	strict := api.NewStrictHandlerWithOptions(&Server{a: a}, []api.StrictMiddlewareFunc{withRawHTTP}, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc:  bad,
		ResponseErrorHandlerFunc: writeError,
	})
	r := chi.NewRouter()
	r.Use(validate)
	return api.HandlerWithOptions(strict, api.ChiServerOptions{BaseRouter: r, ErrorHandlerFunc: bad}), nil
}

func (s *Server) InventoryGet(ctx context.Context, _ api.InventoryGetRequestObject) (api.InventoryGetResponseObject, error) {
	inv := s.a.Inventory()
	amt := func(a sledagent.Amount) api.Capacity {
		return api.Capacity{Total: int64(a.Total), Reserved: int64(a.Reserved), Free: int64(a.Free)}
	}
	return api.InventoryGet200JSONResponse{SledId: inv.SledID, Cpus: amt(inv.CPUs), MemoryMib: amt(inv.MemoryMiB), Vmms: int32(inv.VMMs)}, nil
}

func (s *Server) VmmList(ctx context.Context, _ api.VmmListRequestObject) (api.VmmListResponseObject, error) {
	out := api.VmmList{Vmms: []api.Vmm{}}
	for _, v := range s.a.List() {
		out.Vmms = append(out.Vmms, vmmToV1(v))
	}
	return api.VmmList200JSONResponse(out), nil
}

func (s *Server) VmmGet(ctx context.Context, req api.VmmGetRequestObject) (api.VmmGetResponseObject, error) {
	v, err := s.a.Get(req.VmmId)
	if err != nil {
		return nil, err
	}
	return api.VmmGet200JSONResponse(vmmToV1(v)), nil
}

func (s *Server) VmmStateGet(ctx context.Context, req api.VmmStateGetRequestObject) (api.VmmStateGetResponseObject, error) {
	st, err := s.a.State(req.VmmId)
	if err != nil {
		return nil, err
	}
	return api.VmmStateGet200JSONResponse(StateToV1(st)), nil
}

func (s *Server) VmmUnregister(ctx context.Context, req api.VmmUnregisterRequestObject) (api.VmmUnregisterResponseObject, error) {
	force := req.Params.Force != nil && *req.Params.Force
	if err := s.a.Unregister(ctx, req.VmmId, force); err != nil {
		return nil, err
	}
	return api.VmmUnregister204Response{}, nil
}

func (s *Server) VmmRegister(ctx context.Context, req api.VmmRegisterRequestObject) (api.VmmRegisterResponseObject, error) {
	er, err := EnsureFromV1(*req.Body)
	if err != nil {
		return nil, err
	}
	v, created, err := s.a.Ensure(ctx, req.VmmId, er)
	if err != nil {
		return nil, err
	}
	if created {
		return api.VmmRegister201JSONResponse(vmmToV1(v)), nil
	}
	return api.VmmRegister200JSONResponse(vmmToV1(v)), nil
}

func (s *Server) VmmStatePut(ctx context.Context, req api.VmmStatePutRequestObject) (api.VmmStatePutResponseObject, error) {
	b := req.Body
	if b.Requested != api.VmmStateRequestedMigrateSource {
		// In the contract's order, so that the message names the same
		// field every time.
		for _, f := range []struct {
			name  string
			given bool
		}{{"migration_id", b.MigrationId != nil}, {"secret", b.Secret != nil}, {"ttl_seconds", b.TtlSeconds != nil}} {
			if f.given {
				return nil, &sledagent.FieldError{Field: "body." + f.name, Problem: "goes only with requested migrate_source"}
			}
		}
		st, err := s.a.Request(ctx, req.VmmId, sledagent.Requested(b.Requested))
		if err != nil {
			return nil, err
		}
		return api.VmmStatePut200JSONResponse{State: StateToV1(st)}, nil
	}
	if b.MigrationId == nil {
		return nil, &sledagent.FieldError{Field: "body.migration_id", Problem: "is required with requested migrate_source"}
	}
	arm := sledagent.MigrationArm{MigrationID: *b.MigrationId}
	if b.Secret != nil {
		arm.Secret = *b.Secret
	}
	if b.TtlSeconds != nil {
		arm.TTL = time.Duration(*b.TtlSeconds) * time.Second
	}
	st, armed, err := s.a.Arm(ctx, req.VmmId, arm)
	if err != nil {
		return nil, err
	}
	out := &api.MigrationArmed{MigrationId: armed.MigrationID, ExpiresAt: armed.ExpiresAt}
	if armed.Secret != "" {
		secret := armed.Secret
		out.Secret = &secret
	}
	return api.VmmStatePut200JSONResponse{State: StateToV1(st), Migration: out}, nil
}

func (s *Server) VmmSerialHistoryGet(ctx context.Context, req api.VmmSerialHistoryGetRequestObject) (api.VmmSerialHistoryGetResponseObject, error) {
	p := req.Params
	if p.FromStart != nil && p.MostRecent != nil {
		return nil, &sledagent.FieldError{Field: "query from_start", Problem: "not together with most_recent"}
	}
	var q sledagent.SerialQuery
	if p.FromStart != nil {
		n := uint64(*p.FromStart)
		q.FromStart = &n
	}
	if p.MostRecent != nil {
		n := uint64(*p.MostRecent)
		q.MostRecent = &n
	}
	if p.MaxBytes != nil {
		n := uint32(*p.MaxBytes)
		q.MaxBytes = &n
	}
	c, err := s.a.Serial(ctx, req.VmmId, q)
	if err != nil {
		return nil, err
	}
	data := c.Data
	if data == nil {
		data = []byte{}
	}
	return api.VmmSerialHistoryGet200JSONResponse{Data: data, Start: int64(c.Start), End: int64(c.End)}, nil
}

// EnsureFromV1 converts a v1 registration into the agent's request: the
// spec is taken out of its envelope and checked against its version; the
// replacements of a migration target are checked against the VMM server's
// spec version. Its fingerprint identifies the request for idempotency
// (the secret enters it only hashed).
func EnsureFromV1(body api.VmmEnsureRequest) (sledagent.EnsureRequest, error) {
	var out sledagent.EnsureRequest
	raw, err := body.MarshalJSON()
	if err != nil {
		return out, err
	}
	var probe struct {
		Spec    json.RawMessage `json:"spec"`
		Migrate json.RawMessage `json:"migrate"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return out, &sledagent.FieldError{Field: "body", Problem: err.Error()}
	}
	h := sha256.New()
	switch {
	case len(probe.Spec) > 0 && len(probe.Migrate) == 0:
		b, err := body.AsVmmEnsureFromSpec()
		if err != nil {
			return out, &sledagent.FieldError{Field: "body", Problem: err.Error()}
		}
		out.Properties = propsFromV1(b.Instance)
		sp, ok := versions.Lookup(b.Spec.SpecVersion)
		if !ok {
			return out, &unsupportedVersion{b.Spec.SpecVersion}
		}
		inner, err := json.Marshal(b.Spec.Spec)
		if err != nil {
			return out, err
		}
		s, err := sp.Decode(inner)
		if err != nil {
			return out, &invalidSpec{fmt.Errorf("body.spec.spec (%s): %w", sp.Name, err)}
		}
		canon, err := sp.Encode(s)
		if err != nil {
			return out, &invalidSpec{fmt.Errorf("body.spec.spec (%s): %w", sp.Name, err)}
		}
		out.Spec = &s
		out.Resources = sledagent.ResourcesOf(s)
		fmt.Fprintf(h, "spec\x00%s\x00%s\x00%s\x00%s\x00%s", out.Properties.ID, out.Properties.Name, out.Properties.Description, sp.Name, canon)
	case len(probe.Migrate) > 0 && len(probe.Spec) == 0:
		b, err := body.AsVmmEnsureAsMigrationTarget()
		if err != nil {
			return out, &sledagent.FieldError{Field: "body", Problem: err.Error()}
		}
		out.Properties = propsFromV1(b.Instance)
		m := b.Migrate
		mt := &sledagent.MigrationTarget{SrcAddr: m.SrcAddr, MigrationID: m.MigrationId, Secret: m.Secret}
		var canonRC []byte
		if m.ReplaceComponents != nil && len(*m.ReplaceComponents) > 0 {
			rc := map[string]vmmapi.Component{}
			mt.Replace = map[string]json.RawMessage{}
			for k, c := range *m.ReplaceComponents {
				data, err := json.Marshal(c)
				if err != nil {
					return out, err
				}
				if err := specv1.ValidateJSON("Component", data); err != nil {
					return out, &sledagent.FieldError{Field: "body.migrate.replace_components." + k, Problem: err.Error()}
				}
				var wc vmmapi.Component
				if err := json.Unmarshal(data, &wc); err != nil {
					return out, &sledagent.FieldError{Field: "body.migrate.replace_components." + k, Problem: err.Error()}
				}
				rc[k] = wc
				mt.Replace[k] = data
			}
			if _, err := specv1.ReplacementsToSpec(rc); err != nil {
				return out, &sledagent.FieldError{Field: "body.migrate.replace_components", Problem: err.Error()}
			}
			mt.ReplaceVersion = specv1.Version
			canonRC, _ = json.Marshal(*m.ReplaceComponents)
		}
		out.Migrate = mt
		out.Resources = sledagent.Resources{CPUs: uint32(m.Resources.Cpus), MemoryMiB: uint64(m.Resources.MemoryMib)}
		secret := sha256.Sum256([]byte(m.Secret))
		fmt.Fprintf(h, "migrate\x00%s\x00%s\x00%s\x00%s\x00%s\x00%x\x00%d\x00%d\x00%s", out.Properties.ID, out.Properties.Name,
			out.Properties.Description, m.SrcAddr, m.MigrationId, secret, m.Resources.Cpus, m.Resources.MemoryMib, canonRC)
	default:
		return out, &sledagent.FieldError{Field: "body", Problem: "give exactly one of spec and migrate"}
	}
	out.Fingerprint = hex.EncodeToString(h.Sum(nil))
	return out, nil
}

// unsupportedVersion is an envelope of a spec version this agent does not
// know.
type unsupportedVersion struct{ name string }

func (e *unsupportedVersion) Error() string {
	return fmt.Sprintf("body.spec.spec_version: %q is not a spec version this agent knows", e.name)
}

// invalidSpec is a spec its version's schema or rules refuse.
type invalidSpec struct{ err error }

func (e *invalidSpec) Error() string { return e.err.Error() }
func (e *invalidSpec) Unwrap() error { return e.err }

func propsFromV1(p api.InstanceProperties) sledagent.Properties {
	out := sledagent.Properties{ID: p.Id, Name: p.Name}
	if p.Description != nil {
		out.Description = *p.Description
	}
	return out
}

func vmmToV1(v sledagent.Vmm) api.Vmm {
	d := v.Properties.Description
	return api.Vmm{
		VmmId:     v.ID,
		Instance:  api.InstanceProperties{Id: v.Properties.ID, Name: v.Properties.Name, Description: &d},
		Addr:      v.Addr,
		Resources: api.Resources{Cpus: int32(v.Resources.CPUs), MemoryMib: int64(v.Resources.MemoryMiB)},
		State:     StateToV1(v.State),
	}
}

// StateToV1 converts the agent's SledVmmState to the wire.
func StateToV1(s sledagent.SledVmmState) api.SledVmmState {
	out := api.SledVmmState{State: api.VmmState(s.State), Gen: int64(s.Gen), TimeUpdated: s.TimeUpdated}
	if s.Failure != nil {
		out.FailureReason = failureToV1(*s.Failure)
	}
	mig := func(m *sledagent.MigrationRuntime) *api.MigrationRuntimeState {
		if m == nil {
			return nil
		}
		return &api.MigrationRuntimeState{MigrationId: m.ID, State: api.MigrationState(m.State), Gen: int64(m.Gen), TimeUpdated: m.TimeUpdated}
	}
	out.MigrationIn, out.MigrationOut = mig(s.MigrationIn), mig(s.MigrationOut)
	return out
}

// failureToV1 converts a failure reason; a kind v1 does not name (one a
// later agent adds) is answered as unknown, its name first in the message.
func failureToV1(r sledagent.FailureReason) *api.VmmFailureReason {
	k := api.VmmFailureKind(r.Kind)
	if !k.Valid() || k == api.VmmFailureKindUnknown {
		return &api.VmmFailureReason{Kind: api.VmmFailureKindUnknown, Message: string(r.Kind) + ": " + r.Message}
	}
	return &api.VmmFailureReason{Kind: k, Message: r.Message}
}
