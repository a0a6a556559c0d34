package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/spec"
	specv2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
)

// vmmV2 drives a server through vmm-server v2.
type vmmV2 struct {
	ep endpoint
	cl *api.ClientWithResponses
}

func dialV2(ep endpoint, hc *http.Client, token string) (vmmAPI, error) {
	opts := []api.ClientOption{api.WithHTTPClient(hc)}
	if token != "" {
		opts = append(opts, api.WithRequestEditorFn(httpkit.BearerAuth(token)))
	}
	cl, err := api.NewClientWithResponses(ep.baseURL()+"/v2", opts...)
	if err != nil {
		return nil, err
	}
	return &vmmV2{ep: ep, cl: cl}, nil
}

func (v *vmmV2) version() string    { return "v2" }
func (v *vmmV2) consoleURL() string { return v.ep.wsURL("/v2/instance/serial") }

func (v *vmmV2) decodeSpec(data []byte) (spec.Spec, error) {
	w, err := specv2.DecodeInstanceSpec(data)
	if err != nil {
		return spec.Spec{}, err
	}
	return specv2.ToSpec(w)
}

func failureFromV2(f *api.InstanceFailure) *failure {
	if f == nil {
		return nil
	}
	return &failure{Kind: string(f.Kind), Message: f.Message}
}

func instanceFromV2(i api.Instance, raw []byte) instanceView {
	return instanceView{
		Properties: properties{ID: i.Properties.Id, Name: i.Properties.Name, Description: i.Properties.Description},
		State:      string(i.State), Gen: i.Gen, Failure: failureFromV2(i.Failure), raw: raw,
	}
}

func (v *vmmV2) instance(ctx context.Context) (instanceView, error) {
	r, err := v.cl.InstanceGetWithResponse(ctx)
	if err != nil {
		return instanceView{}, err
	}
	if r.JSON200 == nil {
		return instanceView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	return instanceFromV2(*r.JSON200, r.Body), nil
}

func (v *vmmV2) spec(ctx context.Context) (specView, error) {
	r, err := v.cl.InstanceSpecGetWithResponse(ctx)
	if err != nil {
		return specView{}, err
	}
	if r.JSON200 == nil {
		return specView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	out := specView{raw: r.Body}
	if r.JSON200.Spec != nil {
		s, err := specv2.ToSpec(*r.JSON200.Spec)
		if err != nil {
			return specView{}, fmt.Errorf("the spec the server at %s answered: %w", v.ep, err)
		}
		out.Spec = &s
	}
	return out, nil
}

func propertiesToV2(p properties) api.InstanceProperties {
	out := api.InstanceProperties{Id: p.ID, Name: p.Name}
	if p.Description != "" {
		out.Description = &p.Description
	}
	return out
}

func (v *vmmV2) ensure(ctx context.Context, p properties, init api.InstanceInit) (instanceView, error) {
	r, err := v.cl.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{Properties: propertiesToV2(p), Init: init})
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
	return instanceFromV2(*inst, r.Body), nil
}

func (v *vmmV2) create(ctx context.Context, p properties, s spec.Spec) (instanceView, error) {
	w, err := specv2.FromSpec(s)
	if err != nil {
		return instanceView{}, fmt.Errorf("API v2 cannot say this spec (the version spoken to the server at %s): %w", v.ep, err)
	}
	var init api.InstanceInit
	if err := init.FromInstanceInitSpec(api.InstanceInitSpec{Spec: w}); err != nil {
		return instanceView{}, err
	}
	return v.ensure(ctx, p, init)
}

func (v *vmmV2) createTarget(ctx context.Context, p properties, t migrationTarget) (instanceView, error) {
	m := api.InstanceInitMigrationTarget{MigrationId: t.ID, SrcAddr: t.SrcAddr, Secret: t.Secret}
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
	var init api.InstanceInit
	if err := init.FromInstanceInitMigrationTarget(m); err != nil {
		return instanceView{}, err
	}
	return v.ensure(ctx, p, init)
}

func (v *vmmV2) request(ctx context.Context, verb string) error {
	r, err := v.cl.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequested(verb)})
	if err != nil {
		return err
	}
	if r.JSON200 == nil {
		return refused(v.ep, r.StatusCode(), r.Body)
	}
	return nil
}

func (v *vmmV2) monitor(ctx context.Context, gen int64, timeout *time.Duration) (stateView, error) {
	r, err := v.cl.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: gen, TimeoutMs: timeoutMs(timeout)})
	if err != nil {
		return stateView{}, err
	}
	if r.JSON200 == nil {
		return stateView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	st := r.JSON200
	out := stateView{Gen: st.Gen, State: string(st.State), Failure: failureFromV2(st.Failure)}
	if st.History != nil {
		out.History = make([]historyEntry, len(*st.History))
		for i, t := range *st.History {
			out.History[i] = historyEntry{Gen: t.Gen, State: string(t.State), At: t.At, Failure: failureFromV2(t.Failure)}
		}
	}
	if err := viaJSON(st.Migration, &out.Migration); err != nil {
		return stateView{}, err
	}
	return out, nil
}

func (v *vmmV2) arm(ctx context.Context, id uuid.UUID) (string, error) {
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

func (v *vmmV2) migrations(ctx context.Context) (migrationsView, error) {
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

func (v *vmmV2) serialHistory(ctx context.Context, mostRecent int64) (serialView, error) {
	r, err := v.cl.InstanceSerialHistoryGetWithResponse(ctx, &api.InstanceSerialHistoryGetParams{MostRecent: &mostRecent})
	if err != nil {
		return serialView{}, err
	}
	if r.JSON200 == nil {
		return serialView{}, refused(v.ep, r.StatusCode(), r.Body)
	}
	return serialView{Data: r.JSON200.Data, raw: r.Body}, nil
}

// timeoutMs is a state monitor's timeout_ms.
func timeoutMs(d *time.Duration) *int32 {
	if d == nil {
		return nil
	}
	ms := int32(d.Milliseconds())
	return &ms
}

// viaJSON copies src into dst, whose JSON has the same shape.
func viaJSON(src, dst any) error {
	data, err := json.Marshal(src)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, dst)
}
