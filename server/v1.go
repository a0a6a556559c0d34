package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/oapierr"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
)

// v1Server implements version 1 of the contract over the core. Wire types
// stop here: it converts them to domain types and back.
type v1Server struct {
	core Core
}

var _ api.StrictServerInterface = (*v1Server)(nil)

// newV1Handler mounts the v1 strict server behind request validation.
func newV1Handler(core Core) (http.Handler, error) {
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load v1 contract: %w", err)
	}
	validate, err := newValidator(doc, "/v1")
	if err != nil {
		return nil, err
	}
	strict := api.NewStrictHandlerWithOptions(&v1Server{core: core},
		[]api.StrictMiddlewareFunc{func(f api.StrictHandlerFunc, op string) api.StrictHandlerFunc {
			return api.StrictHandlerFunc(withRawHTTPFor(op, f))
		}},
		api.StrictHTTPServerOptions{
			RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
				writeError(w, r, &apiError{http.StatusBadRequest, CodeInvalidRequest, oapierr.Describe(err)})
			},
			ResponseErrorHandlerFunc: writeError,
		})
	r := chi.NewRouter()
	r.Use(validate)
	return api.HandlerWithOptions(strict, api.ChiServerOptions{
		BaseRouter: r,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, r, &apiError{http.StatusBadRequest, CodeInvalidRequest, oapierr.Describe(err)})
		},
	}), nil
}

func propertiesFromV1(p api.InstanceProperties) Properties {
	out := Properties{ID: p.Id, Name: p.Name}
	if p.Description != nil {
		out.Description = *p.Description
	}
	return out
}

func propertiesToV1(p Properties) api.InstanceProperties {
	d := p.Description
	return api.InstanceProperties{Id: p.ID, Name: p.Name, Description: &d}
}

// stateToV1 is exhaustive over State; TestV1StatesComplete checks it.
var stateToV1 = map[State]api.InstanceState{
	StateCreating: api.InstanceStateCreating, StateStarting: api.InstanceStateStarting,
	StateRunning: api.InstanceStateRunning, StateStopping: api.InstanceStateStopping,
	StateStopped: api.InstanceStateStopped, StateRebooting: api.InstanceStateRebooting,
	StateMigrating: api.InstanceStateMigrating, StateFailed: api.InstanceStateFailed,
	StateDestroyed: api.InstanceStateDestroyed,
}

func instanceToV1(i Instance) api.Instance {
	out := api.Instance{Properties: propertiesToV1(i.Properties), State: stateToV1[i.State], Gen: int64(i.Gen)}
	if i.State == StateFailed {
		reason := i.FailureReason
		out.FailureReason = &reason
	}
	return out
}

// phaseToV1 names every MigrationPhase in v1, whose enum is closed: a
// phase added later must be given one of v1's names here
// (TestV1MigrationPhasesComplete), never leak out unnamed.
var phaseToV1 = map[MigrationPhase]api.MigrationPhase{
	PhaseNegotiate: api.MigrationPhaseNegotiate, PhasePreamble: api.MigrationPhasePreamble,
	PhaseRAMPrecopy: api.MigrationPhaseRamPrecopy, PhasePause: api.MigrationPhasePause,
	PhaseRAMFinal: api.MigrationPhaseRamFinal, PhaseDeviceState: api.MigrationPhaseDeviceState,
	PhaseClock: api.MigrationPhaseClock, PhaseHandoff: api.MigrationPhaseHandoff,
	PhaseCompleted: api.MigrationPhaseCompleted, PhaseFailed: api.MigrationPhaseFailed,
}

func migrationToV1(m MigrationStatus) api.MigrationStatus {
	conv := func(p *MigrationProgress) *api.MigrationProgress {
		if p == nil {
			return nil
		}
		out := &api.MigrationProgress{
			MigrationId: p.MigrationID, Phase: phaseToV1[p.Phase],
			BytesSent: int64(p.BytesSent), PagesLeft: int64(p.PagesLeft), Rounds: int32(p.Rounds),
		}
		if p.FailureReason != "" {
			reason := p.FailureReason
			out.FailureReason = &reason
		}
		if p.Total > 0 {
			us := p.Total.Microseconds()
			out.TotalUs = &us
		}
		if p.Downtime > 0 {
			us := p.Downtime.Microseconds()
			out.DowntimeUs = &us
		}
		return out
	}
	return api.MigrationStatus{MigrationIn: conv(m.In), MigrationOut: conv(m.Out)}
}

func (s *v1Server) InstanceEnsure(ctx context.Context, req api.InstanceEnsureRequestObject) (api.InstanceEnsureResponseObject, error) {
	er, err := ensureFromV1(*req.Body)
	if err != nil {
		return nil, err
	}
	inst, created, err := s.core.Ensure(ctx, er)
	if err != nil {
		return nil, err
	}
	if created {
		return api.InstanceEnsure201JSONResponse(instanceToV1(inst)), nil
	}
	return api.InstanceEnsure200JSONResponse(instanceToV1(inst)), nil
}

// ensureFromV1 converts v1's ensure body, one of two shapes told apart by
// which of `spec` and `migrate` it holds, into the domain request.
func ensureFromV1(body api.InstanceEnsureRequest) (EnsureRequest, error) {
	raw, err := body.MarshalJSON()
	if err != nil {
		return EnsureRequest{}, &apiError{http.StatusBadRequest, CodeInvalidRequest, "body: " + err.Error()}
	}
	var keys struct {
		Spec    json.RawMessage `json:"spec"`
		Migrate json.RawMessage `json:"migrate"`
	}
	if err := json.Unmarshal(raw, &keys); err != nil {
		return EnsureRequest{}, &apiError{http.StatusBadRequest, CodeInvalidRequest, "body: " + err.Error()}
	}
	if (keys.Spec == nil) == (keys.Migrate == nil) {
		return EnsureRequest{}, &apiError{http.StatusBadRequest, CodeInvalidRequest, "body: give exactly one of spec and migrate"}
	}
	if keys.Spec != nil {
		fromSpec, err := body.AsInstanceEnsureFromSpec()
		if err != nil {
			return EnsureRequest{}, &apiError{http.StatusBadRequest, CodeInvalidRequest, "body: " + err.Error()}
		}
		sp, err := specv1.ToSpec(fromSpec.Spec)
		if err != nil {
			return EnsureRequest{}, err
		}
		return EnsureRequest{Properties: propertiesFromV1(fromSpec.Properties), Spec: &sp}, nil
	}
	target, err := body.AsInstanceEnsureAsMigrationTarget()
	if err != nil {
		return EnsureRequest{}, &apiError{http.StatusBadRequest, CodeInvalidRequest, "body: " + err.Error()}
	}
	m := target.Migrate
	er := EnsureRequest{
		Properties: propertiesFromV1(target.Properties),
		Migrate:    &MigrateInit{MigrationID: m.MigrationId, SrcAddr: m.SrcAddr, Secret: m.Secret},
	}
	if m.ReplaceComponents != nil {
		replace, err := specv1.ReplacementsToSpec(*m.ReplaceComponents)
		if err != nil {
			return EnsureRequest{}, err
		}
		er.Migrate.Replace = replace
	}
	return er, nil
}

func (s *v1Server) InstanceGet(ctx context.Context, _ api.InstanceGetRequestObject) (api.InstanceGetResponseObject, error) {
	inst, err := s.core.Instance(ctx)
	if err != nil {
		return nil, err
	}
	return api.InstanceGet200JSONResponse(instanceToV1(inst)), nil
}

func (s *v1Server) InstanceSpecGet(ctx context.Context, _ api.InstanceSpecGetRequestObject) (api.InstanceSpecGetResponseObject, error) {
	inst, sp, err := s.core.Spec(ctx)
	if err != nil {
		return nil, err
	}
	out := api.InstanceSpecView{
		Properties: propertiesToV1(inst.Properties), State: stateToV1[inst.State], Gen: int64(inst.Gen),
		SpecStatus: api.InstanceSpecStatusWaitingForMigrationSource,
	}
	if sp != nil {
		// An explicit SMBIOS table that is the one this server derives
		// anyway says nothing v1 cannot: v1 answers the spec without it.
		if t, ok := sp.SMBIOS(); ok && t == s.core.DerivedSMBIOS(inst.Properties) {
			plain, err := sp.ToBuilder().ClearSMBIOS().Build()
			if err != nil {
				return nil, err
			}
			sp = &plain
		}
		w, err := specv1.FromSpec(*sp)
		if err != nil {
			// The instance's spec uses what v1 cannot say: tell the client
			// rather than answer a spec that is not the instance's.
			return nil, &apiError{http.StatusConflict, CodeNotExpressible, "the instance's spec cannot be expressed in v1: " + err.Error()}
		}
		out.Spec, out.SpecStatus = &w, api.InstanceSpecStatusPresent
	}
	return api.InstanceSpecGet200JSONResponse(out), nil
}

func (s *v1Server) InstanceStatePut(ctx context.Context, req api.InstanceStatePutRequestObject) (api.InstanceStatePutResponseObject, error) {
	r, err := requested(string(req.Body.Requested))
	if err != nil {
		return nil, err
	}
	if _, err := s.core.RequestState(ctx, r); err != nil {
		return nil, err
	}
	return api.InstanceStatePut204Response{}, nil
}

func (s *v1Server) InstanceStateMonitor(ctx context.Context, req api.InstanceStateMonitorRequestObject) (api.InstanceStateMonitorResponseObject, error) {
	ctx, cancel := context.WithTimeout(ctx, monitorWait(req.Params.TimeoutMs))
	defer cancel()
	inst, mig, history, err := s.core.WaitGen(ctx, uint64(req.Params.Gen))
	if err != nil {
		return nil, err
	}
	out := api.InstanceStateView{Gen: int64(inst.Gen), State: stateToV1[inst.State], Migration: migrationToV1(mig)}
	if inst.State == StateFailed {
		reason := inst.FailureReason
		out.FailureReason = &reason
	}
	if len(history) > 0 {
		h := make([]api.StateTransition, len(history))
		for i, t := range history {
			h[i] = api.StateTransition{Gen: int64(t.Gen), State: stateToV1[t.State], At: t.At.UTC()}
			if t.State == StateFailed {
				reason := t.FailureReason
				h[i].FailureReason = &reason
			}
		}
		out.History = &h
	}
	return api.InstanceStateMonitor200JSONResponse(out), nil
}

func (s *v1Server) InstanceSerialHistoryGet(ctx context.Context, req api.InstanceSerialHistoryGetRequestObject) (api.InstanceSerialHistoryGetResponseObject, error) {
	q, err := serialQuery(req.Params.FromStart, req.Params.MostRecent, req.Params.MaxBytes)
	if err != nil {
		return nil, err
	}
	h, err := s.core.SerialHistory(ctx, q)
	if err != nil {
		return nil, err
	}
	return api.InstanceSerialHistoryGet200JSONResponse(api.SerialHistory{Data: h.Data, Start: int64(h.Start), End: int64(h.End)}), nil
}

func (s *v1Server) InstanceMigrationStatus(ctx context.Context, _ api.InstanceMigrationStatusRequestObject) (api.InstanceMigrationStatusResponseObject, error) {
	m, err := s.core.MigrationStatus(ctx)
	if err != nil {
		return nil, err
	}
	return api.InstanceMigrationStatus200JSONResponse(migrationToV1(m)), nil
}

func (s *v1Server) InstanceMigrateExpect(ctx context.Context, req api.InstanceMigrateExpectRequestObject) (api.InstanceMigrateExpectResponseObject, error) {
	armed, err := s.core.MigrateExpect(ctx, armRequest(req.Body.MigrationId, req.Body.Secret, req.Body.TtlSeconds))
	if err != nil {
		return nil, err
	}
	out := api.InstanceMigrateExpect200JSONResponse{MigrationId: armed.ID, ExpiresAt: armed.ExpiresAt.UTC()}
	if armed.Secret != "" {
		// Only a secret the server made is answered, and only here.
		secret := armed.Secret
		out.Secret = &secret
	}
	return out, nil
}

// upgraded is the response of an endpoint that took over the connection:
// there is nothing left to write.
type upgraded struct{}

func (upgraded) VisitInstanceSerialResponse(http.ResponseWriter) error       { return nil }
func (upgraded) VisitInstanceMigrateStartResponse(http.ResponseWriter) error { return nil }

func (s *v1Server) InstanceSerial(ctx context.Context, _ api.InstanceSerialRequestObject) (api.InstanceSerialResponseObject, error) {
	if err := attachConsole(ctx, s.core); err != nil {
		return nil, err
	}
	return upgraded{}, nil
}

func (s *v1Server) InstanceMigrateStart(ctx context.Context, req api.InstanceMigrateStartRequestObject) (api.InstanceMigrateStartResponseObject, error) {
	if err := startMigrationStream(ctx, s.core, uuid.UUID(req.MigrationId)); err != nil {
		return nil, err
	}
	return upgraded{}, nil
}
