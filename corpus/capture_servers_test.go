package corpus

import (
	"context"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/internal/kvmtest"
)

// TestServerCaptureReplays runs the capturer against real servers of this
// build (KVM) and replays every file it captured, for each version, with
// today's code of that version: the ticker's and the disk guest's bodies,
// their streams' frames, their device payloads and machine state, and v2's
// panic guest. One run gives both versions; the stream's files are the
// same bytes in each.
func TestServerCaptureReplays(t *testing.T) {
	kvmtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	hook := ServerCapture{Root: root}.Hook()
	r := NewReplayer(root, t.TempDir())
	files := map[Version]map[string][]byte{}
	for _, v := range []Version{capturedV2, capturedV1} {
		got, err := hook(ctx, v)
		require.NoError(t, err)
		files[v] = got
		kinds := map[string]int{}
		for p, data := range got {
			kind := path.Dir(p)
			kinds[kind]++
			h := r.Handlers[v][kind]
			require.NotNil(t, h, "no replay of %s in %s", p, v)
			require.NoError(t, h(r, data, data), "%s: %s", v, p)
		}
		t.Logf("%s: captured %d files: %v", v, len(got), kinds)
		for _, k := range []string{KindInstance, KindStateView, KindSerialHistory, KindMigrationStatus, KindSpecView, KindMigrationArmed, KindDevice, KindMachine, KindFrame} {
			require.Positive(t, kinds[k], "%s: captured no %s", v, k)
		}
		require.Contains(t, string(got["device/disk-disk0.json"]), `"kind":"virtio_blk_mmio"`)
		require.True(t, strings.HasPrefix(string(got["machine/ticker.json"]), `{"version":`))
		for _, f := range []string{"frame/ticker-hello.json", "frame/ticker-welcome.json", "frame/ticker-proof.json"} {
			require.Contains(t, got, f, "the negotiation as the target saw it")
		}
	}
	for p, data := range files[capturedV1] {
		switch path.Dir(p) {
		case KindFrame, KindDevice, KindMachine:
			require.Equal(t, data, files[capturedV2][p], "%s: the stream's files are shared", p)
		}
	}
	v2 := files[capturedV2]
	for _, f := range []string{"instance/ticker-running.json", "instance/panic-created.json", "instance/panic-failed.json",
		"state-change-response/panic-run.json", "instance-state-view/panic-failed-history.json",
		"instance-spec-view/panic-failed.json", "error/no-instance.json", "error/invalid-transition.json"} {
		require.Contains(t, v2, f)
	}
	require.Contains(t, string(v2["instance/panic-failed.json"]), `"kind":"guest_panicked"`)
	require.Contains(t, string(v2["instance-spec-view/panic-failed.json"]), `"pvpanic"`)
	require.NotContains(t, files[capturedV1], "instance/panic-failed.json", "v1 cannot say the panic guest")
	none, err := hook(ctx, Version{API: "sled-agent", N: 1})
	require.NoError(t, err)
	require.Empty(t, none, "only vmm-server/v1 and v2 are captured")
}
