package v1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/sledagent"
)

func ensureBody(t *testing.T, js string) api.VmmEnsureRequest {
	var b api.VmmEnsureRequest
	require.NoError(t, json.Unmarshal([]byte(js), &b))
	return b
}

const props = `"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"ticker"}`

func fromSpec(board string) string {
	return `{` + props + `,"spec":{"spec_version":"vmm-server/v1","spec":{"board":` + board + `,"components":{"com1":{"type":"serial_port","num":"com1"}}}}}`
}

func target(secret string) string {
	return `{` + props + `,"migrate":{"src_addr":"127.0.0.1:12500","migration_id":"7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f","secret":"` + secret + `","resources":{"cpus":1,"memory_mib":64}}}`
}

// The fingerprint decides idempotency: equal for the same registration
// (in canonical form: defaults written out or left out), different for any
// other.
func TestFingerprint(t *testing.T) {
	fp := func(js string) string {
		r, err := EnsureFromV1(ensureBody(t, js))
		require.NoError(t, err, js)
		return r.Fingerprint
	}
	a := fp(fromSpec(`{"cpus":1,"memory_mb":64,"chipset":"i440fx"}`))
	require.Equal(t, a, fp(fromSpec(`{"memory_mb":64,"chipset":"i440fx","cpus":1}`)), "key order")
	require.NotEqual(t, a, fp(fromSpec(`{"cpus":2,"memory_mb":64,"chipset":"i440fx"}`)))
	require.NotEqual(t, a, fp(`{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"other"},"spec":{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"components":{"com1":{"type":"serial_port","num":"com1"}}}}}`))
	s1, s2 := "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"
	tgt := fp(target(s1))
	require.Equal(t, tgt, fp(target(s1)))
	require.NotEqual(t, tgt, fp(target(s2)), "another secret is another registration")
	require.NotContains(t, tgt, s1)
	require.NotEqual(t, a, tgt)
	r, err := EnsureFromV1(ensureBody(t, fromSpec(`{"cpus":3,"memory_mb":96,"chipset":"i440fx"}`)))
	require.NoError(t, err)
	require.Equal(t, sledagent.Resources{CPUs: 3, MemoryMiB: 96}, r.Resources, "a spec reserves its board")
}

// Every domain error has its status and stable code.
func TestClassify(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("x: %w", sledagent.ErrNoSuchVmm), 404, CodeNoSuchVmm},
		{fmt.Errorf("x: %w", sledagent.ErrVmmExists), 409, CodeVmmExists},
		{fmt.Errorf("x: %w", sledagent.ErrNotTerminal), 409, CodeVmmNotTerminal},
		{sledagent.ErrNoFreePort, 409, CodeNoFreePort},
		{&sledagent.CapacityError{}, 409, CodeInsufficientCapacity},
		{fmt.Errorf("x: %w", sledagent.ErrVMMUnavailable), 503, CodeVmmUnavailable},
		{sledagent.ErrClosed, 503, CodeVmmUnavailable},
		{fmt.Errorf("probe: %w", sledagent.ErrTokenRefused), 502, CodeVmmUnavailable},
		{&sledagent.FieldError{Field: "f", Problem: "p"}, 400, "invalid_request"},
		// The VMM server's refusals answer the agent's codes, whatever the
		// server's: its own are in the message.
		{&sledagent.RefusedError{Status: 400, Code: "vm_error"}, 409, CodeVmmRefused},
		{&sledagent.RefusedError{Status: 409, Code: "invalid_transition"}, 409, CodeVmmRefused},
		{&sledagent.RefusedError{Status: 404, Code: "no_instance"}, 409, CodeVmmRefused},
		{&sledagent.RefusedError{Status: 429, Code: "too_many_consoles"}, 409, CodeVmmRefused},
		{&sledagent.RefusedError{Status: 422, Code: "anything_new"}, 409, CodeVmmRefused},
		{&sledagent.RefusedError{Status: 401, Code: "unauthorized"}, 502, CodeVmmUnavailable},
		{&sledagent.RefusedError{Status: 404, Code: "not_found"}, 502, CodeVmmUnavailable},
		{&sledagent.RefusedError{Status: 405, Code: "method_not_allowed"}, 502, CodeVmmUnavailable},
		{&sledagent.RefusedError{Status: 502, Code: "vmm_unavailable"}, 502, CodeVmmUnavailable},
		{&unsupportedVersion{"x/v9"}, 400, CodeUnsupportedSpecVersion},
		{&invalidSpec{errors.New("bad")}, 400, CodeInvalidSpec},
		{errors.New("anything else"), http.StatusInternalServerError, "internal"},
	}
	for _, c := range cases {
		e := classify(c.err)
		require.Equal(t, c.status, e.Status, "%v", c.err)
		require.Equal(t, c.code, e.Code, "%v", c.err)
		require.Contains(t, AgentCodes, e.Code, "every code answered is one the contract lists")
		var re *sledagent.RefusedError
		if errors.As(c.err, &re) {
			require.Contains(t, e.Message, re.Code, "the VMM server's code is named in the message")
		}
	}
}

// A request that gives several fields that go only with migrate_source is
// refused naming the same field every time (the first in the contract's
// order), so that the message is stable.
func TestStatePutStrayFieldStable(t *testing.T) {
	s := &Server{}
	id := uuid.New()
	secret := "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	ttl := int32(30)
	body := api.VmmStatePutJSONRequestBody{Requested: api.VmmStateRequestedRun, MigrationId: &id, Secret: &secret, TtlSeconds: &ttl}
	for range 64 {
		_, err := s.VmmStatePut(context.Background(), api.VmmStatePutRequestObject{VmmId: id, Body: &body})
		var fe *sledagent.FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "body.migration_id", fe.Field)
	}
	body.MigrationId = nil
	_, err := s.VmmStatePut(context.Background(), api.VmmStatePutRequestObject{VmmId: id, Body: &body})
	require.ErrorContains(t, err, "body.secret")
}
