package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	apiv2 "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm"
)

// TestV2EnumsComplete: v2 names every state, migration phase and failure
// kind of the core, each with a value its closed enums allow.
func TestV2EnumsComplete(t *testing.T) {
	for s := range stateNames {
		v, ok := stateToV2[s]
		require.True(t, ok, "state %s has no v2 name", s)
		require.True(t, v.Valid(), "state %s: %q", s, v)
		require.Equal(t, s.String(), string(v))
	}
	require.Len(t, phaseToV2, len(migrationPhases))
	for _, ph := range migrationPhases {
		require.True(t, phaseToV2[ph].Valid(), "phase %s has no v2 name", ph)
		require.Equal(t, string(ph), string(phaseToV2[ph]))
	}
	// v2's FailureKind is closed: a kind v2 names is answered as itself; a
	// kind only a later version names (none yet) as guest_error or
	// host_error, as the contract says.
	require.Len(t, failureKindToV2, len(failureKinds))
	for _, k := range failureKinds {
		v, ok := failureKindToV2[k]
		require.True(t, ok, "failure kind %s has no v2 name", k)
		require.True(t, v.Valid())
		if apiv2.FailureKind(k).Valid() {
			require.Equal(t, string(k), string(v))
		} else {
			require.Contains(t, []apiv2.FailureKind{apiv2.FailureKindGuestError, apiv2.FailureKindHostError}, v, k)
		}
	}
}

// v2Spec is a spec only v2 can express: an explicit SMBIOS table and a
// pvpanic device.
const v2Spec = `{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"panic"},
 "smbios":{"manufacturer":"Acme","product":"Rocket","serial_number":"RS-1"},
 "components":{"com1":{"type":"serial_port","num":"com1"},"panic0":{"type":"pvpanic"}}}`

func v2Ensure(spec string) string {
	return `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"both"},"init":{"method":"spec","spec":` + spec + `}}`
}

// call sends one request with the test's token and decodes the answer
// into out (nil: none); it returns the status.
func call(t *testing.T, srvURL, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, srvURL+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if out != nil {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out), "%s %s", method, path)
	}
	return resp.StatusCode
}

// TestInstanceThroughEitherVersion: one instance, created through v2 with
// what only v2 can say, is read and driven through both; v1 answers 409
// not_expressible for its spec, naming each field, and keeps answering
// everything else.
func TestInstanceThroughEitherVersion(t *testing.T) {
	g := newRig(t, fakeGuest{})
	srv, _ := start(t, g.rt)
	var inst apiv2.Instance
	require.Equal(t, http.StatusCreated, call(t, srv.URL, http.MethodPut, "/v2/instance", v2Ensure(v2Spec), &inst))
	require.Equal(t, apiv2.InstanceStateCreating, inst.State)
	require.Equal(t, "", inst.Properties.Description, "v2 always answers the description")

	var view apiv2.InstanceSpecView
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v2/instance/spec", "", &view))
	require.NotNil(t, view.Spec)
	require.NotNil(t, view.Spec.Smbios)
	require.Equal(t, "Acme", *view.Spec.Smbios.Manufacturer)
	panicDev, ok := view.Spec.Components["panic0"]
	require.True(t, ok)
	kind, err := panicDev.Discriminator()
	require.NoError(t, err)
	require.Equal(t, "pvpanic", kind)

	var e api.Error
	require.Equal(t, http.StatusConflict, call(t, srv.URL, http.MethodGet, "/v1/instance/spec", "", &e))
	require.Equal(t, CodeNotExpressible, e.ErrorCode)
	require.Contains(t, e.Message, "smbios")
	require.Contains(t, e.Message, "components.panic0")

	var v1inst api.Instance
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v1/instance", "", &v1inst))
	require.Equal(t, inst.Gen, v1inst.Gen)

	// Driven through v2, seen through v1; v2 answers the generation.
	var changed apiv2.InstanceStateChangeResponse
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodPut, "/v2/instance/state", `{"requested":"run"}`, &changed))
	require.Greater(t, changed.Gen, inst.Gen)
	running := waitState(t, g.rt, StateRunning)
	require.GreaterOrEqual(t, int64(running.Gen), changed.Gen)
	require.Equal(t, http.StatusNoContent, call(t, srv.URL, http.MethodPut, "/v1/instance/state", `{"requested":"run"}`, nil),
		"v1 answers 204, as released")
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodPut, "/v2/instance/state", `{"requested":"run"}`, &changed))
	require.Equal(t, int64(running.Gen), changed.Gen, "a run while running took effect at the current generation")
}

// TestV1InstanceThroughV2: an instance created through v1 reads through v2
// with the same spec, and an ensure through v2 with the same request is
// the same ensure (200, not instance_exists).
func TestV1InstanceThroughV2(t *testing.T) {
	g := newRig(t, fakeGuest{})
	srv, _ := start(t, g.rt)
	const spec = `{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"components":{"com1":{"type":"serial_port","num":"com1"}}}`
	v1body := `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"both"},"spec":` + spec + `}`
	require.Equal(t, http.StatusCreated, call(t, srv.URL, http.MethodPut, "/v1/instance", v1body, nil))
	var v1view api.InstanceSpecView
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v1/instance/spec", "", &v1view))
	var v2view apiv2.InstanceSpecView
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v2/instance/spec", "", &v2view))
	a, err := json.Marshal(v1view.Spec)
	require.NoError(t, err)
	b, err := json.Marshal(v2view.Spec)
	require.NoError(t, err)
	require.JSONEq(t, string(a), string(b), "a spec v1 can say reads the same through v2")
	require.Nil(t, v2view.Spec.Smbios)
	var inst apiv2.Instance
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodPut, "/v2/instance", v2Ensure(spec), &inst),
		"the same request through the other version is the same ensure")
}

// TestFailureThroughEitherVersion: a failed instance reports its failure as
// data through v2 ({kind, message}) and as the same message through v1,
// on the instance, the state view and its history.
func TestFailureThroughEitherVersion(t *testing.T) {
	g := newRig(t, fakeGuest{})
	srv, _ := start(t, g.rt)
	_, vm := g.ensure(t, "panics")
	g.run(t)
	vm.crash(vmm.ErrGuestPanicked)
	failed := waitState(t, g.rt, StateFailed)

	var v2inst apiv2.Instance
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v2/instance", "", &v2inst))
	require.NotNil(t, v2inst.Failure)
	require.Equal(t, apiv2.FailureKindGuestPanicked, v2inst.Failure.Kind)
	require.Equal(t, failed.FailureReason, v2inst.Failure.Message)
	var v1inst api.Instance
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v1/instance", "", &v1inst))
	require.NotNil(t, v1inst.FailureReason)
	require.Equal(t, failed.FailureReason, *v1inst.FailureReason, "v1 keeps its string")

	var sv apiv2.InstanceStateView
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v2/instance/state-monitor?gen=0", "", &sv))
	require.NotNil(t, sv.Failure)
	require.Equal(t, apiv2.FailureKindGuestPanicked, sv.Failure.Kind)
	require.NotNil(t, sv.History)
	for _, tr := range *sv.History {
		if tr.State == apiv2.InstanceStateFailed {
			require.NotNil(t, tr.Failure)
			require.Equal(t, apiv2.FailureKindGuestPanicked, tr.Failure.Kind)
		} else {
			require.Nil(t, tr.Failure, "a %s transition has no failure", tr.State)
		}
	}
}

// TestV1AnswersATableItWouldDerive: an explicit SMBIOS table equal to the
// one the server derives for the instance loses nothing in v1, which
// answers the spec without it; a table that differs by one string is
// refused by name.
func TestV1AnswersATableItWouldDerive(t *testing.T) {
	for _, c := range []struct {
		name   string
		edit   func(*spec.SMBIOS)
		status int
	}{
		{"the derived table", func(*spec.SMBIOS) {}, http.StatusOK},
		{"another product", func(t *spec.SMBIOS) { t.Product += "x" }, http.StatusConflict},
		{"a family", func(t *spec.SMBIOS) { t.Family = "f" }, http.StatusConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, fakeGuest{})
			srv, _ := start(t, g.rt)
			table := g.rt.DerivedSMBIOS(Properties{ID: uuid.MustParse("5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01"), Name: "both"})
			c.edit(&table)
			raw, err := json.Marshal(map[string]string{"manufacturer": table.Manufacturer, "product": table.Product,
				"version": table.Version, "serial_number": table.SerialNumber, "sku": table.SKU, "family": table.Family})
			require.NoError(t, err)
			sp := `{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"smbios":` + string(raw) + `,"components":{}}`
			require.Equal(t, http.StatusCreated, call(t, srv.URL, http.MethodPut, "/v2/instance", v2Ensure(sp), nil))
			var view api.InstanceSpecView
			var e api.Error
			if c.status == http.StatusOK {
				require.Equal(t, c.status, call(t, srv.URL, http.MethodGet, "/v1/instance/spec", "", &view))
				require.NotNil(t, view.Spec)
			} else {
				require.Equal(t, c.status, call(t, srv.URL, http.MethodGet, "/v1/instance/spec", "", &e))
				require.Equal(t, CodeNotExpressible, e.ErrorCode)
				require.Contains(t, e.Message, "smbios")
			}
			var v2view apiv2.InstanceSpecView
			require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v2/instance/spec", "", &v2view))
			require.NotNil(t, v2view.Spec.Smbios, "v2 answers the table it was given")
		})
	}
}

// TestRequestedFromTheWire: every version's request names map to the core's
// requests; anything else is refused naming the field.
func TestRequestedFromTheWire(t *testing.T) {
	for wire, want := range map[string]Requested{"run": RequestRun, "stop": RequestStop, "reboot": RequestReboot} {
		got, err := requested(wire)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := requested("explode")
	require.ErrorContains(t, err, `body.requested: unknown request "explode"`)
}

// TestV2FailureMessageIsBounded: a failure whose account is longer than
// v2's InstanceFailure.message allows (4096 characters; a reason can quote
// a path of 4095 bytes) is answered cut to the bound, ending in "...",
// without splitting a character, on the instance, the state view and its
// history; v1's failure_reason, which has no bound, keeps it whole.
func TestV2FailureMessageIsBounded(t *testing.T) {
	g := newRig(t, fakeGuest{})
	srv, _ := start(t, g.rt)
	_, vm := g.ensure(t, "long")
	g.run(t)
	vm.crash(fmt.Errorf("%w: %s", vmm.ErrTripleFault, strings.Repeat("é", 5000)))
	failed := waitState(t, g.rt, StateFailed)
	require.Greater(t, utf8.RuneCountInString(failed.FailureReason), maxFailureMessageV2)

	bounded := func(f *apiv2.InstanceFailure) {
		t.Helper()
		require.NotNil(t, f)
		require.Equal(t, maxFailureMessageV2, utf8.RuneCountInString(f.Message))
		require.True(t, utf8.ValidString(f.Message))
		require.True(t, strings.HasSuffix(f.Message, "..."))
		require.True(t, strings.HasPrefix(failed.FailureReason, strings.TrimSuffix(f.Message, "...")))
	}
	var inst apiv2.Instance
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v2/instance", "", &inst))
	bounded(inst.Failure)
	var sv apiv2.InstanceStateView
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v2/instance/state-monitor?gen=0", "", &sv))
	bounded(sv.Failure)
	require.NotNil(t, sv.History)
	last := (*sv.History)[len(*sv.History)-1]
	bounded(last.Failure)
	var v1inst api.Instance
	require.Equal(t, http.StatusOK, call(t, srv.URL, http.MethodGet, "/v1/instance", "", &v1inst))
	require.Equal(t, failed.FailureReason, *v1inst.FailureReason)

	require.Equal(t, "short", cutMessage("short", maxFailureMessageV2))
	exact := strings.Repeat("x", maxFailureMessageV2)
	require.Equal(t, exact, cutMessage(exact, maxFailureMessageV2), "a message at the bound is kept whole")
}

// TestV2BoundsMatchTheContract: what the server bounds, it bounds within
// v2's document: a failure's message to InstanceFailure.message's
// maxLength, a migration's failure reason to MigrationProgress's
// failure_reason (its length and its printable ASCII).
func TestV2BoundsMatchTheContract(t *testing.T) {
	doc, err := apiv2.GetSwagger()
	require.NoError(t, err)
	prop := func(schema, name string) *openapi3.Schema {
		s := doc.Components.Schemas[schema]
		require.NotNil(t, s, schema)
		p := s.Value.Properties[name]
		require.NotNil(t, p, "%s.%s", schema, name)
		return p.Value
	}
	msg := prop("InstanceFailure", "message")
	require.NotNil(t, msg.MaxLength)
	require.Equal(t, uint64(maxFailureMessageV2), *msg.MaxLength)

	reason := prop("MigrationProgress", "failure_reason")
	require.NotNil(t, reason.MaxLength)
	require.Equal(t, uint64(maxFailureReason), *reason.MaxLength)
	long := sanitize(strings.Repeat("é\x01", maxFailureReason), maxFailureReason)
	require.LessOrEqual(t, len(long), maxFailureReason)
	require.NoError(t, reason.VisitJSON(long), "a sanitized reason passes the contract")
}

// TestV2NamesTheTargetsFieldsInInit: a migration target's ensure that the
// core refuses field by field (a source address outside the peers, a
// malformed secret) is answered through v2 naming the field as v2 holds it,
// under init, and never as v1 spells it (migrate.*).
func TestV2NamesTheTargetsFieldsInInit(t *testing.T) {
	g := newRig(t, fakeGuest{})
	srv, _ := start(t, g.rt)
	for field, init := range map[string]string{
		"init.src_addr": `{"method":"migration_target","migration_id":"7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f",` +
			`"src_addr":"0.0.0.0:12400","secret":"` + strings.Repeat("A", 43) + `"}`,
		"init.secret": `{"method":"migration_target","migration_id":"7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f",` +
			`"src_addr":"127.0.0.1:12400","secret":"` + strings.Repeat("A", 42) + `="}`,
	} {
		var e apiv2.Error
		body := `{"properties":{"id":"5d2c86a4-3d2e-4c53-9f4b-6f1c1c8b9a01","name":"dst"},"init":` + init + `}`
		require.Equal(t, http.StatusBadRequest, call(t, srv.URL, http.MethodPut, "/v2/instance", body, &e), field)
		require.Contains(t, e.Message, field)
		require.NotContains(t, e.Message, "migrate.", field)
	}
}
