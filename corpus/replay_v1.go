package corpus

import (
	"bytes"
	"encoding/json"
	"fmt"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/strictjson"
	"github.com/wagglevm/waggle/versions"
	v1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
)

// vmmServerV1Handlers replays the kinds of vmm-server/v1's corpus with
// today's version 1 spoke and generated types.
func vmmServerV1Handlers() map[string]Handler {
	h := map[string]Handler{
		KindSpec:               replayV1Spec,
		KindEnsureRequest:      replayV1Ensure,
		KindStateChangeRequest: canonicalRequest[api.InstanceStateChangeRequest]("InstanceStateChangeRequest"),
		KindExpectRequest:      canonicalRequest[api.InstanceMigrateExpectRequest]("InstanceMigrateExpectRequest"),
		KindInstance:           response[api.Instance]("Instance"),
		KindSpecView:           response[api.InstanceSpecView]("InstanceSpecView"),
		KindStateView:          response[api.InstanceStateView]("InstanceStateView"),
		KindMigrationStatus:    response[api.MigrationStatus]("MigrationStatus"),
		KindSerialHistory:      response[api.SerialHistory]("SerialHistory"),
		KindMigrationArmed:     response[api.MigrationArmed]("MigrationArmed"),
		KindError:              response[api.Error]("Error"),
		KindEnvelope:           replayEnvelope(v1.Version),
	}
	for k, sh := range stateHandlers() {
		h[k] = sh
	}
	return h
}

// sameBytes fails unless got is want, showing both when they are short.
func sameBytes(got, want []byte) error {
	if bytes.Equal(got, want) {
		return nil
	}
	return fmt.Errorf("re-encodes to other bytes: %s", firstDifference(got, want))
}

// replayV1Spec: decode with today's v1 decoder, convert to the hub and
// back, and write the canonical form.
func replayV1Spec(_ *Replayer, data, want []byte) error {
	w, err := v1.DecodeInstanceSpec(data)
	if err != nil {
		return err
	}
	got, err := v1SpecThroughHub(w)
	if err != nil {
		return err
	}
	return sameBytes(got, want)
}

func v1SpecThroughHub(w api.InstanceSpec) ([]byte, error) {
	s, err := v1.ToSpec(w)
	if err != nil {
		return nil, fmt.Errorf("to spec.Spec: %w", err)
	}
	back, err := v1.FromSpec(s)
	if err != nil {
		return nil, fmt.Errorf("from spec.Spec: %w", err)
	}
	return v1.CanonicalJSON(back)
}

// replayV1Ensure: an ensure request of either branch decodes, its spec or
// replacements convert, and it re-encodes canonically.
func replayV1Ensure(_ *Replayer, data, want []byte) error {
	if err := v1.ValidateJSON("InstanceEnsureRequest", data); err != nil {
		return err
	}
	var fromSpec api.InstanceEnsureFromSpec
	if strictjson.Decode(data, &fromSpec) == nil {
		sj, err := v1SpecThroughHub(fromSpec.Spec)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(sj, &fromSpec.Spec); err != nil {
			return err
		}
		got, err := v1.CanonicalJSON(fromSpec)
		if err != nil {
			return err
		}
		return sameBytes(got, want)
	}
	var target api.InstanceEnsureAsMigrationTarget
	if err := strictjson.Decode(data, &target); err != nil {
		return fmt.Errorf("neither branch of InstanceEnsureRequest decodes: %w", err)
	}
	if rc := target.Migrate.ReplaceComponents; rc != nil {
		if _, err := v1.ReplacementsToSpec(*rc); err != nil {
			return fmt.Errorf("replacements: %w", err)
		}
		canon := v1.Canonical(api.InstanceSpec{Components: *rc}).Components
		target.Migrate.ReplaceComponents = &canon
	}
	got, err := v1.CanonicalJSON(target)
	if err != nil {
		return err
	}
	return sameBytes(got, want)
}

// canonicalRequest replays a small request body: it passes its schema,
// decodes strictly and re-encodes canonically.
func canonicalRequest[T any](schema string) Handler {
	return func(_ *Replayer, data, want []byte) error {
		if err := v1.ValidateJSON(schema, data); err != nil {
			return err
		}
		var v T
		if err := strictjson.Decode(data, &v); err != nil {
			return fmt.Errorf("decode %s: %w", schema, err)
		}
		got, err := v1.CanonicalJSON(v)
		if err != nil {
			return err
		}
		return sameBytes(got, want)
	}
}

// response replays a response body as an old client reads today's server:
// it passes the schema, decodes strictly into the generated client type
// (an unknown field fails) and re-encodes to the same JSON value.
func response[T any](schema string) Handler {
	return func(_ *Replayer, data, want []byte) error {
		if err := v1.ValidateJSON(schema, data); err != nil {
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

// replayEnvelope: today's migration target accepts the envelope
// (versions.Unwrap), it is of the version it was written in, and wrapping
// the spec again writes the same bytes.
func replayEnvelope(version string) Handler {
	return func(_ *Replayer, data, want []byte) error {
		s, name, err := versions.Unwrap(data)
		if err != nil {
			return fmt.Errorf("today's migration target refuses it: %w", err)
		}
		if name != version {
			return fmt.Errorf("spec_version %q in the corpus of %s", name, version)
		}
		env, err := versions.Wrap(s, []string{name})
		if err != nil {
			return err
		}
		got, err := env.Marshal()
		if err != nil {
			return err
		}
		return sameBytes(got, want)
	}
}
