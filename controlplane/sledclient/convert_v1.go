package sledclient

import (
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
)

// vmmFromV1 converts the agent's answer for VMM id: the VMM server's
// address and the VMM's state.
func vmmFromV1(id uuid.UUID, v api.Vmm) (string, model.SledVmmState, error) {
	if v.VmmId != id {
		return "", model.SledVmmState{}, fmt.Errorf("vmm_id: %s, not the VMM asked for", v.VmmId)
	}
	if err := checkAddr(v.Addr); err != nil {
		return "", model.SledVmmState{}, fmt.Errorf("addr: %w", err)
	}
	st, err := stateFromV1(v.State)
	if err != nil {
		return "", model.SledVmmState{}, fmt.Errorf("state.%w", err)
	}
	return v.Addr, st, nil
}

// stateFromV1 converts a v1 SledVmmState to the domain's, refusing
// anything the contract does not allow: a state it does not list, a
// failed state without its reason (or a reason beside another state), a
// generation below 1, a missing time. A failure kind this control plane
// does not know (a newer agent's) becomes model.FailureUnknown, its own
// kind kept in the message. Errors name the field.
func stateFromV1(w api.SledVmmState) (model.SledVmmState, error) {
	var out model.SledVmmState
	if !w.State.Valid() {
		return out, fmt.Errorf("state: %q is not a VMM state of sled-agent v1", w.State)
	}
	var reason *model.FailureReason
	if w.FailureReason != nil {
		r, err := failureFromV1(*w.FailureReason)
		if err != nil {
			return out, fmt.Errorf("failure_reason.%w", err)
		}
		reason = &r
	}
	state, err := model.ParseVmmState(string(w.State), reason)
	if err != nil {
		return out, fmt.Errorf("state: %w", err)
	}
	if w.Gen < int64(model.FirstGeneration) {
		return out, fmt.Errorf("gen: %d is below %d", w.Gen, model.FirstGeneration)
	}
	if w.TimeUpdated.IsZero() {
		return out, fmt.Errorf("time_updated: missing")
	}
	out.Vmm = model.VmmRuntime{State: state, Gen: model.Generation(w.Gen), TimeUpdated: w.TimeUpdated}
	if out.MigrationIn, err = migrationFromV1(w.MigrationIn); err != nil {
		return model.SledVmmState{}, fmt.Errorf("migration_in.%w", err)
	}
	if out.MigrationOut, err = migrationFromV1(w.MigrationOut); err != nil {
		return model.SledVmmState{}, fmt.Errorf("migration_out.%w", err)
	}
	return out, nil
}

// failureFromV1 converts a failure reason. The kinds v1 lists are the
// domain's kinds of the same name; any other (a newer agent's, or one
// only the control plane gives) becomes model.FailureUnknown.
func failureFromV1(w api.VmmFailureReason) (model.FailureReason, error) {
	if w.Kind == "" {
		return model.FailureReason{}, fmt.Errorf("kind: missing")
	}
	msg := clean(w.Message)
	if w.Kind.Valid() {
		return model.FailureReason{Kind: model.FailureKind(w.Kind), Message: msg}, nil
	}
	return model.FailureReason{Kind: model.FailureUnknown, Message: fmt.Sprintf("kind %q: %s", clean(string(w.Kind)), msg)}, nil
}

// clean makes an agent's text storable: PostgreSQL's TEXT holds no NUL.
func clean(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }

// migrationFromV1 converts one side of a migration (nil for none).
func migrationFromV1(w *api.MigrationRuntimeState) (*model.MigrationObservation, error) {
	if w == nil {
		return nil, nil
	}
	if w.MigrationId == uuid.Nil {
		return nil, fmt.Errorf("migration_id: missing")
	}
	st, err := model.ParseMigrationState(string(w.State))
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if w.Gen < int64(model.FirstGeneration) {
		return nil, fmt.Errorf("gen: %d is below %d", w.Gen, model.FirstGeneration)
	}
	if w.TimeUpdated.IsZero() {
		return nil, fmt.Errorf("time_updated: missing")
	}
	return &model.MigrationObservation{ID: w.MigrationId,
		MigrationRuntime: model.MigrationRuntime{State: st, Gen: model.Generation(w.Gen), TimeUpdated: w.TimeUpdated}}, nil
}
