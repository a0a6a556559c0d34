// Package versions lists the spokes of the spec hub: every version of the
// vmm-server contract whose InstanceSpec converts to and from spec.Spec, and
// the migration envelope that carries a spec between servers in one of them.
//
// The envelope's shape never changes: {"spec_version": <name>, "spec": <that
// version's InstanceSpec>}. New versions only add names.
package versions

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wagglevm/waggle/internal/strictjson"
	"github.com/wagglevm/waggle/spec"
	v1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	v2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
)

// Spoke is one wire version of the spec.
type Spoke struct {
	// Name identifies the version in envelopes, e.g. "vmm-server/v1".
	Name string
	// Encode converts a spec into this version's canonical JSON; it fails
	// when the version cannot express the spec.
	Encode func(spec.Spec) ([]byte, error)
	// Decode checks untrusted JSON against this version's schema and rules
	// and converts it into a spec.
	Decode func([]byte) (spec.Spec, error)
}

// spokes lists every version, newest first.
var spokes = []Spoke{
	{
		Name: v2.Version,
		Encode: func(s spec.Spec) ([]byte, error) {
			w, err := v2.FromSpec(s)
			if err != nil {
				return nil, err
			}
			return v2.CanonicalJSON(w)
		},
		Decode: func(data []byte) (spec.Spec, error) {
			w, err := v2.DecodeInstanceSpec(data)
			if err != nil {
				return spec.Spec{}, err
			}
			return v2.ToSpec(w)
		},
	},
	{
		Name: v1.Version,
		Encode: func(s spec.Spec) ([]byte, error) {
			w, err := v1.FromSpec(s)
			if err != nil {
				return nil, err
			}
			return v1.CanonicalJSON(w)
		},
		Decode: func(data []byte) (spec.Spec, error) {
			w, err := v1.DecodeInstanceSpec(data)
			if err != nil {
				return spec.Spec{}, err
			}
			return v1.ToSpec(w)
		},
	},
}

// Names returns every version name, newest first.
func Names() []string {
	out := make([]string, len(spokes))
	for i, s := range spokes {
		out[i] = s.Name
	}
	return out
}

// Lookup returns the spoke with the given name.
func Lookup(name string) (Spoke, bool) {
	for _, s := range spokes {
		if s.Name == name {
			return s, true
		}
	}
	return Spoke{}, false
}

// Envelope carries a spec between servers in a named version.
type Envelope struct {
	SpecVersion string          `json:"spec_version"`
	Spec        json.RawMessage `json:"spec"`
}

// MaxEnvelopeBytes bounds an encoded envelope.
const MaxEnvelopeBytes = 1 << 20

// NoCommonVersionError says that no version both sides accept can express
// the spec. It lists why each candidate failed.
type NoCommonVersionError struct {
	Accepted []string
	Reasons  []string
}

func (e *NoCommonVersionError) Error() string {
	if len(e.Reasons) == 0 {
		return fmt.Sprintf("no spec version in common: the peer accepts %s, we speak %s",
			strings.Join(e.Accepted, ", "), strings.Join(Names(), ", "))
	}
	return "no spec version the peer accepts can express the spec: " + strings.Join(e.Reasons, "; ")
}

// Wrap encodes s in the newest version that accepted lists and that can
// express it, trying newest first. It never falls back to a lossy
// conversion: when none can express s, it fails naming why.
func Wrap(s spec.Spec, accepted []string) (Envelope, error) {
	var reasons []string
	for _, sp := range spokes {
		if !slices.Contains(accepted, sp.Name) {
			continue
		}
		data, err := sp.Encode(s)
		if err != nil {
			reasons = append(reasons, sp.Name+": "+err.Error())
			continue
		}
		return Envelope{SpecVersion: sp.Name, Spec: data}, nil
	}
	return Envelope{}, &NoCommonVersionError{Accepted: accepted, Reasons: reasons}
}

// Marshal encodes an envelope.
func (e Envelope) Marshal() ([]byte, error) { return json.Marshal(e) }

// Unwrap decodes untrusted envelope bytes and converts the spec they carry,
// checking it against its version's schema and the hub's rules.
func Unwrap(data []byte) (spec.Spec, string, error) {
	if len(data) > MaxEnvelopeBytes {
		return spec.Spec{}, "", fmt.Errorf("envelope is %d bytes, more than %d", len(data), MaxEnvelopeBytes)
	}
	var env Envelope
	if err := strictjson.Decode(data, &env); err != nil {
		return spec.Spec{}, "", fmt.Errorf("decode envelope: %w", err)
	}
	if env.SpecVersion == "" || len(env.Spec) == 0 {
		return spec.Spec{}, "", errors.New("decode envelope: spec_version and spec are required")
	}
	sp, ok := Lookup(env.SpecVersion)
	if !ok {
		return spec.Spec{}, env.SpecVersion, fmt.Errorf("envelope: unknown spec_version %q (known: %s)", env.SpecVersion, strings.Join(Names(), ", "))
	}
	s, err := sp.Decode(env.Spec)
	if err != nil {
		return spec.Spec{}, env.SpecVersion, fmt.Errorf("envelope %s: %w", env.SpecVersion, err)
	}
	return s, env.SpecVersion, nil
}
