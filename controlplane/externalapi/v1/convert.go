package v1

import (
	"encoding/json"
	"fmt"
	"regexp"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/control-plane/v1"
)

// Limits the contract states, checked again here so that the conversions
// stand without the validator.
const (
	maxNameLen        = 63
	maxDescriptionLen = 512
)

var (
	namePattern        = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)
	specVersionPattern = regexp.MustCompile(`^[a-z][a-z0-9-]*/v[1-9][0-9]*$`)
)

// CheckName says what is wrong with an instance's name, or nil: 1 to 63
// characters of a-z, 0-9 and -, starting with a letter, not ending with -,
// and never a UUID (which a path would read as an id).
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("is empty")
	case len(name) > maxNameLen:
		return fmt.Errorf("has %d characters; at most %d", len(name), maxNameLen)
	case !namePattern.MatchString(name):
		return fmt.Errorf("%q: want a-z, 0-9 and -, starting with a letter and not ending with -", name)
	}
	if _, err := uuid.Parse(name); err == nil {
		return fmt.Errorf("%q reads as a UUID, which names instances by id; choose a name that does not", name)
	}
	return nil
}

// ParseRef reads an instance's path reference: a UUID (in any form
// uuid.Parse reads, answered in canonical form) or a name.
func ParseRef(ref string) (string, error) {
	if id, err := uuid.Parse(ref); err == nil {
		return id.String(), nil
	}
	if err := CheckName(ref); err != nil {
		return "", &fieldError{Field: "path instance", Problem: "neither an instance's id (a UUID) nor a name: " + err.Error()}
	}
	return ref, nil
}

// CreateFromV1 converts a create request: the name is checked, the spec
// taken out of its envelope as JSON (its version checks it).
func CreateFromV1(b api.InstanceCreate) (controlplane.InstanceCreate, error) {
	var out controlplane.InstanceCreate
	if err := CheckName(b.Name); err != nil {
		return out, &fieldError{Field: "body.name", Problem: err.Error()}
	}
	if b.Description != nil {
		// Characters, as the contract's maxLength counts them (and the sled
		// agent's validator), not bytes.
		if n := utf8.RuneCountInString(*b.Description); n > maxDescriptionLen {
			return out, &fieldError{Field: "body.description", Problem: fmt.Sprintf("has %d characters; at most %d", n, maxDescriptionLen)}
		}
		out.Description = *b.Description
	}
	if !specVersionPattern.MatchString(b.Spec.SpecVersion) || len(b.Spec.SpecVersion) > 63 {
		return out, &fieldError{Field: "body.spec.spec_version", Problem: fmt.Sprintf("%q: want a version like vmm-server/v1", b.Spec.SpecVersion)}
	}
	if b.Spec.Spec == nil {
		return out, &fieldError{Field: "body.spec.spec", Problem: "is required: the spec, as its version writes it"}
	}
	spec, err := json.Marshal(b.Spec.Spec)
	if err != nil {
		return out, &fieldError{Field: "body.spec.spec", Problem: err.Error()}
	}
	out.Name, out.SpecVersion, out.Spec = b.Name, b.Spec.SpecVersion, spec
	out.Start = b.Start != nil && *b.Start
	return out, nil
}

// InstanceToV1 converts an instance's view to the wire. Its spec must be a
// JSON object (the control plane stored it so).
func InstanceToV1(v controlplane.InstanceView) (api.Instance, error) {
	in := v.Instance
	spec := map[string]any{}
	if err := json.Unmarshal(in.Spec, &spec); err != nil {
		return api.Instance{}, fmt.Errorf("instance %s: its stored spec is not a JSON object: %w", in.ID, err)
	}
	out := api.Instance{
		Id:          in.ID,
		Name:        in.Name,
		Description: in.Description,
		Spec:        api.SpecEnvelope{SpecVersion: in.SpecVersion, Spec: spec},
		Resources:   resourcesToV1(in.Resources),
		State:       api.InstanceState(v.State),
		Generation:  int64(in.Runtime.Gen),
		TimeCreated: in.TimeCreated,
		TimeUpdated: in.Runtime.TimeUpdated,
	}
	if in.Runtime.Failure != nil {
		out.FailureReason = failureToV1(*in.Runtime.Failure)
	}
	if vm := v.ActiveVmm; vm != nil {
		a := &api.ActiveVmm{Id: vm.ID, SledId: vm.SledID, State: api.VmmState(vm.Runtime.State.Name())}
		if vm.Address != "" {
			addr := vm.Address
			a.Address = &addr
		}
		if r, failed := vm.Runtime.State.FailureReason(); failed {
			a.FailureReason = failureToV1(r)
		}
		out.ActiveVmm = a
	}
	if m := v.Migration; m != nil {
		out.Migration = &api.InstanceMigration{Id: m.ID, SourceVmmId: m.SourceVmm, TargetVmmId: m.TargetVmm,
			SourceState: api.MigrationState(m.Source.State), TargetState: api.MigrationState(m.Target.State), TimeCreated: m.TimeCreated}
	}
	return out, nil
}

// failureToV1 converts a failure reason; a kind the contract does not list
// is answered as unknown, its name kept in the message.
func failureToV1(r model.FailureReason) *api.FailureReason {
	k := api.FailureReasonKind(r.Kind)
	msg := r.Message
	if !k.Valid() {
		k = api.FailureReasonKindUnknown
		msg = string(r.Kind) + ": " + msg
	}
	return &api.FailureReason{Kind: k, Message: msg}
}

func resourcesToV1(r model.Resources) api.Resources {
	return api.Resources{Cpus: int64(r.CPUs), MemoryMib: int64(r.MemoryMiB)}
}

// SagaToV1 converts a saga's view to the wire.
func SagaToV1(s controlplane.SagaView) api.Saga {
	out := api.Saga{Id: s.ID, Kind: api.SagaKind(s.Kind), InstanceId: s.InstanceID, State: api.SagaState(s.State),
		Steps: make([]api.SagaStep, 0, len(s.Steps)), TimeCreated: s.TimeCreated, TimeUpdated: s.TimeUpdated}
	for _, st := range s.Steps {
		out.Steps = append(out.Steps, api.SagaStep{Name: st.Name, State: api.SagaStepState(st.State)})
	}
	if s.Error != "" {
		e := errText(errString(s.Error))
		out.Error = &e
	}
	if s.ErrorCode != "" {
		c := api.SagaErrorCode(s.ErrorCode)
		if !c.Valid() {
			c = api.SagaErrorCodeInternal // a code newer than this version's contract
		}
		out.ErrorCode = &c
	}
	return out
}

type errString string

func (e errString) Error() string { return string(e) }

// SledToV1 converts a sled's view to the wire.
func SledToV1(v controlplane.SledView) api.Sled {
	s := v.Sled
	versions := append([]string{}, s.APIVersions...)
	return api.Sled{Id: s.ID, Address: s.Address, ApiVersions: versions, State: api.SledState(s.State),
		Capacity: resourcesToV1(s.Capacity), Reserved: resourcesToV1(v.Reserved), Vmms: int64(v.Vmms),
		TimeCreated: s.TimeCreated, LastContact: s.LastContact}
}
