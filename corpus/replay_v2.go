package corpus

import (
	"encoding/json"
	"fmt"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/internal/strictjson"
	v2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
)

// vmmServerV2Handlers replays the kinds of vmm-server/v2's corpus with
// today's version 2 spoke and generated types.
func vmmServerV2Handlers() map[string]Handler {
	h := map[string]Handler{
		KindSpec:                replayV2Spec,
		KindEnsureRequest:       replayV2Ensure,
		KindStateChangeRequest:  v2Request[api.InstanceStateChangeRequest]("InstanceStateChangeRequest"),
		KindExpectRequest:       v2Request[api.InstanceMigrateExpectRequest]("InstanceMigrateExpectRequest"),
		KindStateChangeResponse: v2Response[api.InstanceStateChangeResponse]("InstanceStateChangeResponse"),
		KindInstance:            v2Response[api.Instance]("Instance"),
		KindSpecView:            v2Response[api.InstanceSpecView]("InstanceSpecView"),
		KindStateView:           v2Response[api.InstanceStateView]("InstanceStateView"),
		KindMigrationStatus:     v2Response[api.MigrationStatus]("MigrationStatus"),
		KindSerialHistory:       v2Response[api.SerialHistory]("SerialHistory"),
		KindMigrationArmed:      v2Response[api.MigrationArmed]("MigrationArmed"),
		KindError:               v2Response[api.Error]("Error"),
		KindEnvelope:            replayEnvelope(v2.Version),
	}
	for k, sh := range stateHandlers() {
		h[k] = sh
	}
	return h
}

// replayV2Spec: decode with today's v2 decoder, convert to the hub and
// back, and write the canonical form.
func replayV2Spec(_ *Replayer, data, want []byte) error {
	w, err := v2.DecodeInstanceSpec(data)
	if err != nil {
		return err
	}
	got, err := v2SpecThroughHub(w)
	if err != nil {
		return err
	}
	return sameBytes(got, want)
}

func v2SpecThroughHub(w api.InstanceSpec) ([]byte, error) {
	s, err := v2.ToSpec(w)
	if err != nil {
		return nil, fmt.Errorf("to spec.Spec: %w", err)
	}
	back, err := v2.FromSpec(s)
	if err != nil {
		return nil, fmt.Errorf("from spec.Spec: %w", err)
	}
	return v2.CanonicalJSON(back)
}

// replayV2Ensure: an ensure request of either init method passes its
// schema, its spec or replacements convert, and it re-encodes canonically.
func replayV2Ensure(_ *Replayer, data, want []byte) error {
	if err := v2.ValidateJSON("InstanceEnsureRequest", data); err != nil {
		return err
	}
	var req api.InstanceEnsureRequest
	if err := strictjson.Decode(data, &req); err != nil {
		return fmt.Errorf("decode InstanceEnsureRequest: %w", err)
	}
	raw, err := req.Init.MarshalJSON()
	if err != nil {
		return err
	}
	method, err := req.Init.Discriminator()
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	switch method {
	case string(api.InstanceInitSpecMethodSpec):
		var init api.InstanceInitSpec
		if err := strictjson.Decode(raw, &init); err != nil {
			return fmt.Errorf("init (spec): %w", err)
		}
		sj, err := v2SpecThroughHub(init.Spec)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(sj, &init.Spec); err != nil {
			return err
		}
		if err := req.Init.FromInstanceInitSpec(init); err != nil {
			return err
		}
	case string(api.InstanceInitMigrationTargetMethodMigrationTarget):
		var init api.InstanceInitMigrationTarget
		if err := strictjson.Decode(raw, &init); err != nil {
			return fmt.Errorf("init (migration_target): %w", err)
		}
		if rc := init.ReplaceComponents; rc != nil {
			if _, err := v2.ReplacementsToSpec(*rc); err != nil {
				return fmt.Errorf("replacements: %w", err)
			}
			canon := v2.Canonical(api.InstanceSpec{Components: *rc}).Components
			init.ReplaceComponents = &canon
		}
		if err := req.Init.FromInstanceInitMigrationTarget(init); err != nil {
			return err
		}
	default:
		return fmt.Errorf("init: unknown method %q", method)
	}
	got, err := v2.CanonicalJSON(req)
	if err != nil {
		return err
	}
	return sameBytes(got, want)
}

// v2Request replays a small version 2 request body: it passes its schema,
// decodes strictly and re-encodes canonically.
func v2Request[T any](schema string) Handler {
	return func(_ *Replayer, data, want []byte) error {
		if err := v2.ValidateJSON(schema, data); err != nil {
			return err
		}
		var v T
		if err := strictjson.Decode(data, &v); err != nil {
			return fmt.Errorf("decode %s: %w", schema, err)
		}
		got, err := v2.CanonicalJSON(v)
		if err != nil {
			return err
		}
		return sameBytes(got, want)
	}
}

// v2Response replays a version 2 response body as a client of that version
// reads today's server: it passes the schema, decodes strictly into the
// generated client type and re-encodes to the same JSON value.
func v2Response[T any](schema string) Handler {
	return func(_ *Replayer, data, want []byte) error {
		if err := v2.ValidateJSON(schema, data); err != nil {
			return err
		}
		var v T
		if err := strictjson.Decode(data, &v); err != nil {
			return fmt.Errorf("the generated client cannot read it as %s: %w", schema, err)
		}
		got, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if eq, err := jsonEqual(got, want); err != nil || !eq {
			return fmt.Errorf("%s re-encodes to another value (%v): %s", schema, err, firstDifference(got, want))
		}
		return nil
	}
}
