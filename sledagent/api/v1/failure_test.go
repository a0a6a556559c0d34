package v1

import (
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/sledagent"
)

// TestFailureKindsV1CannotName: v1 answers the kinds it names as they are,
// and any other (one a later agent adds) as unknown, the kind first in the
// message, so that the answer stays within v1's enum.
func TestFailureKindsV1CannotName(t *testing.T) {
	for _, k := range []sledagent.FailureKind{sledagent.FailureProcessExited, sledagent.FailureVMMFailed, sledagent.FailureExceedsReservation} {
		got := failureToV1(sledagent.FailureReason{Kind: k, Message: "m"})
		require.Equal(t, &api.VmmFailureReason{Kind: api.VmmFailureKind(k), Message: "m"}, got)
		require.True(t, got.Kind.Valid())
	}
	got := failureToV1(sledagent.FailureReason{Kind: "guest_panic", Message: "pvpanic"})
	require.Equal(t, &api.VmmFailureReason{Kind: api.VmmFailureKindUnknown, Message: "guest_panic: pvpanic"}, got)
}
