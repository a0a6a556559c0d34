package server

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDecide is the lifecycle's rule book as a table: every state, every
// request, with and without a VM and an outbound migration to abort.
func TestDecide(t *testing.T) {
	const (
		run, stop, reboot = RequestRun, RequestStop, RequestReboot
	)
	// want[state] lists the decision for run, stop and reboot, for an
	// instance with a VM and no outbound migration.
	want := map[State][3]decision{
		StateCreating:  {honour, honour, refuse},
		StateStarting:  {alreadyDone, refuse, refuse},
		StateRunning:   {alreadyDone, honour, honour},
		StateRebooting: {refuse, refuse, alreadyDone},
		StateStopping:  {refuse, alreadyDone, refuse},
		StateStopped:   {refuse, alreadyDone, refuse},
		StateDestroyed: {refuse, alreadyDone, refuse},
		StateMigrating: {refuse, refuse, refuse},
		StateFailed:    {refuse, refuse, refuse},
	}
	require.Len(t, want, len(stateNames), "every state has a row")
	for s, row := range want {
		for i, req := range []Requested{run, stop, reboot} {
			t.Run(fmt.Sprintf("%s/%s", s, req), func(t *testing.T) {
				require.Equal(t, row[i], decide(s, req, true, false))
			})
		}
	}

	// A migration target waiting for its source has no VM: nothing can be
	// asked of it.
	for _, req := range []Requested{run, stop, reboot} {
		require.Equal(t, refuse, decide(StateCreating, req, false, false), req.String())
		require.Equal(t, refuse, decide(StateMigrating, req, false, false), req.String())
	}
	// During an outbound migration, stop aborts it and stops the VM; run
	// and reboot are refused. Once the migration can no longer be aborted
	// (it handed the VM off), stop is refused too.
	require.Equal(t, abortAndStop, decide(StateMigrating, stop, true, true))
	require.Equal(t, refuse, decide(StateMigrating, stop, true, false))
	require.Equal(t, refuse, decide(StateMigrating, run, true, true))
	require.Equal(t, refuse, decide(StateMigrating, reboot, true, true))
}
