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
// build (KVM) and replays every file it captured with today's code: the
// ticker's and the disk guest's bodies, their streams' frames, their
// device payloads and machine state.
func TestServerCaptureReplays(t *testing.T) {
	kvmtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	files, err := ServerCapture{Root: root}.Hook()(ctx, capturedV1)
	require.NoError(t, err)
	kinds := map[string]int{}
	r := NewReplayer(root, t.TempDir())
	for p, data := range files {
		kind := path.Dir(p)
		kinds[kind]++
		h := r.Handlers[capturedV1][kind]
		require.NotNil(t, h, "no replay of %s", p)
		require.NoError(t, h(r, data, data), p)
	}
	t.Logf("captured %d files: %v", len(files), kinds)
	for _, k := range []string{KindInstance, KindStateView, KindSerialHistory, KindMigrationStatus, KindSpecView, KindDevice, KindMachine, KindFrame} {
		require.Positive(t, kinds[k], "captured no %s", k)
	}
	require.Contains(t, string(files["device/disk-disk0.json"]), `"kind":"virtio_blk_mmio"`)
	require.True(t, strings.HasPrefix(string(files["machine/ticker.json"]), `{"version":`))
	for _, f := range []string{"frame/ticker-hello.json", "frame/ticker-welcome.json", "frame/ticker-proof.json"} {
		require.Contains(t, files, f, "the negotiation as the target saw it")
	}
	none, err := ServerCapture{Root: root}.Hook()(ctx, Version{API: "sled-agent", N: 1})
	require.NoError(t, err)
	require.Empty(t, none, "only vmm-server/v1 is captured")
}
