package corpus

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	cpi "github.com/wagglevm/waggle/gen/control-plane-internal/v1"
	sa "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/internal/oapierr"
	"github.com/wagglevm/waggle/internal/strictjson"
)

// Kinds of the sled-agent and control-plane-internal corpora, named after
// the contract schema each holds.
const (
	KindVmmEnsureRequest       = "vmm-ensure-request"
	KindVmmStateChangeRequest  = "vmm-state-change-request"
	KindVmmStateChangeResponse = "vmm-state-change-response"
	KindSledVmmState           = "sled-vmm-state"
	KindVmm                    = "vmm"
	KindVmmList                = "vmm-list"
	KindInventory              = "inventory"
	KindSledRegistration       = "sled-registration"
)

var (
	vmmID  = uuid.MustParse("2f1c7a9e-4b3d-4e5f-8a6b-7c8d9e0f1a2b")
	sledID = uuid.MustParse("5b0e9c3a-1d7f-4e2a-8c6b-0f1e2d3c4b5a")
)

// synthSledAgentV1 writes every synthesized file of sled-agent/v1: both
// branches of the registration, each state change request, states with
// every optional field, and the error of each code.
func synthSledAgentV1() (fileSet, error) {
	set := fileSet{}
	desc := "a ticker"
	props := sa.InstanceProperties{Id: instanceID, Name: "ticker", Description: &desc}
	var fromSpec, asTarget sa.VmmEnsureRequest
	if err := fromSpec.FromVmmEnsureFromSpec(sa.VmmEnsureFromSpec{Instance: props, Spec: sa.SpecEnvelope{
		SpecVersion: "vmm-server/v1",
		Spec: map[string]any{
			"board": map[string]any{"cpus": 2, "memory_mb": 256, "chipset": "i440fx"},
			"boot":  map[string]any{"image": "ticker", "cmdline": "pace_ms=1000"},
			"components": map[string]any{
				"com1": map[string]any{"type": "serial_port", "num": "com1"},
			},
		}}}); err != nil {
		return nil, err
	}
	rc := map[string]map[string]any{"disk0-be": {"type": "file_storage_backend", "path": "disks/ticker.img", "readonly": false, "block_size": 4096}}
	if err := asTarget.FromVmmEnsureAsMigrationTarget(sa.VmmEnsureAsMigrationTarget{Instance: props, Migrate: sa.VmmMigrationTarget{
		SrcAddr: "10.0.0.7:12500", MigrationId: migrationID, Secret: secret,
		Resources: sa.Resources{Cpus: 2, MemoryMib: 256}, ReplaceComponents: &rc}}); err != nil {
		return nil, err
	}
	for name, v := range map[string]any{"from-spec": fromSpec, "migration-target": asTarget} {
		if err := set.addJSON(KindVmmEnsureRequest, name, v); err != nil {
			return nil, err
		}
	}
	ttl := int32(300)
	sec := secret
	for _, r := range []sa.VmmStateRequested{sa.VmmStateRequestedRun, sa.VmmStateRequestedStop, sa.VmmStateRequestedReboot} {
		if err := set.addJSON(KindVmmStateChangeRequest, string(r), sa.VmmStateChangeRequest{Requested: r}); err != nil {
			return nil, err
		}
	}
	mid := migrationID
	if err := set.addJSON(KindVmmStateChangeRequest, "migrate-source", sa.VmmStateChangeRequest{
		Requested: sa.VmmStateRequestedMigrateSource, MigrationId: &mid, Secret: &sec, TtlSeconds: &ttl}); err != nil {
		return nil, err
	}
	mig := func(s sa.MigrationState, gen int64) *sa.MigrationRuntimeState {
		return &sa.MigrationRuntimeState{MigrationId: migrationID, State: s, Gen: gen, TimeUpdated: someTime}
	}
	states := map[string]sa.SledVmmState{
		"running": {State: sa.VmmStateRunning, Gen: 3, TimeUpdated: someTime},
		"failed-process-exited": {State: sa.VmmStateFailed, Gen: 4, TimeUpdated: someTime,
			FailureReason: &sa.VmmFailureReason{Kind: sa.VmmFailureKindVmmProcessExited, Message: "the VMM process (pid 4242) was killed by signal 9 (killed)"}},
		"failed-vmm-failed": {State: sa.VmmStateFailed, Gen: 5, TimeUpdated: someTime,
			FailureReason: &sa.VmmFailureReason{Kind: sa.VmmFailureKindVmmFailed, Message: "triple fault"}},
		"failed-exceeds-reservation": {State: sa.VmmStateFailed, Gen: 3, TimeUpdated: someTime, MigrationIn: mig(sa.MigrationStateFailed, 2),
			FailureReason: &sa.VmmFailureReason{Kind: sa.VmmFailureKindExceedsReservation,
				Message: "the spec from the migration source needs 32 CPUs and 65536 MiB; the VMM reserved 1 CPUs and 64 MiB"}},
		"migrated-out": {State: sa.VmmStateDestroyed, Gen: 6, TimeUpdated: someTime, MigrationOut: mig(sa.MigrationStateCompleted, 3)},
		"migrating-in": {State: sa.VmmStateMigrating, Gen: 2, TimeUpdated: someTime, MigrationIn: mig(sa.MigrationStateInProgress, 2)},
		"both-migrations": {State: sa.VmmStateRunning, Gen: 9, TimeUpdated: someTime,
			MigrationIn: mig(sa.MigrationStateCompleted, 3), MigrationOut: mig(sa.MigrationStateFailed, 2)},
		"pending": {State: sa.VmmStateCreating, Gen: 1, TimeUpdated: someTime, MigrationIn: mig(sa.MigrationStatePending, 1)},
	}
	for _, name := range sortedKeys(states) {
		if err := set.addJSON(KindSledVmmState, name, states[name]); err != nil {
			return nil, err
		}
	}
	vmm := sa.Vmm{VmmId: vmmID, Instance: props, Addr: "127.0.0.1:12500", Resources: sa.Resources{Cpus: 2, MemoryMib: 256}, State: states["running"]}
	exp := someTime.Add(300e9)
	steps := []struct {
		kind, name string
		v          any
	}{
		{KindVmm, "running", vmm},
		{KindVmmList, "one", sa.VmmList{Vmms: []sa.Vmm{vmm}}},
		{KindVmmList, "empty", sa.VmmList{Vmms: []sa.Vmm{}}},
		{KindInventory, "sled", sa.Inventory{SledId: sledID, Cpus: sa.Capacity{Total: 16, Reserved: 2, Free: 14},
			MemoryMib: sa.Capacity{Total: 65536, Reserved: 256, Free: 65280}, Vmms: 1}},
		{KindVmmStateChangeResponse, "armed", sa.VmmStateChangeResponse{State: states["running"],
			Migration: &sa.MigrationArmed{MigrationId: migrationID, ExpiresAt: exp, Secret: &sec}}},
		{KindVmmStateChangeResponse, "plain", sa.VmmStateChangeResponse{State: states["running"]}},
		{KindSerialHistory, "ticks", sa.SerialHistory{Data: []byte("tick 1\ntick 2\n"), Start: 0, End: 14}},
	}
	for _, s := range steps {
		if err := set.addJSON(s.kind, s.name, s.v); err != nil {
			return nil, err
		}
	}
	for _, c := range []string{"invalid_request", "invalid_spec", "unsupported_spec_version", "unauthorized", "no_such_vmm",
		"vmm_exists", "vmm_not_terminal", "insufficient_capacity", "no_free_port", "vmm_refused", "vmm_unavailable", "not_upgraded",
		"not_found", "method_not_allowed", "body_too_large", "unsupported_media_type", "request_timeout", "too_many_connections",
		"internal"} {
		e := sa.Error{ErrorCode: c, Message: "corpus: an example message for " + c, RequestId: requestID(c)}
		if err := set.addJSON(KindError, c, e); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// synthControlPlaneInternalV1 writes the synthesized files of
// control-plane-internal/v1: the sled's registration and the errors. The
// doorbell has no body.
func synthControlPlaneInternalV1() (fileSet, error) {
	set := fileSet{}
	if err := set.addJSON(KindSledRegistration, "sled", cpi.SledRegistration{Address: "10.0.0.7:12300",
		ApiVersions: []string{"v1"}, Capacity: cpi.SledCapacity{Cpus: 16, MemoryMib: 65536}}); err != nil {
		return nil, err
	}
	for _, c := range []string{"invalid_request", "unauthorized", "no_such_vmm", "not_found", "method_not_allowed", "body_too_large",
		"unsupported_media_type", "request_timeout", "too_many_connections", "unavailable", "internal"} {
		e := cpi.Error{ErrorCode: c, Message: "corpus: an example message for " + c, RequestId: requestID(c)}
		if err := set.addJSON(KindError, c, e); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// sledAgentV1Handlers replays sled-agent/v1's kinds with today's contract
// and generated types.
func sledAgentV1Handlers() map[string]Handler {
	doc := sync.OnceValues(sa.GetSwagger) // parsed once per replay, not once per file
	return map[string]Handler{
		KindVmmEnsureRequest:       contractObject[sa.VmmEnsureRequest](doc, "VmmEnsureRequest"),
		KindVmmStateChangeRequest:  contractObject[sa.VmmStateChangeRequest](doc, "VmmStateChangeRequest"),
		KindVmmStateChangeResponse: contractObject[sa.VmmStateChangeResponse](doc, "VmmStateChangeResponse"),
		KindSledVmmState:           contractObject[sa.SledVmmState](doc, "SledVmmState"),
		KindVmm:                    contractObject[sa.Vmm](doc, "Vmm"),
		KindVmmList:                contractObject[sa.VmmList](doc, "VmmList"),
		KindInventory:              contractObject[sa.Inventory](doc, "Inventory"),
		KindSerialHistory:          contractObject[sa.SerialHistory](doc, "SerialHistory"),
		KindError:                  contractObject[sa.Error](doc, "Error"),
	}
}

// controlPlaneInternalV1Handlers replays control-plane-internal/v1's kinds.
func controlPlaneInternalV1Handlers() map[string]Handler {
	doc := sync.OnceValues(cpi.GetSwagger)
	return map[string]Handler{
		KindSledRegistration: contractObject[cpi.SledRegistration](doc, "SledRegistration"),
		KindError:            contractObject[cpi.Error](doc, "Error"),
	}
}

// contractObject replays an object of a contract: it passes the named
// schema of today's document, decodes strictly into today's generated type
// (an unknown field fails) and re-encodes to the same JSON value.
func contractObject[T any](doc func() (*openapi3.T, error), schema string) Handler {
	return func(_ *Replayer, data, want []byte) error {
		d, err := doc()
		if err != nil {
			return err
		}
		ref := d.Components.Schemas[schema]
		if ref == nil || ref.Value == nil {
			return fmt.Errorf("today's contract has no schema %s", schema)
		}
		var value any
		if err := json.Unmarshal(data, &value); err != nil {
			return fmt.Errorf("decode %s: %w", schema, err)
		}
		if err := ref.Value.VisitJSON(value, openapi3.MultiErrors()); err != nil {
			return fmt.Errorf("%s: %s", schema, oapierr.Describe(err))
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

// requestID is the request id an error of code c carries, as the servers
// make them: 16 hex digits, or "-" for a connection refused before it was
// read (too_many_connections).
func requestID(c string) string {
	if c == "too_many_connections" {
		return "-"
	}
	return "4f1c2a9e7b3d5e60"
}
