package sledclient

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/sledagent"
	agentv1 "github.com/wagglevm/waggle/sledagent/api/v1"
)

// Every state the real sled agent reports, through its own v1 conversion
// and JSON, converts here to the domain state of the same name, with its
// reason, generation, time and migrations.
func TestEveryAgentStateConverts(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 5, time.UTC)
	kinds := []sledagent.FailureKind{sledagent.FailureProcessExited, sledagent.FailureVMMFailed, sledagent.FailureExceedsReservation}
	migStates := []sledagent.MigrationState{sledagent.MigrationPending, sledagent.MigrationInProgress, sledagent.MigrationCompleted, sledagent.MigrationFailed}
	n := 0
	for _, s := range sledagent.AllStates {
		reasons := []*sledagent.FailureReason{nil}
		if s == sledagent.StateFailed {
			reasons = nil
			for _, k := range kinds {
				reasons = append(reasons, &sledagent.FailureReason{Kind: k, Message: "because " + string(k)})
			}
		}
		for _, r := range reasons {
			for i, ms := range migStates {
				in := sledagent.SledVmmState{State: s, Gen: uint64(3 + i), TimeUpdated: now, Failure: r,
					MigrationIn:  &sledagent.MigrationRuntime{ID: uuid.New(), State: ms, Gen: 1, TimeUpdated: now},
					MigrationOut: &sledagent.MigrationRuntime{ID: uuid.New(), State: ms, Gen: 2, TimeUpdated: now}}
				if i%2 == 1 {
					in.MigrationIn = nil
				}
				data, err := json.Marshal(agentv1.StateToV1(in))
				require.NoError(t, err)
				var w api.SledVmmState
				require.NoError(t, json.Unmarshal(data, &w))
				got, err := stateFromV1(w)
				require.NoError(t, err, "%s", data)
				require.Equal(t, string(s), got.Vmm.State.Name())
				require.Equal(t, model.Generation(in.Gen), got.Vmm.Gen)
				require.True(t, now.Equal(got.Vmm.TimeUpdated))
				reason, failed := got.Vmm.State.FailureReason()
				require.Equal(t, r != nil, failed)
				if r != nil {
					require.Equal(t, model.FailureReason{Kind: model.FailureKind(r.Kind), Message: r.Message}, reason)
					require.True(t, reason.Kind.Known(), "every agent kind is a domain kind: %s", r.Kind)
					require.NotEqual(t, model.FailureUnknown, reason.Kind)
				}
				require.Equal(t, in.MigrationIn == nil, got.MigrationIn == nil)
				if in.MigrationIn != nil {
					require.Equal(t, in.MigrationIn.ID, got.MigrationIn.ID)
					require.Equal(t, string(ms), string(got.MigrationIn.State))
				}
				require.Equal(t, in.MigrationOut.ID, got.MigrationOut.ID)
				require.Equal(t, model.Generation(2), got.MigrationOut.Gen)
				n++
			}
		}
	}
	require.Equal(t, (len(sledagent.AllStates)-1+len(kinds))*len(migStates), n)
}

// FuzzVmmStateFromWire: any JSON that decodes into v1's SledVmmState
// converts or fails with an error; it never panics, and a success is a
// valid domain state: a known state (failed with a reason of a known,
// non-empty kind; no other with one), generations from 1, times set,
// migrations with an id and a known state, no NUL in a message.
func FuzzVmmStateFromWire(f *testing.F) {
	f.Add([]byte(running))
	f.Add([]byte(`{"state":"failed","gen":9,"time_updated":"2026-11-27T12:00:00Z","failure_reason":{"kind":"vmm_process_exited","message":"signal: killed"}}`))
	f.Add([]byte(`{"state":"failed","gen":9,"time_updated":"2026-11-27T12:00:00Z","failure_reason":{"kind":"newer_kind","message":"a\u0000b"}}`))
	f.Add([]byte(`{"state":"failed","gen":1,"time_updated":"2026-11-27T12:00:00Z"}`))
	f.Add([]byte(`{"state":"running","gen":2,"time_updated":"2026-11-27T12:00:00Z","migration_in":{"migration_id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","state":"completed","gen":4,"time_updated":"2026-11-27T12:00:00Z"},"migration_out":{"migration_id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a11","state":"failed","gen":1,"time_updated":"2026-11-27T12:00:00Z"}}`))
	f.Add([]byte(`{"state":"saga_unwound","gen":3,"time_updated":"2026-11-27T12:00:00Z"}`))
	f.Add([]byte(`{"state":"running","gen":0}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var w api.SledVmmState
		if json.Unmarshal(data, &w) != nil {
			return
		}
		got, err := stateFromV1(w)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without words")
			}
			return
		}
		st := got.Vmm.State
		if !st.Valid() || !api.VmmState(st.Name()).Valid() {
			t.Fatalf("state %q is not one an agent reports", st.Name())
		}
		reason, failed := st.FailureReason()
		if failed != (st.Name() == "failed") || (failed && (reason.Kind == "" || !reason.Kind.Known())) {
			t.Fatalf("state %v with reason %+v", st, reason)
		}
		if failed && (containsNUL(reason.Message)) {
			t.Fatalf("a NUL in %q", reason.Message)
		}
		if got.Vmm.Gen < model.FirstGeneration || got.Vmm.TimeUpdated.IsZero() {
			t.Fatalf("runtime %+v", got.Vmm)
		}
		for _, m := range []*model.MigrationObservation{got.MigrationIn, got.MigrationOut} {
			if m == nil {
				continue
			}
			if m.ID == uuid.Nil || m.Gen < model.FirstGeneration || m.TimeUpdated.IsZero() {
				t.Fatalf("migration %+v", *m)
			}
			if _, err := model.ParseMigrationState(string(m.State)); err != nil {
				t.Fatalf("migration state: %v", err)
			}
		}
	})
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}
