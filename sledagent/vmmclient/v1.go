package vmmclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	"github.com/wagglevm/waggle/spec"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
)

// v1Client drives a VMM server through version 1 of its API.
type v1Client struct {
	c     *api.ClientWithResponses
	base  string // http://host:port/v1
	hc    *http.Client
	token string
}

func newV1(base string, hc *http.Client, token string) (sledagent.VMMClient, error) {
	c, err := api.NewClientWithResponses(base, api.WithHTTPClient(hc), api.WithRequestEditorFn(httpkit.BearerAuth(token)))
	if err != nil {
		return nil, err
	}
	return &v1Client{c: c, base: base, hc: hc, token: token}, nil
}

func (v *v1Client) Ensure(ctx context.Context, p sledagent.Properties, s *spec.Spec, m *sledagent.MigrationTarget) error {
	desc := p.Description
	props := api.InstanceProperties{Id: p.ID, Name: p.Name, Description: &desc}
	var body api.InstanceEnsureRequest
	switch {
	case s != nil:
		w, err := specv1.FromSpec(*s)
		if err != nil {
			// The VMM server's version cannot express the spec.
			return &sledagent.RefusedError{Status: http.StatusBadRequest, Code: "not_expressible",
				Message: "the VMM server's API v1 cannot express the spec: " + err.Error()}
		}
		if err := body.FromInstanceEnsureFromSpec(api.InstanceEnsureFromSpec{Properties: props, Spec: w}); err != nil {
			return err
		}
	case m != nil:
		mig := api.InstanceMigrateInitiateRequest{MigrationId: m.MigrationID, SrcAddr: m.SrcAddr, Secret: m.Secret}
		if len(m.Replace) > 0 {
			if m.ReplaceVersion != specv1.Version {
				return &sledagent.RefusedError{Status: http.StatusBadRequest, Code: "not_expressible",
					Message: fmt.Sprintf("the VMM server speaks %s; the replacements are %s", specv1.Version, m.ReplaceVersion)}
			}
			rc := map[string]api.Component{}
			for k, raw := range m.Replace {
				var c api.Component
				if err := json.Unmarshal(raw, &c); err != nil {
					return fmt.Errorf("replacement %s: %w", k, err)
				}
				rc[k] = c
			}
			mig.ReplaceComponents = &rc
		}
		if err := body.FromInstanceEnsureAsMigrationTarget(api.InstanceEnsureAsMigrationTarget{Properties: props, Migrate: mig}); err != nil {
			return err
		}
	}
	resp, err := v.c.InstanceEnsureWithResponse(ctx, body)
	if err != nil {
		return transport("ensure", err)
	}
	return answer(resp.StatusCode(), resp.Body, "ensure")
}

func (v *v1Client) Observe(ctx context.Context, gen uint64, wait time.Duration) (sledagent.Observation, error) {
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
	if sv.FailureReason != nil {
		o.FailureReason = *sv.FailureReason
	}
	if sv.History != nil {
		for _, h := range *sv.History {
			tr := sledagent.Transition{State: sledagent.VmmState(h.State)}
			if h.FailureReason != nil {
				tr.FailureReason = *h.FailureReason
			}
			o.History = append(o.History, tr)
		}
	}
	o.MigrationIn = progressFromV1(sv.Migration.MigrationIn)
	o.MigrationOut = progressFromV1(sv.Migration.MigrationOut)
	return o, nil
}

func progressFromV1(p *api.MigrationProgress) *sledagent.MigrationProgress {
	if p == nil {
		return nil
	}
	return &sledagent.MigrationProgress{ID: p.MigrationId, Phase: string(p.Phase)}
}

func (v *v1Client) Request(ctx context.Context, r sledagent.Requested) error {
	resp, err := v.c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequested(r)})
	if err != nil {
		return transport("state change", err)
	}
	return answer(resp.StatusCode(), resp.Body, "state change")
}

func (v *v1Client) Arm(ctx context.Context, a sledagent.MigrationArm) (sledagent.MigrationArmed, error) {
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

func (v *v1Client) Serial(ctx context.Context, q sledagent.SerialQuery) (sledagent.SerialChunk, error) {
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

func (v *v1Client) SpecBoard(ctx context.Context) (*sledagent.Resources, error) {
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

func (v *v1Client) Console(ctx context.Context) (io.ReadWriteCloser, error) {
	return dialConsole(ctx, v.hc, v.base, v.token)
}
