package corpus

import (
	"encoding/base64"
	"encoding/json"
	"sync"

	"github.com/google/uuid"

	cp "github.com/wagglevm/waggle/gen/control-plane/v1"
)

// Kinds of the control-plane (external API) corpus, named after the
// contract schema each holds.
const (
	KindInstanceCreate  = "instance-create"
	KindInstanceMigrate = "instance-migrate"
	KindInstanceList    = "instance-list"
	KindInstanceCreated = "instance-created"
	KindSaga            = "saga"
	KindSled            = "sled"
	KindSledList        = "sled-list"
)

var (
	sagaID     = uuid.MustParse("9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b")
	targetVmm  = uuid.MustParse("3a2b1c0d-9e8f-4a7b-8c6d-5e4f3a2b1c0d")
	targetSled = uuid.MustParse("7a3c9e1d-2b4f-4a6e-8d0c-1e2f3a4b5c6d")
)

// synthControlPlaneV1 writes every synthesized file of control-plane/v1:
// the create and migrate requests, instances in each visible state with
// every optional field, sagas in each state, sleds, and the error of each
// code.
func synthControlPlaneV1() (fileSet, error) {
	set := fileSet{}
	desc := "a ticker"
	start := true
	spec := cp.SpecEnvelope{SpecVersion: "vmm-server/v1", Spec: map[string]any{
		"board": map[string]any{"cpus": 2, "memory_mb": 256, "chipset": "i440fx"},
		"boot":  map[string]any{"image": "ticker", "cmdline": "pace_ms=1000"},
		"components": map[string]any{
			"com1": map[string]any{"type": "serial_port", "num": "com1"},
		},
	}}
	sled := targetSled
	// Every saga lists each step of its kind, in order, as the control
	// plane does: pending until it runs.
	kindSteps := map[cp.SagaKind][]string{
		cp.SagaKindInstanceStart:   {"lock", "reserve", "point", "register", "run", "wait_running", "unlock"},
		cp.SagaKindInstanceStop:    {"lock", "request_stop", "wait_stopped", "unlock"},
		cp.SagaKindInstanceReboot:  {"lock", "request_reboot", "wait_running", "unlock"},
		cp.SagaKindInstanceMigrate: {"lock", "reserve_target", "create_migration", "arm_source", "register_target", "wait_handoff", "unlock"},
		cp.SagaKindInstanceDelete:  {"lock", "destroy", "unlock"},
	}
	const (
		pending = cp.SagaStepStatePending
		done    = cp.SagaStepStateDone
		failed  = cp.SagaStepStateFailed
		undone  = cp.SagaStepStateUndone
	)
	saga := func(kind cp.SagaKind, state cp.SagaState, states ...cp.SagaStepState) cp.Saga {
		out := cp.Saga{Id: sagaID, Kind: kind, InstanceId: instanceID, State: state, Steps: []cp.SagaStep{},
			TimeCreated: someTime, TimeUpdated: someTime}
		for i, name := range kindSteps[kind] {
			st := pending
			if i < len(states) {
				st = states[i]
			}
			out.Steps = append(out.Steps, cp.SagaStep{Name: name, State: st})
		}
		return out
	}
	why := "step register_target: the spec is not valid: register VMM 3a2b1c0d-9e8f-4a7b-8c6d-5e4f3a2b1c0d: " +
		"the sled agent at 10.0.0.8:12300 answered 409 vmm_refused: the VMM server refused (400 vm_error): vm: vmm: new: kvm: open /dev/kvm: no such file or directory"
	stuck := "step run: the sled agent at 10.0.0.7:12300 does not answer; undo register: the sled agent at 10.0.0.7:12300 does not answer"
	unwound := saga(cp.SagaKindInstanceMigrate, cp.SagaStateUnwound, undone, undone, undone, undone, failed)
	unwound.Error, unwound.ErrorCode = &why, ptr(cp.SagaErrorCodeInvalidSpec)
	stuckSaga := saga(cp.SagaKindInstanceStart, cp.SagaStateStuck, done, done, done, done, failed)
	stuckSaga.Error, stuckSaga.ErrorCode = &stuck, ptr(cp.SagaErrorCodeSledUnavailable)
	sagas := map[string]cp.Saga{
		"running":   saga(cp.SagaKindInstanceStart, cp.SagaStateRunning, done, done, done),
		"done":      saga(cp.SagaKindInstanceStart, cp.SagaStateDone, done, done, done, done, done, done, done),
		"unwinding": saga(cp.SagaKindInstanceMigrate, cp.SagaStateUnwinding, done, done, done, done, failed),
		"unwound":   unwound,
		"stuck":     stuckSaga,
		"begun":     saga(cp.SagaKindInstanceStart, cp.SagaStateRunning),
	}
	for _, k := range []cp.SagaKind{cp.SagaKindInstanceStop, cp.SagaKindInstanceReboot, cp.SagaKindInstanceDelete} {
		sagas[string(k)] = saga(k, cp.SagaStateRunning, done)
	}
	addr := "127.0.0.1:12500"
	base := cp.Instance{Id: instanceID, Name: "ticker", Description: desc, Spec: spec,
		Resources: cp.Resources{Cpus: 2, MemoryMib: 256}, Generation: 1, TimeCreated: someTime, TimeUpdated: someTime}
	inst := func(state cp.InstanceState, gen int64, edit func(*cp.Instance)) cp.Instance {
		i := base
		i.State, i.Generation = state, gen
		if edit != nil {
			edit(&i)
		}
		return i
	}
	active := func(state cp.VmmState) *cp.ActiveVmm {
		return &cp.ActiveVmm{Id: vmmID, SledId: sledID, Address: &addr, State: state}
	}
	instances := map[string]cp.Instance{
		"creating": inst(cp.InstanceStateCreating, 1, nil),
		"stopped":  inst(cp.InstanceStateStopped, 2, nil),
		"starting": inst(cp.InstanceStateStarting, 3, func(i *cp.Instance) {
			i.ActiveVmm = &cp.ActiveVmm{Id: vmmID, SledId: sledID, State: cp.VmmStateCreating}
		}),
		"running":   inst(cp.InstanceStateRunning, 3, func(i *cp.Instance) { i.ActiveVmm = active(cp.VmmStateRunning) }),
		"rebooting": inst(cp.InstanceStateRebooting, 4, func(i *cp.Instance) { i.ActiveVmm = active(cp.VmmStateRebooting) }),
		"stopping":  inst(cp.InstanceStateStopping, 4, func(i *cp.Instance) { i.ActiveVmm = active(cp.VmmStateStopping) }),
		"migrating": inst(cp.InstanceStateMigrating, 5, func(i *cp.Instance) {
			i.ActiveVmm = active(cp.VmmStateMigrating)
			i.Migration = &cp.InstanceMigration{Id: migrationID, SourceVmmId: vmmID, TargetVmmId: targetVmm,
				SourceState: cp.MigrationStateInProgress, TargetState: cp.MigrationStatePending, TimeCreated: someTime}
		}),
		"failed": inst(cp.InstanceStateFailed, 6, func(i *cp.Instance) {
			i.FailureReason = &cp.FailureReason{Kind: cp.FailureReasonKindVmmProcessExited, Message: "the VMM process (pid 4242) was killed by signal 9 (killed)"}
		}),
		"failed-vmm": inst(cp.InstanceStateFailed, 6, func(i *cp.Instance) {
			i.ActiveVmm = active(cp.VmmStateFailed)
			i.ActiveVmm.FailureReason = &cp.FailureReason{Kind: cp.FailureReasonKindSledLost, Message: "the sled has not answered for 5m0s"}
		}),
		"destroyed": inst(cp.InstanceStateDestroyed, 7, nil),
	}
	for _, name := range sortedKeys(sagas) {
		if err := set.addJSON(KindSaga, name, sagas[name]); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(instances) {
		if err := set.addJSON(KindInstance, name, instances[name]); err != nil {
			return nil, err
		}
	}
	begun := sagas["begun"]
	sledA := cp.Sled{Id: sledID, Address: "10.0.0.7:12300", ApiVersions: []string{"v1"}, State: cp.SledStateActive,
		Capacity: cp.Resources{Cpus: 16, MemoryMib: 65536}, Reserved: cp.Resources{Cpus: 2, MemoryMib: 256}, Vmms: 1,
		TimeCreated: someTime, LastContact: someTime}
	sledB := cp.Sled{Id: targetSled, Address: "10.0.0.8:12300", ApiVersions: []string{"v1"}, State: cp.SledStateLost,
		Capacity: cp.Resources{Cpus: 8, MemoryMib: 8192}, Reserved: cp.Resources{}, Vmms: 0,
		TimeCreated: someTime, LastContact: someTime}
	web1 := inst(cp.InstanceStateStopped, 2, func(i *cp.Instance) { i.Id, i.Name = targetVmm, "web-1" })
	files := []struct {
		kind, name string
		v          any
	}{
		{KindInstanceCreate, "full", cp.InstanceCreate{Name: "ticker", Description: &desc, Spec: spec, Start: &start}},
		{KindInstanceCreate, "minimal", cp.InstanceCreate{Name: "t", Spec: cp.SpecEnvelope{SpecVersion: "vmm-server/v1", Spec: map[string]any{}}}},
		{KindInstanceMigrate, "to-sled", cp.InstanceMigrate{TargetSled: &sled}},
		{KindInstanceMigrate, "anywhere", cp.InstanceMigrate{}},
		{KindInstanceCreated, "with-saga", cp.InstanceCreated{Instance: inst(cp.InstanceStateStopped, 1, nil), Saga: &begun}},
		{KindInstanceCreated, "without-saga", cp.InstanceCreated{Instance: instances["stopped"]}},
		// Lists hold distinct instances (names are unique), by name, and
		// sleds by id, as the contract orders them.
		{KindInstanceList, "two", cp.InstanceList{Instances: []cp.Instance{instances["running"], web1}}},
		{KindInstanceList, "empty", cp.InstanceList{Instances: []cp.Instance{}}},
		{KindInstanceList, "first-page", cp.InstanceList{Instances: []cp.Instance{instances["running"]},
			NextPageToken: ptr(pageToken("instances", instances["running"].Name))}},
		{KindInstanceList, "last-page", cp.InstanceList{Instances: []cp.Instance{web1}}},
		{KindSled, "active", sledA},
		{KindSled, "lost", sledB},
		{KindSledList, "two", cp.SledList{Sleds: []cp.Sled{sledA, sledB}}},
		{KindSledList, "empty", cp.SledList{Sleds: []cp.Sled{}}},
		{KindSledList, "first-page", cp.SledList{Sleds: []cp.Sled{sledA}, NextPageToken: ptr(pageToken("sleds", sledA.Id.String()))}},
		{KindSledList, "last-page", cp.SledList{Sleds: []cp.Sled{sledB}}},
	}
	for _, f := range files {
		if err := set.addJSON(f.kind, f.name, f.v); err != nil {
			return nil, err
		}
	}
	for _, c := range []string{"invalid_request", "invalid_spec", "not_upgraded", "unauthorized", "no_such_instance", "no_such_saga",
		"no_such_sled", "not_found", "name_in_use", "instance_busy", "invalid_state", "insufficient_capacity", "same_sled",
		"method_not_allowed", "body_too_large", "unsupported_media_type", "request_timeout", "too_many_connections",
		"unavailable", "sled_unavailable", "internal"} {
		e := cp.Error{ErrorCode: c, Message: "corpus: an example message for " + c, RequestId: requestID(c)}
		if err := set.addJSON(KindError, c, e); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// pageToken makes a page token as the control plane's v1 handler does
// (URL-safe base64 of its small versioned JSON), for the pages of the
// lists: a client treats it as opaque, the corpus holds one real example.
func pageToken(list, after string) string {
	b, err := json.Marshal(struct {
		V     int    `json:"v"`
		List  string `json:"list"`
		After string `json:"after"`
	}{1, list, after})
	if err != nil {
		panic(err) // an int and strings always encode
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// controlPlaneV1Handlers replays control-plane/v1's kinds with today's
// contract and generated types.
func controlPlaneV1Handlers() map[string]Handler {
	doc := sync.OnceValues(cp.GetSwagger) // parsed once per replay, not once per file
	return map[string]Handler{
		KindInstanceCreate:  contractObject[cp.InstanceCreate](doc, "InstanceCreate"),
		KindInstanceMigrate: contractObject[cp.InstanceMigrate](doc, "InstanceMigrate"),
		KindInstance:        contractObject[cp.Instance](doc, "Instance"),
		KindInstanceList:    contractObject[cp.InstanceList](doc, "InstanceList"),
		KindInstanceCreated: contractObject[cp.InstanceCreated](doc, "InstanceCreated"),
		KindSaga:            contractObject[cp.Saga](doc, "Saga"),
		KindSled:            contractObject[cp.Sled](doc, "Sled"),
		KindSledList:        contractObject[cp.SledList](doc, "SledList"),
		KindError:           contractObject[cp.Error](doc, "Error"),
	}
}
