package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/spec"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
)

// vmmV1 drives a server through vmm-server v1.
type vmmV1 struct {
	ep endpoint
	cl *api.ClientWithResponses
}

func dialV1(ep endpoint, hc *http.Client, token string) (vmmAPI, error) {
	opts := []api.ClientOption{api.WithHTTPClient(hc)}
	if token != "" {
		opts = append(opts, api.WithRequestEditorFn(httpkit.BearerAuth(token)))
	}
	cl, err := api.NewClientWithResponses(ep.baseURL()+"/v1", opts...)
	if err != nil {
		return nil, err
	}
	return &vmmV1{ep: ep, cl: cl}, nil
}

func (v *vmmV1) version() string    { return "v1" }
func (v *vmmV1) consoleURL() string { return v.ep.wsURL("/v1/instance/serial") }

func (v *vmmV1) decodeSpec(data []byte) (spec.Spec, error) {
	w, err := specv1.DecodeInstanceSpec(data)
	if err != nil {
		return spec.Spec{}, err
	}
	return specv1.ToSpec(w)
}

// failureFromV1 is v1's failure reason: a message, without a kind.
func failureFromV1(reason *string) *failure {
	if reason == nil {
		return nil
	}
	return &failure{Message: *reason}
}

func instanceFromV1(i api.Instance, raw []byte) instanceView {
	return instanceView{
		Properties: properties{ID: i.Properties.Id, Name: i.Properties.Name, Description: deref(i.Properties.Description)},
		State:      string(i.State), Gen: i.Gen, Failure: failureFromV1(i.FailureReason), raw: raw,
	}
}

func (v *vmmV1) instance(ctx context.Context) (instanceView, error) {
	r, err := v.cl.InstanceGetWithResponse(ctx)
	if err != nil {
		return instanceView{}, err
	}
	if r.JSON200 == nil {
		return instanceView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	return instanceFromV1(*r.JSON200, r.Body), nil
}

func (v *vmmV1) spec(ctx context.Context) (specView, error) {
	r, err := v.cl.InstanceSpecGetWithResponse(ctx)
	if err != nil {
		return specView{}, err
	}
	if r.JSON200 == nil {
		return specView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	out := specView{raw: r.Body}
	if r.JSON200.Spec != nil {
		s, err := specv1.ToSpec(*r.JSON200.Spec)
		if err != nil {
			return specView{}, fmt.Errorf("the spec the server at %s answered: %w", v.ep, err)
		}
		out.Spec = &s
	}
	return out, nil
}

func propertiesToV1(p properties) api.InstanceProperties {
	out := api.InstanceProperties{Id: p.ID, Name: p.Name}
	if p.Description != "" {
		out.Description = &p.Description
	}
	return out
}

func (v *vmmV1) ensure(ctx context.Context, body api.InstanceEnsureRequest) (instanceView, error) {
	r, err := v.cl.InstanceEnsureWithResponse(ctx, body)
	if err != nil {
		return instanceView{}, err
	}
	inst := r.JSON201
	if inst == nil {
		inst = r.JSON200
	}
	if inst == nil {
		return instanceView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	return instanceFromV1(*inst, r.Body), nil
}

func (v *vmmV1) create(ctx context.Context, p properties, s spec.Spec) (instanceView, error) {
	w, err := specv1.FromSpec(s)
	if err != nil {
		return instanceView{}, fmt.Errorf("API v1 cannot say this spec (the version spoken to the server at %s): %w", v.ep, err)
	}
	var body api.InstanceEnsureRequest
	if err := body.FromInstanceEnsureFromSpec(api.InstanceEnsureFromSpec{Properties: propertiesToV1(p), Spec: w}); err != nil {
		return instanceView{}, err
	}
	return v.ensure(ctx, body)
}

func (v *vmmV1) createTarget(ctx context.Context, p properties, t migrationTarget) (instanceView, error) {
	m := api.InstanceMigrateInitiateRequest{MigrationId: t.ID, SrcAddr: t.SrcAddr, Secret: t.Secret}
	if len(t.Replace) > 0 {
		repl := make(map[string]api.Component, len(t.Replace))
		for k, data := range t.Replace {
			var c api.Component
			if err := json.Unmarshal(data, &c); err != nil {
				return instanceView{}, fmt.Errorf("replacement %s: %w", k, err)
			}
			repl[k] = c
		}
		m.ReplaceComponents = &repl
	}
	var body api.InstanceEnsureRequest
	if err := body.FromInstanceEnsureAsMigrationTarget(api.InstanceEnsureAsMigrationTarget{Properties: propertiesToV1(p), Migrate: m}); err != nil {
		return instanceView{}, err
	}
	return v.ensure(ctx, body)
}

func (v *vmmV1) request(ctx context.Context, verb string) error {
	r, err := v.cl.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequested(verb)})
	if err != nil {
		return err
	}
	if r.StatusCode() != http.StatusNoContent {
		return refused(v.ep, r.StatusCode(), r.Body)
	}
	return nil
}

func (v *vmmV1) monitor(ctx context.Context, gen int64, timeout *time.Duration) (stateView, error) {
	r, err := v.cl.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: gen, TimeoutMs: timeoutMs(timeout)})
	if err != nil {
		return stateView{}, err
	}
	if r.JSON200 == nil {
		return stateView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	st := r.JSON200
	out := stateView{Gen: st.Gen, State: string(st.State), Failure: failureFromV1(st.FailureReason)}
	if st.History != nil {
		out.History = make([]historyEntry, len(*st.History))
		for i, t := range *st.History {
			out.History[i] = historyEntry{Gen: t.Gen, State: string(t.State), At: t.At, Failure: failureFromV1(t.FailureReason)}
		}
	}
	if err := viaJSON(st.Migration, &out.Migration); err != nil {
		return stateView{}, err
	}
	return out, nil
}

func (v *vmmV1) arm(ctx context.Context, id uuid.UUID) (string, error) {
	r, err := v.cl.InstanceMigrateExpectWithResponse(ctx, api.InstanceMigrateExpectRequest{MigrationId: id})
	if err != nil {
		return "", err
	}
	if r.JSON200 == nil {
		return "", refused(v.ep, r.StatusCode(), r.Body)
	}
	if r.JSON200.Secret == nil {
		return "", fmt.Errorf("the source %s armed migration %s but answered no secret for the target", v.ep, id)
	}
	return *r.JSON200.Secret, nil
}

func (v *vmmV1) migrations(ctx context.Context) (migrationsView, error) {
	r, err := v.cl.InstanceMigrationStatusWithResponse(ctx)
	if err != nil {
		return migrationsView{}, err
	}
	if r.JSON200 == nil {
		return migrationsView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	var out migrationsView
	return out, viaJSON(r.JSON200, &out)
}

func (v *vmmV1) serialHistory(ctx context.Context, mostRecent int64) (serialView, error) {
	r, err := v.cl.InstanceSerialHistoryGetWithResponse(ctx, &api.InstanceSerialHistoryGetParams{MostRecent: &mostRecent})
	if err != nil {
		return serialView{}, err
	}
	if r.JSON200 == nil {
		return serialView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	return serialView{Data: r.JSON200.Data, raw: r.Body}, nil
}
