package server

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// TestSourceCompleted: a target that lost the hand-off runs only if the
// source's status says this very migration completed.
func TestSourceCompleted(t *testing.T) {
	core := newFakeCore()
	srv, _ := start(t, core)
	id := uuid.New()
	tg := &target{id: id, src: netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))}

	require.False(t, tg.sourceCompleted(), "no outbound migration")
	core.out = &MigrationProgress{MigrationID: id, Phase: PhaseHandoff}
	require.False(t, tg.sourceCompleted(), "not completed yet")
	core.out = &MigrationProgress{MigrationID: uuid.New(), Phase: PhaseCompleted}
	require.False(t, tg.sourceCompleted(), "another migration")
	core.out = &MigrationProgress{MigrationID: id, Phase: PhaseCompleted}
	require.True(t, tg.sourceCompleted())

	tg.src = netip.MustParseAddrPort("127.0.0.1:1")
	require.False(t, tg.sourceCompleted(), "an unreachable source")
}
