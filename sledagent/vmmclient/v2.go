package vmmclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	apiv1 "github.com/wagglevm/waggle/gen/vmm-server/v1"
	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/spec"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	specv2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
)

// v2Client drives a VMM server through version 2 of its API.
type v2Client struct {
	c     *api.ClientWithResponses
	base  string // http://host:port/v2
	hc    *http.Client
	token string
}

func newV2(base string, hc *http.Client, token string) (sledagent.VMMClient, error) {
	c, err := api.NewClientWithResponses(base, api.WithHTTPClient(hc), api.WithRequestEditorFn(httpkit.BearerAuth(token)))
	if err != nil {
		return nil, err
	}
	return &v2Client{c: c, base: base, hc: hc, token: token}, nil
}

func (v *v2Client) Ensure(ctx context.Context, p sledagent.Properties, s *spec.Spec, m *sledagent.MigrationTarget) error {
	desc := p.Description
	body := api.InstanceEnsureRequest{Properties: api.InstanceProperties{Id: p.ID, Name: p.Name, Description: &desc}}
	switch {
	case s != nil:
		w, err := specv2.FromSpec(*s)
		if err != nil {
			// The VMM server's version cannot express the spec.
			return &sledagent.RefusedError{Status: http.StatusBadRequest, Code: "not_expressible",
				Message: "the VMM server's API v2 cannot express the spec: " + err.Error()}
		}
		if err := body.Init.FromInstanceInitSpec(api.InstanceInitSpec{Method: api.InstanceInitSpecMethodSpec, Spec: w}); err != nil {
			return err
		}
	case m != nil:
		mig := api.InstanceInitMigrationTarget{Method: api.InstanceInitMigrationTargetMethodMigrationTarget,
			MigrationId: m.MigrationID, SrcAddr: m.SrcAddr, Secret: m.Secret}
		if len(m.Replace) > 0 {
			rc, err := replacementsToV2(m.ReplaceVersion, m.Replace)
			if err != nil {
				return err
			}
			mig.ReplaceComponents = &rc
		}
		if err := body.Init.FromInstanceInitMigrationTarget(mig); err != nil {
			return err
		}
	}
	resp, err := v.c.InstanceEnsureWithResponse(ctx, body)
	if err != nil {
		return transport("ensure", err)
	}
	return answer(resp.StatusCode(), resp.Body, "ensure")
}

// replacementsToV2 reads a migration target's replacement components,
// written in version (v1's or v2's components), as v2 components. Every v1
// component is a v2 component with the same JSON (v2 only adds kinds and
// block sizes), so v1's are checked by v1's rules and then read as v2's.
func replacementsToV2(version string, replace map[string]json.RawMessage) (map[string]api.Component, error) {
	refuse := func(format string, args ...any) error {
		return &sledagent.RefusedError{Status: http.StatusBadRequest, Code: "not_expressible", Message: fmt.Sprintf(format, args...)}
	}
	if version != specv1.Version && version != specv2.Version {
		return nil, refuse("the VMM server speaks %s; the replacements are %s", specv2.Version, version)
	}
	rc := map[string]api.Component{}
	v1 := map[string]apiv1.Component{}
	for k, raw := range replace {
		var c api.Component
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("replacement %s: %w", k, err)
		}
		rc[k] = c
		if version == specv1.Version {
			var c1 apiv1.Component
			if err := json.Unmarshal(raw, &c1); err != nil {
				return nil, fmt.Errorf("replacement %s: %w", k, err)
			}
			v1[k] = c1
		}
	}
	if version == specv1.Version {
		if _, err := specv1.ReplacementsToSpec(v1); err != nil {
			return nil, refuse("the replacements: %v", err)
		}
	}
	return rc, nil
}

func (v *v2Client) Observe(ctx context.Context, gen uint64, wait time.Duration) (sledagent.Observation, error) {
	ms := int32(wait / time.Millisecond)
	resp, err := v.c.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: int64(gen), TimeoutMs: &ms})
	if err != nil {
		return sledagent.Observation{}, transport("state monitor", err)
	}
	if resp.JSON404 != nil && resp.JSON404.ErrorCode == "no_instance" {
		return sledagent.Observation{NoInstance: true, Gen: gen}, nil
	}
	if err := answer(resp.StatusCode(), resp.Body, "state monitor"); err != nil {
		return sledagent.Observation{}, err
	}
	if resp.JSON200 == nil {
		return sledagent.Observation{}, fmt.Errorf("state monitor: no body: %w", sledagent.ErrVMMUnavailable)
	}
	sv := resp.JSON200
	o := sledagent.Observation{Gen: uint64(sv.Gen), State: sledagent.VmmState(sv.State)}
	if sv.Failure != nil {
		o.FailureReason = sv.Failure.Message
	}
	if sv.History != nil {
		for _, h := range *sv.History {
			tr := sledagent.Transition{State: sledagent.VmmState(h.State)}
			if h.Failure != nil {
				tr.FailureReason = h.Failure.Message
			}
			o.History = append(o.History, tr)
		}
	}
	o.MigrationIn = progressFromV2(sv.Migration.MigrationIn)
	o.MigrationOut = progressFromV2(sv.Migration.MigrationOut)
	return o, nil
}

func progressFromV2(p *api.MigrationProgress) *sledagent.MigrationProgress {
	if p == nil {
		return nil
	}
	return &sledagent.MigrationProgress{ID: p.MigrationId, Phase: string(p.Phase)}
}

func (v *v2Client) Request(ctx context.Context, r sledagent.Requested) error {
	resp, err := v.c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequested(r)})
	if err != nil {
		return transport("state change", err)
	}
	return answer(resp.StatusCode(), resp.Body, "state change")
}

func (v *v2Client) Arm(ctx context.Context, a sledagent.MigrationArm) (sledagent.MigrationArmed, error) {
	req := api.InstanceMigrateExpectRequest{MigrationId: a.MigrationID}
	if a.Secret != "" {
		s := a.Secret
		req.Secret = &s
	}
	if a.TTL > 0 {
		ttl := int32(a.TTL / time.Second)
		req.TtlSeconds = &ttl
	}
	resp, err := v.c.InstanceMigrateExpectWithResponse(ctx, req)
	if err != nil {
		return sledagent.MigrationArmed{}, transport("arm migration", err)
	}
	if err := answer(resp.StatusCode(), resp.Body, "arm migration"); err != nil {
		return sledagent.MigrationArmed{}, err
	}
	if resp.JSON200 == nil {
		return sledagent.MigrationArmed{}, fmt.Errorf("arm migration: no body: %w", sledagent.ErrVMMUnavailable)
	}
	out := sledagent.MigrationArmed{MigrationID: resp.JSON200.MigrationId, ExpiresAt: resp.JSON200.ExpiresAt}
	if resp.JSON200.Secret != nil {
		out.Secret = *resp.JSON200.Secret
	}
	return out, nil
}

func (v *v2Client) Serial(ctx context.Context, q sledagent.SerialQuery) (sledagent.SerialChunk, error) {
	var params api.InstanceSerialHistoryGetParams
	if q.FromStart != nil {
		n := int64(*q.FromStart)
		params.FromStart = &n
	}
	if q.MostRecent != nil {
		n := int64(*q.MostRecent)
		params.MostRecent = &n
	}
	if q.MaxBytes != nil {
		n := int32(*q.MaxBytes)
		params.MaxBytes = &n
	}
	resp, err := v.c.InstanceSerialHistoryGetWithResponse(ctx, &params)
	if err != nil {
		return sledagent.SerialChunk{}, transport("serial history", err)
	}
	if err := answer(resp.StatusCode(), resp.Body, "serial history"); err != nil {
		return sledagent.SerialChunk{}, err
	}
	if resp.JSON200 == nil {
		return sledagent.SerialChunk{}, fmt.Errorf("serial history: no body: %w", sledagent.ErrVMMUnavailable)
	}
	return sledagent.SerialChunk{Data: resp.JSON200.Data, Start: uint64(resp.JSON200.Start), End: uint64(resp.JSON200.End)}, nil
}

func (v *v2Client) SpecBoard(ctx context.Context) (*sledagent.Resources, error) {
	resp, err := v.c.InstanceSpecGetWithResponse(ctx)
	if err != nil {
		return nil, transport("instance spec", err)
	}
	if resp.JSON404 != nil && resp.JSON404.ErrorCode == "no_instance" {
		return nil, nil
	}
	if err := answer(resp.StatusCode(), resp.Body, "instance spec"); err != nil {
		return nil, err
	}
	sv := resp.JSON200
	if sv == nil {
		return nil, fmt.Errorf("instance spec: no body: %w", sledagent.ErrVMMUnavailable)
	}
	if sv.SpecStatus != api.InstanceSpecStatusPresent || sv.Spec == nil {
		return nil, nil
	}
	b := sv.Spec.Board
	if b.Cpus < 0 || b.MemoryMb < 0 {
		return nil, fmt.Errorf("instance spec: a negative board (%d CPUs, %d MiB): %w", b.Cpus, b.MemoryMb, sledagent.ErrVMMUnavailable)
	}
	return &sledagent.Resources{CPUs: uint32(b.Cpus), MemoryMiB: uint64(b.MemoryMb)}, nil
}

func (v *v2Client) Console(ctx context.Context) (io.ReadWriteCloser, error) {
	return dialConsole(ctx, v.hc, v.base, v.token)
}
