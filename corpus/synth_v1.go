package corpus

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/versions"
	v1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	"github.com/wagglevm/waggle/vmm/devices"
)

// Kinds of version 1's wire objects. Each response kind is named after the
// contract schema it holds.
const (
	KindSpec               = "spec"
	KindEnsureRequest      = "ensure-request"
	KindStateChangeRequest = "state-change-request"
	KindExpectRequest      = "migrate-expect-request"
	KindInstance           = "instance"
	KindSpecView           = "instance-spec-view"
	KindStateView          = "instance-state-view"
	KindMigrationStatus    = "migration-status"
	KindSerialHistory      = "serial-history"
	KindMigrationArmed     = "migration-armed"
	KindError              = "error"
	KindEnvelope           = "envelope"
)

// Fixed values of the synthesized objects: the corpus must not depend on
// the clock or on chance.
var (
	instanceID  = uuid.MustParse("0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10")
	migrationID = uuid.MustParse("7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f")
	// earlierMigrationID is the migration that brought a VM in before it
	// migrates out again (migrationID).
	earlierMigrationID = uuid.MustParse("1c9e8d7b-6a5f-4e3d-9c2b-1a0f9e8d7c6b")
	someTime           = time.Date(2026, 11, 27, 10, 30, 0, 123456789, time.UTC)
	secret             = "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	longSecret         = strings.Repeat("s", 128)
)

// synthVMMServerV1 writes every synthesized file of vmm-server/v1.
func synthVMMServerV1() (fileSet, error) {
	set := fileSet{}
	specs, err := synthSpecs()
	if err != nil {
		return nil, err
	}
	for _, s := range specs {
		w, err := v1.FromSpec(s.spec)
		if err != nil {
			return nil, fmt.Errorf("spec %s in v1: %w", s.name, err)
		}
		data, err := v1.CanonicalJSON(w)
		if err != nil {
			return nil, err
		}
		set.add(KindSpec, s.name, data)
		env, err := versions.Wrap(s.spec, []string{v1.Version})
		if err != nil {
			return nil, fmt.Errorf("envelope %s: %w", s.name, err)
		}
		ed, err := env.Marshal()
		if err != nil {
			return nil, err
		}
		set.add(KindEnvelope, s.name, ed)
		if err := addEnsureFromSpec(set, s.name, w); err != nil {
			return nil, err
		}
	}
	steps := []func(fileSet) error{addEnsureAsTarget, addSmallRequests, addInstances, addSpecViews,
		addStateViews, addSerialHistory, addArmed, addErrors}
	for _, step := range steps {
		if err := step(set); err != nil {
			return nil, err
		}
	}
	if err := addStateFiles(set, devices.ImportableVersions()); err != nil {
		return nil, err
	}
	return set, nil
}

func ptr[T any](v T) *T { return &v }

func properties(desc *string) api.InstanceProperties {
	return api.InstanceProperties{Id: instanceID, Name: "ticker-1", Description: desc}
}

func addEnsureFromSpec(set fileSet, name string, w api.InstanceSpec) error {
	var req api.InstanceEnsureRequest
	desc := ptr("corpus spec " + name)
	if err := req.FromInstanceEnsureFromSpec(api.InstanceEnsureFromSpec{Properties: properties(desc), Spec: w}); err != nil {
		return err
	}
	return addCanonical(set, KindEnsureRequest, "from-spec-"+name, req)
}

// addCanonical records v in version 1's canonical JSON (keys sorted), the
// form re-encoding yields.
func addCanonical(set fileSet, kind, name string, v any) error {
	data, err := v1.CanonicalJSON(v)
	if err != nil {
		return err
	}
	set.add(kind, name, data)
	return nil
}

func addEnsureAsTarget(set fileSet) error {
	backend := func(path string, ro bool, bs api.BlockSize) api.Component {
		var c api.Component
		if err := c.FromFileStorageBackendComponent(api.FileStorageBackendComponent{
			Type: api.FileStorageBackendComponentTypeFileStorageBackend, Path: path, Readonly: &ro, BlockSize: &bs,
		}); err != nil {
			panic(err)
		}
		return c
	}
	cases := []struct {
		name    string
		secret  string
		addr    string
		replace *map[string]api.Component
	}{
		{"target-no-replacements", secret, "127.0.0.1:12400", nil},
		{"target-empty-replacements", secret, "[::1]:1", &map[string]api.Component{}},
		{"target-replacements", longSecret, "host-a.example:65535", &map[string]api.Component{
			"disk0-be":                             backend("vms/b/disk0.img", false, api.BlockSizeN512),
			"ffeeddcc-bbaa-4988-b766-554433221100": backend("ro/data.img", true, api.BlockSizeN4096),
		}},
	}
	for _, c := range cases {
		var req api.InstanceEnsureRequest
		err := req.FromInstanceEnsureAsMigrationTarget(api.InstanceEnsureAsMigrationTarget{
			Properties: properties(ptr("")),
			Migrate: api.InstanceMigrateInitiateRequest{
				MigrationId: migrationID, Secret: c.secret, SrcAddr: c.addr, ReplaceComponents: c.replace,
			},
		})
		if err != nil {
			return err
		}
		if err := addCanonical(set, KindEnsureRequest, c.name, req); err != nil {
			return err
		}
	}
	return nil
}

func addSmallRequests(set fileSet) error {
	for _, r := range []api.InstanceStateRequested{api.InstanceStateRequestedRun, api.InstanceStateRequestedStop, api.InstanceStateRequestedReboot} {
		if err := addCanonical(set, KindStateChangeRequest, string(r), api.InstanceStateChangeRequest{Requested: r}); err != nil {
			return err
		}
	}
	for name, r := range map[string]api.InstanceMigrateExpectRequest{
		"id-only":     {MigrationId: migrationID},
		"with-secret": {MigrationId: migrationID, Secret: ptr(secret), TtlSeconds: ptr(int32(1))},
		"ttl-max":     {MigrationId: migrationID, Secret: ptr(longSecret), TtlSeconds: ptr(int32(3600))},
	} {
		if err := addCanonical(set, KindExpectRequest, name, r); err != nil {
			return err
		}
	}
	return nil
}

// states lists every InstanceState value.
var states = []api.InstanceState{
	api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning, api.InstanceStateStopping,
	api.InstanceStateStopped, api.InstanceStateRebooting, api.InstanceStateMigrating, api.InstanceStateFailed,
	api.InstanceStateDestroyed,
}

// maxInt is the largest integer the contract allows (2^53 - 1).
const maxInt = 1<<53 - 1

func addInstances(set fileSet) error {
	for i, st := range states {
		inst := api.Instance{Gen: int64(i + 1), Properties: properties(ptr("")), State: st}
		if st == api.InstanceStateFailed {
			inst.FailureReason = ptr("guest triple-faulted")
		}
		if err := set.addJSON(KindInstance, string(st), inst); err != nil {
			return err
		}
	}
	return set.addJSON(KindInstance, "gen-max", api.Instance{Gen: maxInt, Properties: properties(ptr(strings.Repeat("d", 512))), State: api.InstanceStateRunning})
}

func addSpecViews(set fileSet) error {
	specs, err := synthSpecs()
	if err != nil {
		return err
	}
	w, err := v1.FromSpec(specs[3].spec) // a disk guest
	if err != nil {
		return err
	}
	views := map[string]api.InstanceSpecView{
		"present":                      {Gen: 2, Properties: properties(ptr("")), Spec: &w, SpecStatus: api.InstanceSpecStatusPresent, State: api.InstanceStateRunning},
		"waiting-for-migration-source": {Gen: 1, Properties: properties(ptr("")), SpecStatus: api.InstanceSpecStatusWaitingForMigrationSource, State: api.InstanceStateMigrating},
	}
	for name, v := range views {
		if err := set.addJSON(KindSpecView, name, v); err != nil {
			return err
		}
	}
	return nil
}

// phases lists every MigrationPhase value.
var phases = []api.MigrationPhase{
	api.MigrationPhaseNegotiate, api.MigrationPhasePreamble, api.MigrationPhaseRamPrecopy, api.MigrationPhasePause,
	api.MigrationPhaseRamFinal, api.MigrationPhaseDeviceState, api.MigrationPhaseClock, api.MigrationPhaseHandoff,
	api.MigrationPhaseCompleted, api.MigrationPhaseFailed,
}

// migrationFailure is the failure reason of the failed migrations in the
// corpus: one that failed late (after pre-copy, with RAM sent), as its
// figures say.
const migrationFailure = "device state: the target refused com1's payload"

// progress is a migration in phase ph, with figures a server could report
// in it.
func progress(ph api.MigrationPhase) api.MigrationProgress {
	p := api.MigrationProgress{MigrationId: migrationID, Phase: ph, BytesSent: 1 << 20, PagesLeft: 17, Rounds: 3}
	switch ph {
	case api.MigrationPhaseNegotiate, api.MigrationPhasePreamble:
		p.BytesSent, p.PagesLeft, p.Rounds = 0, 0, 0
	case api.MigrationPhaseCompleted:
		p.DowntimeUs, p.TotalUs, p.PagesLeft = ptr(int64(640)), ptr(int64(1_250_000)), 0
	case api.MigrationPhaseFailed:
		p.FailureReason, p.TotalUs, p.PagesLeft = ptr(migrationFailure), ptr(int64(1_100_000)), 0
	}
	return p
}

func addStateViews(set fileSet) error {
	for _, ph := range phases {
		out, in := progress(ph), progress(ph)
		ms := api.MigrationStatus{MigrationOut: &out}
		if err := set.addJSON(KindMigrationStatus, "out-"+string(ph), ms); err != nil {
			return err
		}
		if err := set.addJSON(KindMigrationStatus, "in-"+string(ph), api.MigrationStatus{MigrationIn: &in}); err != nil {
			return err
		}
	}
	earlier := progress(api.MigrationPhaseCompleted)
	earlier.MigrationId = earlierMigrationID
	max := api.MigrationProgress{MigrationId: migrationID, Phase: api.MigrationPhaseCompleted, BytesSent: maxInt,
		PagesLeft: maxInt, Rounds: 1<<31 - 1, DowntimeUs: ptr(int64(maxInt)), TotalUs: ptr(int64(maxInt))}
	for name, ms := range map[string]api.MigrationStatus{
		"none": {},
		"both": {MigrationIn: &earlier, MigrationOut: ptr(progress(api.MigrationPhaseRamPrecopy))},
		"max":  {MigrationOut: &max},
	} {
		if err := set.addJSON(KindMigrationStatus, name, ms); err != nil {
			return err
		}
	}
	// Histories a server could write: each starts at creation (gen 1),
	// follows the lifecycle (server/core.go), and ends at the view's state
	// and gen; together they show every state.
	history := func(failure string, sts ...api.InstanceState) *[]api.StateTransition {
		var h []api.StateTransition
		for i, st := range sts {
			tr := api.StateTransition{At: someTime.Add(time.Duration(i) * time.Second), Gen: int64(i + 1), State: st}
			if st == api.InstanceStateFailed {
				tr.FailureReason = ptr(failure)
			}
			h = append(h, tr)
		}
		return &h
	}
	const failedIn = "inbound migration failed: " + migrationFailure
	views := map[string]api.InstanceStateView{
		"running-no-history": {Gen: 3, State: api.InstanceStateRunning},
		// Started, rebooted, a migration out that failed (the VM ran on),
		// then stopped.
		"lifecycle-in-history": {Gen: 10, State: api.InstanceStateDestroyed, History: history("",
			api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning, api.InstanceStateRebooting,
			api.InstanceStateRunning, api.InstanceStateMigrating, api.InstanceStateRunning, api.InstanceStateStopping,
			api.InstanceStateStopped, api.InstanceStateDestroyed),
			Migration: api.MigrationStatus{MigrationOut: ptr(progress(api.MigrationPhaseFailed))}},
		// Started, then migrated out.
		"migrated-out": {Gen: 5, State: api.InstanceStateDestroyed, History: history("",
			api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning, api.InstanceStateMigrating,
			api.InstanceStateDestroyed),
			Migration: api.MigrationStatus{MigrationOut: ptr(progress(api.MigrationPhaseCompleted))}},
		// A migration target whose migration failed.
		"failed-migrating-in": {Gen: 3, State: api.InstanceStateFailed, FailureReason: ptr(failedIn),
			History:   history(failedIn, api.InstanceStateCreating, api.InstanceStateMigrating, api.InstanceStateFailed),
			Migration: api.MigrationStatus{MigrationIn: ptr(progress(api.MigrationPhaseFailed))}},
	}
	for name, v := range views {
		if err := set.addJSON(KindStateView, name, v); err != nil {
			return err
		}
	}
	return nil
}

func addSerialHistory(set fileSet) error {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for name, h := range map[string]api.SerialHistory{
		"empty":       {Data: []byte{}, Start: 0, End: 0},
		"ticks":       {Data: []byte("ticker ready\r\ntick 1\r\ntick 2\r\n"), Start: 0, End: 30},
		"every-byte":  {Data: all, Start: 1 << 20, End: 1<<20 + 256},
		"offsets-max": {Data: []byte("x"), Start: maxInt - 1, End: maxInt},
	} {
		if err := set.addJSON(KindSerialHistory, name, h); err != nil {
			return err
		}
	}
	return nil
}

func addArmed(set fileSet) error {
	for name, a := range map[string]api.MigrationArmed{
		"with-made-secret": {MigrationId: migrationID, ExpiresAt: someTime, Secret: ptr(secret)},
		"secret-given":     {MigrationId: migrationID, ExpiresAt: someTime.Add(time.Hour)},
	} {
		if err := set.addJSON(KindMigrationArmed, name, a); err != nil {
			return err
		}
	}
	return nil
}

// codeList finds the error codes the contract's description lists: the
// back-quoted words between "The codes are:" and the next sentence that
// starts with "New codes".
var codeWord = regexp.MustCompile("`([a-z_]+)`")

// ErrorCodes returns the error codes version 1's contract lists in its
// description.
func ErrorCodes() ([]string, error) {
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, err
	}
	desc := doc.Info.Description
	_, after, ok := strings.Cut(desc, "The codes are:")
	if !ok {
		return nil, fmt.Errorf("%s: the description lists no error codes (\"The codes are:\")", v1.Version)
	}
	list, _, _ := strings.Cut(after, "New codes")
	var codes []string
	seen := map[string]bool{}
	for _, m := range codeWord.FindAllStringSubmatch(list, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			codes = append(codes, m[1])
		}
	}
	return codes, nil
}

func addErrors(set fileSet) error {
	codes, err := ErrorCodes()
	if err != nil {
		return err
	}
	for _, c := range codes {
		e := api.Error{ErrorCode: c, Message: "corpus: an example message for " + c, RequestId: "req-000001"}
		if err := set.addJSON(KindError, strings.ReplaceAll(c, "_", "-"), e); err != nil {
			return err
		}
	}
	return nil
}
