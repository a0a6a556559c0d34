package corpus

import (
	"fmt"
	"strings"
	"time"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
	v2 "github.com/wagglevm/waggle/versions/vmm-server/v2"
)

// KindStateChangeResponse is version 2's answer to a state change request
// (InstanceStateChangeResponse); version 1 answers 204 with no body.
const KindStateChangeResponse = "state-change-response"

// synthSpecsV2 returns the hub specs of version 2's corpus: those of
// version 1 (so that every one crosses both ways) and those only version 2
// can express: explicit SMBIOS tables, the pvpanic device, the block sizes
// between and beyond 512 and 4096.
func synthSpecsV2() ([]namedSpec, error) {
	out, err := synthSpecs()
	if err != nil {
		return nil, err
	}
	board := spec.Board{CPUs: 1, MemoryMiB: spec.MinMemoryMiB, Chipset: spec.ChipsetI440FX}
	full := spec.SMBIOS{
		Manufacturer: "M" + printable(spec.MaxSMBIOSStringLen-1), Product: "waggle corpus VM", Version: "2",
		SerialNumber: "SN-0001", SKU: "sku \"quoted\" \\ back", Family: "~" + strings.Repeat("f", spec.MaxSMBIOSStringLen-1),
	}
	cases := []struct {
		name string
		f    func(*spec.Builder)
	}{
		{"smbios-every-string", func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: "smbios"})
			b.Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1})
			b.SetSMBIOS(full)
		}},
		{"smbios-some-strings", func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: "smbios"})
			b.Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1})
			b.SetSMBIOS(spec.SMBIOS{Manufacturer: "Acme", SerialNumber: "RR-1"})
		}},
		{"smbios-empty-table", func(b *spec.Builder) { b.SetSMBIOS(spec.SMBIOS{}) }},
		{"pvpanic", func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: "panic", Cmdline: "pace_ms=100 panic_after=3"})
			b.Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1})
			b.Add(spec.MustKey("panic"), spec.PVPanic{})
		}},
		{"pvpanic-uuid-key", func(b *spec.Builder) {
			b.Add(spec.KeyFromUUID([16]byte{0: 0xab, 6: 0x40, 8: 0x80, 15: 2}), spec.PVPanic{})
		}},
		{"disk-every-block-size", func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: "disk", Cmdline: "slot=0"})
			slot := uint8(0)
			for bs := uint32(spec.MinBlockSize); bs <= spec.MaxBlockSize; bs *= 2 {
				disk(b, fmt.Sprintf("disk%d", slot), fmt.Sprintf("disk%d-be", slot), slot,
					spec.FileStorageBackend{Path: fmt.Sprintf("disks/bs%d.img", bs), ReadOnly: slot%2 == 1, BlockSize: bs})
				slot++
			}
		}},
		{"everything", func(b *spec.Builder) {
			b.SetBoard(spec.Board{CPUs: 4, MemoryMiB: 512, Chipset: spec.ChipsetI440FX})
			b.SetBoot(spec.Boot{Image: "disk", Cmdline: "slot=2"})
			b.SetSMBIOS(full)
			for n := spec.COM1; n <= spec.COM4; n++ {
				b.Add(spec.MustKey(n.String()), spec.SerialPort{Num: n})
			}
			b.Add(spec.MustKey("panic"), spec.PVPanic{})
			disk(b, "disk2", "disk2-be", 2, spec.FileStorageBackend{Path: "vms/e/disk2.img", BlockSize: 8192})
		}},
	}
	for _, c := range cases {
		b := spec.NewBuilder().SetBoard(board).SetBoot(spec.Boot{Image: "ticker"})
		c.f(b)
		s, err := b.Build()
		if err != nil {
			return nil, fmt.Errorf("synthesize spec %s: %w", c.name, err)
		}
		out = append(out, namedSpec{c.name, s})
	}
	return out, nil
}

// synthVMMServerV2 writes every synthesized file of vmm-server/v2.
func synthVMMServerV2() (fileSet, error) {
	set := fileSet{}
	specs, err := synthSpecsV2()
	if err != nil {
		return nil, err
	}
	for _, s := range specs {
		w, err := v2.FromSpec(s.spec)
		if err != nil {
			return nil, fmt.Errorf("spec %s in v2: %w", s.name, err)
		}
		data, err := v2.CanonicalJSON(w)
		if err != nil {
			return nil, err
		}
		set.add(KindSpec, s.name, data)
		env, err := versions.Wrap(s.spec, []string{v2.Version})
		if err != nil {
			return nil, fmt.Errorf("envelope %s: %w", s.name, err)
		}
		ed, err := env.Marshal()
		if err != nil {
			return nil, err
		}
		set.add(KindEnvelope, s.name, ed)
		if err := addV2EnsureFromSpec(set, s.name, w); err != nil {
			return nil, err
		}
	}
	steps := []func(fileSet) error{addV2EnsureAsTarget, addV2SmallRequests, addV2Instances, addV2SpecViews,
		addV2StateViews, addV2SerialHistory, addV2Armed, addV2Errors}
	for _, step := range steps {
		if err := step(set); err != nil {
			return nil, err
		}
	}
	if err := addStateFiles(set, serverImportable()); err != nil {
		return nil, err
	}
	return set, nil
}

// addV2Canonical records v in version 2's canonical JSON (keys sorted).
func addV2Canonical(set fileSet, kind, name string, v any) error {
	data, err := v2.CanonicalJSON(v)
	if err != nil {
		return err
	}
	set.add(kind, name, data)
	return nil
}

func v2Properties(desc *string) api.InstanceProperties {
	return api.InstanceProperties{Id: instanceID, Name: "ticker-1", Description: desc}
}

func v2PropertiesView(desc string) api.InstancePropertiesView {
	return api.InstancePropertiesView{Id: instanceID, Name: "ticker-1", Description: desc}
}

func addV2EnsureFromSpec(set fileSet, name string, w api.InstanceSpec) error {
	var init api.InstanceInit
	if err := init.FromInstanceInitSpec(api.InstanceInitSpec{Method: api.InstanceInitSpecMethodSpec, Spec: w}); err != nil {
		return err
	}
	// The minimal spec's request leaves the description out (optional in
	// requests); the others give one.
	var desc *string
	if name != "minimal" {
		desc = ptr("corpus spec " + name)
	}
	return addV2Canonical(set, KindEnsureRequest, "from-spec-"+name, api.InstanceEnsureRequest{Properties: v2Properties(desc), Init: init})
}

func addV2EnsureAsTarget(set fileSet) error {
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
			"ffeeddcc-bbaa-4988-b766-554433221100": backend("ro/data.img", true, api.BlockSizeN65536),
		}},
	}
	for _, c := range cases {
		var init api.InstanceInit
		err := init.FromInstanceInitMigrationTarget(api.InstanceInitMigrationTarget{
			Method:      api.InstanceInitMigrationTargetMethodMigrationTarget,
			MigrationId: migrationID, Secret: c.secret, SrcAddr: c.addr, ReplaceComponents: c.replace,
		})
		if err != nil {
			return err
		}
		if err := addV2Canonical(set, KindEnsureRequest, c.name, api.InstanceEnsureRequest{Properties: v2Properties(ptr("")), Init: init}); err != nil {
			return err
		}
	}
	return nil
}

func addV2SmallRequests(set fileSet) error {
	for _, r := range []api.InstanceStateRequested{api.InstanceStateRequestedRun, api.InstanceStateRequestedStop, api.InstanceStateRequestedReboot} {
		if err := addV2Canonical(set, KindStateChangeRequest, string(r), api.InstanceStateChangeRequest{Requested: r}); err != nil {
			return err
		}
	}
	for name, r := range map[string]api.InstanceStateChangeResponse{"gen-2": {Gen: 2}, "gen-max": {Gen: maxInt}} {
		if err := set.addJSON(KindStateChangeResponse, name, r); err != nil {
			return err
		}
	}
	for name, r := range map[string]api.InstanceMigrateExpectRequest{
		"id-only":     {MigrationId: migrationID},
		"with-secret": {MigrationId: migrationID, Secret: ptr(secret), TtlSeconds: ptr(int32(1))},
		"ttl-max":     {MigrationId: migrationID, Secret: ptr(longSecret), TtlSeconds: ptr(int32(3600))},
	} {
		if err := addV2Canonical(set, KindExpectRequest, name, r); err != nil {
			return err
		}
	}
	return nil
}

// v2States lists every InstanceState value of version 2.
var v2States = []api.InstanceState{
	api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning, api.InstanceStateStopping,
	api.InstanceStateStopped, api.InstanceStateRebooting, api.InstanceStateMigrating, api.InstanceStateFailed,
	api.InstanceStateDestroyed,
}

// v2Failures is one failure of every kind, with the message a server
// writes for it (a failed VM's exit, "failed: <the vCPU's error>", or the
// inbound migration's end).
var v2Failures = []api.InstanceFailure{
	{Kind: api.FailureKindGuestPanicked, Message: "failed: the guest reported a panic (pvpanic)"},
	{Kind: api.FailureKindGuestTripleFault, Message: "failed: vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN) at rip 0x100b2c"},
	{Kind: api.FailureKindGuestError, Message: "failed: vCPU 0: unexpected KVM exit reason 17 at rip 0x100b2c"},
	{Kind: api.FailureKindMigrationFailed, Message: "inbound migration failed: " + migrationFailure},
	{Kind: api.FailureKindHostError, Message: "failed: vCPU 0: VM entry failed (KVM_EXIT_FAIL_ENTRY): hardware reason 0x80000021 on host CPU 1"},
}

// v2SourceFailure is the other way an instance fails with
// migration_failed: a source that could not resume its VM after its
// outbound migration failed.
var v2SourceFailure = api.InstanceFailure{Kind: api.FailureKindMigrationFailed,
	Message: "resume after the failed migration: vCPU 0: KVM_RUN: input/output error"}

// v2FailedGen is the generation at which an instance fails in v2's files:
// creating, starting, running, failed; a migration target fails at 3
// (creating, migrating, failed).
func v2FailedGen(f api.InstanceFailure) int64 {
	if f.Kind == api.FailureKindMigrationFailed {
		return 3
	}
	return 4
}

func addV2Instances(set fileSet) error {
	for i, st := range v2States {
		if st == api.InstanceStateFailed {
			continue // one per failure kind, below
		}
		inst := api.Instance{Gen: int64(i + 1), Properties: v2PropertiesView(""), State: st}
		if err := set.addJSON(KindInstance, string(st), inst); err != nil {
			return err
		}
	}
	for _, f := range v2Failures {
		inst := api.Instance{Gen: v2FailedGen(f), Properties: v2PropertiesView(""), State: api.InstanceStateFailed, Failure: ptr(f)}
		if err := set.addJSON(KindInstance, "failed-"+strings.ReplaceAll(string(f.Kind), "_", "-"), inst); err != nil {
			return err
		}
	}
	// Running, migrating, failed: a source that could not resume.
	if err := set.addJSON(KindInstance, "failed-migration-failed-source", api.Instance{Gen: 5, Properties: v2PropertiesView(""),
		State: api.InstanceStateFailed, Failure: &v2SourceFailure}); err != nil {
		return err
	}
	// The longest message a server writes: a longer account cut to 4096
	// characters, ending in "...".
	long := api.InstanceFailure{Kind: api.FailureKindHostError, Message: "failed: " + strings.Repeat("m", 4096-len("failed: ")-3) + "..."}
	if err := set.addJSON(KindInstance, "failed-longest-message", api.Instance{Gen: 3, Properties: v2PropertiesView(""),
		State: api.InstanceStateFailed, Failure: &long}); err != nil {
		return err
	}
	return set.addJSON(KindInstance, "gen-max", api.Instance{Gen: maxInt, Properties: v2PropertiesView(strings.Repeat("d", 512)), State: api.InstanceStateRunning})
}

func addV2SpecViews(set fileSet) error {
	specs, err := synthSpecsV2()
	if err != nil {
		return err
	}
	var everything spec.Spec
	for _, s := range specs {
		if s.name == "everything" {
			everything = s.spec
		}
	}
	w, err := v2.FromSpec(everything)
	if err != nil {
		return err
	}
	views := map[string]api.InstanceSpecView{
		"present":                      {Gen: 3, Properties: v2PropertiesView("a VM with everything v2 can say"), Spec: &w, SpecStatus: api.InstanceSpecStatusPresent, State: api.InstanceStateRunning},
		"waiting-for-migration-source": {Gen: 2, Properties: v2PropertiesView(""), SpecStatus: api.InstanceSpecStatusWaitingForMigrationSource, State: api.InstanceStateMigrating},
	}
	for name, v := range views {
		if err := set.addJSON(KindSpecView, name, v); err != nil {
			return err
		}
	}
	return nil
}

// v2SourcePhases and v2TargetPhases are the MigrationPhase values of
// version 2 that a source and a target report (together, every value): a
// source pauses and sends the final RAM, a target waits in handoff.
var (
	v2SourcePhases = []api.MigrationPhase{
		api.MigrationPhaseNegotiate, api.MigrationPhasePreamble, api.MigrationPhaseRamPrecopy, api.MigrationPhasePause,
		api.MigrationPhaseRamFinal, api.MigrationPhaseDeviceState, api.MigrationPhaseClock,
		api.MigrationPhaseCompleted, api.MigrationPhaseFailed,
	}
	v2TargetPhases = []api.MigrationPhase{
		api.MigrationPhaseNegotiate, api.MigrationPhasePreamble, api.MigrationPhaseRamPrecopy,
		api.MigrationPhaseDeviceState, api.MigrationPhaseClock, api.MigrationPhaseHandoff,
		api.MigrationPhaseCompleted, api.MigrationPhaseFailed,
	}
)

// v2Progress is a migration in phase ph, with figures a server could report
// in it.
func v2Progress(ph api.MigrationPhase) api.MigrationProgress {
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

func addV2StateViews(set fileSet) error {
	for _, ph := range v2SourcePhases {
		if err := set.addJSON(KindMigrationStatus, "out-"+string(ph), api.MigrationStatus{MigrationOut: ptr(v2Progress(ph))}); err != nil {
			return err
		}
	}
	for _, ph := range v2TargetPhases {
		if err := set.addJSON(KindMigrationStatus, "in-"+string(ph), api.MigrationStatus{MigrationIn: ptr(v2Progress(ph))}); err != nil {
			return err
		}
	}
	earlier := v2Progress(api.MigrationPhaseCompleted)
	earlier.MigrationId = earlierMigrationID
	max := api.MigrationProgress{MigrationId: migrationID, Phase: api.MigrationPhaseCompleted, BytesSent: maxInt,
		PagesLeft: maxInt, Rounds: 1<<31 - 1, DowntimeUs: ptr(int64(maxInt)), TotalUs: ptr(int64(maxInt))}
	for name, ms := range map[string]api.MigrationStatus{
		"none": {},
		"both": {MigrationIn: &earlier, MigrationOut: ptr(v2Progress(api.MigrationPhaseRamPrecopy))},
		"max":  {MigrationOut: &max},
	} {
		if err := set.addJSON(KindMigrationStatus, name, ms); err != nil {
			return err
		}
	}
	// Histories a server could write: each starts at creation (gen 1),
	// follows the lifecycle, and ends at the view's state and gen; a
	// failed one carries its failure in the view and in its last step.
	history := func(failure *api.InstanceFailure, sts ...api.InstanceState) *[]api.StateTransition {
		var h []api.StateTransition
		for i, st := range sts {
			tr := api.StateTransition{At: someTime.Add(time.Duration(i) * time.Second), Gen: int64(i + 1), State: st}
			if st == api.InstanceStateFailed {
				tr.Failure = failure
			}
			h = append(h, tr)
		}
		return &h
	}
	views := map[string]api.InstanceStateView{
		"running-no-history": {Gen: 3, State: api.InstanceStateRunning},
		"lifecycle-in-history": {Gen: 10, State: api.InstanceStateDestroyed, History: history(nil,
			api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning, api.InstanceStateRebooting,
			api.InstanceStateRunning, api.InstanceStateMigrating, api.InstanceStateRunning, api.InstanceStateStopping,
			api.InstanceStateStopped, api.InstanceStateDestroyed),
			Migration: api.MigrationStatus{MigrationOut: ptr(v2Progress(api.MigrationPhaseFailed))}},
		"migrated-out": {Gen: 5, State: api.InstanceStateDestroyed, History: history(nil,
			api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning, api.InstanceStateMigrating,
			api.InstanceStateDestroyed),
			Migration: api.MigrationStatus{MigrationOut: ptr(v2Progress(api.MigrationPhaseCompleted))}},
	}
	for _, f := range v2Failures {
		name := "failed-" + strings.ReplaceAll(string(f.Kind), "_", "-")
		if f.Kind == api.FailureKindMigrationFailed {
			// A migration target whose migration failed.
			views[name] = api.InstanceStateView{Gen: 3, State: api.InstanceStateFailed, Failure: ptr(f),
				History:   history(ptr(f), api.InstanceStateCreating, api.InstanceStateMigrating, api.InstanceStateFailed),
				Migration: api.MigrationStatus{MigrationIn: ptr(v2Progress(api.MigrationPhaseFailed))}}
			continue
		}
		views[name] = api.InstanceStateView{Gen: 4, State: api.InstanceStateFailed, Failure: ptr(f),
			History: history(ptr(f), api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning, api.InstanceStateFailed)}
	}
	// A source whose outbound migration failed and which could not resume
	// its VM.
	views["failed-migration-failed-source"] = api.InstanceStateView{Gen: 5, State: api.InstanceStateFailed, Failure: &v2SourceFailure,
		History: history(&v2SourceFailure, api.InstanceStateCreating, api.InstanceStateStarting, api.InstanceStateRunning,
			api.InstanceStateMigrating, api.InstanceStateFailed),
		Migration: api.MigrationStatus{MigrationOut: ptr(v2Progress(api.MigrationPhaseFailed))}}
	for name, v := range views {
		if err := set.addJSON(KindStateView, name, v); err != nil {
			return err
		}
	}
	return nil
}

func addV2SerialHistory(set fileSet) error {
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

func addV2Armed(set fileSet) error {
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

// ErrorCodesV2 returns the error codes version 2's contract lists in its
// description.
func ErrorCodesV2() ([]string, error) {
	doc, err := api.GetSwagger()
	if err != nil {
		return nil, err
	}
	return listedCodes(v2.Version, doc.Info.Description)
}

func addV2Errors(set fileSet) error {
	codes, err := ErrorCodesV2()
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

// listedCodes finds the error codes a contract's description lists: the
// back-quoted words between "The codes are:" and the sentence that starts
// with "New codes".
func listedCodes(version, desc string) ([]string, error) {
	_, after, ok := strings.Cut(desc, "The codes are:")
	if !ok {
		return nil, fmt.Errorf("%s: the description lists no error codes (\"The codes are:\")", version)
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
