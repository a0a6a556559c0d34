package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/internal/oapierr"
	specv2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
)

// v2Server implements version 2 of the contract over the same core as v1.
// Wire types stop here: it converts them to domain types and back.
type v2Server struct {
	core Core
}

var _ api.StrictServerInterface = (*v2Server)(nil)

// newV2Handler mounts the v2 strict server behind request validation.
func newV2Handler(core Core) (http.Handler, error) {
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load v2 contract: %w", err)
	}
	validate, err := newValidator(doc, "/v2")
	if err != nil {
		return nil, err
	}
	badRequest := func(w http.ResponseWriter, r *http.Request, err error) {
		writeError(w, r, &apiError{http.StatusBadRequest, CodeInvalidRequest, oapierr.Describe(err)})
	}
	strict := api.NewStrictHandlerWithOptions(&v2Server{core: core},
		[]api.StrictMiddlewareFunc{func(f api.StrictHandlerFunc, op string) api.StrictHandlerFunc {
			return api.StrictHandlerFunc(withRawHTTPFor(op, f))
		}},
		api.StrictHTTPServerOptions{RequestErrorHandlerFunc: badRequest, ResponseErrorHandlerFunc: writeError})
	r := chi.NewRouter()
	r.Use(validate)
	return api.HandlerWithOptions(strict, api.ChiServerOptions{BaseRouter: r, ErrorHandlerFunc: badRequest}), nil
}

func propertiesFromV2(p api.InstanceProperties) Properties {
	out := Properties{ID: p.Id, Name: p.Name}
	if p.Description != nil {
		out.Description = *p.Description
	}
	return out
}

func propertiesToV2(p Properties) api.InstancePropertiesView {
	return api.InstancePropertiesView{Id: p.ID, Name: p.Name, Description: p.Description}
}

// stateToV2, phaseToV2 and failureKindToV2 are exhaustive over the core's
// states, migration phases and failure kinds; TestV2EnumsComplete checks
// them.
var stateToV2 = map[State]api.InstanceState{
	StateCreating: api.InstanceStateCreating, StateStarting: api.InstanceStateStarting,
	StateRunning: api.InstanceStateRunning, StateStopping: api.InstanceStateStopping,
	StateStopped: api.InstanceStateStopped, StateRebooting: api.InstanceStateRebooting,
	StateMigrating: api.InstanceStateMigrating, StateFailed: api.InstanceStateFailed,
	StateDestroyed: api.InstanceStateDestroyed,
}

var phaseToV2 = map[MigrationPhase]api.MigrationPhase{
	PhaseNegotiate: api.MigrationPhaseNegotiate, PhasePreamble: api.MigrationPhasePreamble,
	PhaseRAMPrecopy: api.MigrationPhaseRamPrecopy, PhasePause: api.MigrationPhasePause,
	PhaseRAMFinal: api.MigrationPhaseRamFinal, PhaseDeviceState: api.MigrationPhaseDeviceState,
	PhaseClock: api.MigrationPhaseClock, PhaseHandoff: api.MigrationPhaseHandoff,
	PhaseCompleted: api.MigrationPhaseCompleted, PhaseFailed: api.MigrationPhaseFailed,
}

var failureKindToV2 = map[FailureKind]api.FailureKind{
	FailureGuestPanicked: api.FailureKindGuestPanicked, FailureGuestTripleFault: api.FailureKindGuestTripleFault,
	FailureGuestError: api.FailureKindGuestError, FailureMigrationFailed: api.FailureKindMigrationFailed,
	FailureHostError: api.FailureKindHostError,
}

// maxFailureMessageV2 is the most characters v2's InstanceFailure.message
// holds (its maxLength).
const maxFailureMessageV2 = 4096

// failureToV2 is a failed state's reason as v2 reports it; nil in any
// other state. A kind the map lacks (none today) is reported as a host
// error rather than leak a value outside v2's enum (a kind added later
// gets its v2 kind in the map, as the contract's FailureKind says). The
// message is cut to the contract's bound: a failure's text can quote a
// path of 4095 bytes.
func failureToV2(s State, kind FailureKind, message string) *api.InstanceFailure {
	if s != StateFailed {
		return nil
	}
	k, ok := failureKindToV2[kind]
	if !ok {
		k = api.FailureKindHostError
	}
	return &api.InstanceFailure{Kind: k, Message: cutMessage(message, maxFailureMessageV2)}
}

// cutMessage returns msg when it has at most max characters, else its first
// max-3 characters followed by "...". It counts characters (runes), as JSON
// Schema's maxLength does, and never splits one.
func cutMessage(msg string, max int) string {
	if utf8.RuneCountInString(msg) <= max {
		return msg
	}
	n := 0
	for i := range msg {
		if n == max-3 {
			return msg[:i] + "..."
		}
		n++
	}
	return msg
}

func instanceToV2(i Instance) api.Instance {
	return api.Instance{Properties: propertiesToV2(i.Properties), State: stateToV2[i.State], Gen: int64(i.Gen),
		Failure: failureToV2(i.State, i.FailureKind, i.FailureReason)}
}

func migrationToV2(m MigrationStatus) api.MigrationStatus {
	conv := func(p *MigrationProgress) *api.MigrationProgress {
		if p == nil {
			return nil
		}
		out := &api.MigrationProgress{
			MigrationId: p.MigrationID, Phase: phaseToV2[p.Phase],
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

func (s *v2Server) InstanceEnsure(ctx context.Context, req api.InstanceEnsureRequestObject) (api.InstanceEnsureResponseObject, error) {
	er, err := ensureFromV2(*req.Body)
	if err != nil {
		return nil, err
	}
	inst, created, err := s.core.Ensure(ctx, er)
	if err != nil {
		return nil, fieldErrorToV2(err)
	}
	if created {
		return api.InstanceEnsure201JSONResponse(instanceToV2(inst)), nil
	}
	return api.InstanceEnsure200JSONResponse(instanceToV2(inst)), nil
}

// ensureFromV2 converts v2's ensure body, whose init is told apart by its
// method, into the domain request: the same request v1's two shapes make.
func ensureFromV2(body api.InstanceEnsureRequest) (EnsureRequest, error) {
	bad := func(err error) error {
		return &apiError{http.StatusBadRequest, CodeInvalidRequest, "body.init: " + err.Error()}
	}
	init, err := body.Init.ValueByDiscriminator()
	if err != nil {
		return EnsureRequest{}, bad(err)
	}
	props := propertiesFromV2(body.Properties)
	switch in := init.(type) {
	case api.InstanceInitSpec:
		sp, err := specv2.ToSpec(in.Spec)
		if err != nil {
			return EnsureRequest{}, err
		}
		return EnsureRequest{Properties: props, Spec: &sp}, nil
	case api.InstanceInitMigrationTarget:
		er := EnsureRequest{Properties: props,
			Migrate: &MigrateInit{MigrationID: in.MigrationId, SrcAddr: in.SrcAddr, Secret: in.Secret}}
		if in.ReplaceComponents != nil {
			replace, err := specv2.ReplacementsToSpec(*in.ReplaceComponents)
			if err != nil {
				return EnsureRequest{}, err
			}
			er.Migrate.Replace = replace
		}
		return er, nil
	}
	return EnsureRequest{}, bad(fmt.Errorf("unknown method"))
}

// fieldErrorToV2 names a field of the migration target's init as v2 does:
// the core names them as v1 spells its ensure ("migrate.src_addr"), and v2
// holds them in init ("init.src_addr"). Any other error is returned as it
// is.
func fieldErrorToV2(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		if rest, ok := strings.CutPrefix(fe.Field, "migrate."); ok {
			return &FieldError{Field: "init." + rest, Reason: fe.Reason}
		}
	}
	return err
}

func (s *v2Server) InstanceGet(ctx context.Context, _ api.InstanceGetRequestObject) (api.InstanceGetResponseObject, error) {
	inst, err := s.core.Instance(ctx)
	if err != nil {
		return nil, err
	}
	return api.InstanceGet200JSONResponse(instanceToV2(inst)), nil
}

func (s *v2Server) InstanceSpecGet(ctx context.Context, _ api.InstanceSpecGetRequestObject) (api.InstanceSpecGetResponseObject, error) {
	inst, sp, err := s.core.Spec(ctx)
	if err != nil {
		return nil, err
	}
	out := api.InstanceSpecView{
		Properties: propertiesToV2(inst.Properties), State: stateToV2[inst.State], Gen: int64(inst.Gen),
		SpecStatus: api.InstanceSpecStatusWaitingForMigrationSource,
	}
	if sp != nil {
		w, err := specv2.FromSpec(*sp)
		if err != nil {
			return nil, &apiError{http.StatusConflict, CodeNotExpressible, "the instance's spec cannot be expressed in v2: " + err.Error()}
		}
		out.Spec, out.SpecStatus = &w, api.InstanceSpecStatusPresent
	}
	return api.InstanceSpecGet200JSONResponse(out), nil
}

func (s *v2Server) InstanceStatePut(ctx context.Context, req api.InstanceStatePutRequestObject) (api.InstanceStatePutResponseObject, error) {
	r, err := requested(string(req.Body.Requested))
	if err != nil {
		return nil, err
	}
	gen, err := s.core.RequestState(ctx, r)
	if err != nil {
		return nil, err
	}
	return api.InstanceStatePut200JSONResponse{Gen: int64(gen)}, nil
}

func (s *v2Server) InstanceStateMonitor(ctx context.Context, req api.InstanceStateMonitorRequestObject) (api.InstanceStateMonitorResponseObject, error) {
	ctx, cancel := context.WithTimeout(ctx, monitorWait(req.Params.TimeoutMs))
	defer cancel()
	inst, mig, history, err := s.core.WaitGen(ctx, uint64(req.Params.Gen))
	if err != nil {
		return nil, err
	}
	out := api.InstanceStateView{Gen: int64(inst.Gen), State: stateToV2[inst.State], Migration: migrationToV2(mig),
		Failure: failureToV2(inst.State, inst.FailureKind, inst.FailureReason)}
	if len(history) > 0 {
		h := make([]api.StateTransition, len(history))
		for i, t := range history {
			h[i] = api.StateTransition{Gen: int64(t.Gen), State: stateToV2[t.State], At: t.At.UTC(),
				Failure: failureToV2(t.State, t.FailureKind, t.FailureReason)}
		}
		out.History = &h
	}
	return api.InstanceStateMonitor200JSONResponse(out), nil
}

func (s *v2Server) InstanceSerialHistoryGet(ctx context.Context, req api.InstanceSerialHistoryGetRequestObject) (api.InstanceSerialHistoryGetResponseObject, error) {
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

func (s *v2Server) InstanceMigrationStatus(ctx context.Context, _ api.InstanceMigrationStatusRequestObject) (api.InstanceMigrationStatusResponseObject, error) {
	m, err := s.core.MigrationStatus(ctx)
	if err != nil {
		return nil, err
	}
	return api.InstanceMigrationStatus200JSONResponse(migrationToV2(m)), nil
}

func (s *v2Server) InstanceMigrateExpect(ctx context.Context, req api.InstanceMigrateExpectRequestObject) (api.InstanceMigrateExpectResponseObject, error) {
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

// upgradedV2 is v2's response of an endpoint that took over the
// connection: there is nothing left to write.
type upgradedV2 struct{}

func (upgradedV2) VisitInstanceSerialResponse(http.ResponseWriter) error       { return nil }
func (upgradedV2) VisitInstanceMigrateStartResponse(http.ResponseWriter) error { return nil }

func (s *v2Server) InstanceSerial(ctx context.Context, _ api.InstanceSerialRequestObject) (api.InstanceSerialResponseObject, error) {
	if err := attachConsole(ctx, s.core); err != nil {
		return nil, err
	}
	return upgradedV2{}, nil
}

func (s *v2Server) InstanceMigrateStart(ctx context.Context, req api.InstanceMigrateStartRequestObject) (api.InstanceMigrateStartResponseObject, error) {
	if err := startMigrationStream(ctx, s.core, uuid.UUID(req.MigrationId)); err != nil {
		return nil, err
	}
	return upgradedV2{}, nil
}
