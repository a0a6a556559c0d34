// Package internalapi is the control plane's internal API, the one its
// sled agents call: every supported version of the control-plane-internal
// contract mounted at its path over one runtime, on the shared skeleton
// (internal/httpkit), and the control plane's metrics at /metrics,
// outside the versioned API. Each version lives in a package of its own; a
// new one is a package and a line here.
package internalapi

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	v1 "github.com/wagglevm/waggle/controlplane/internalapi/v1"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// Versions lists the API versions served, as path prefixes without their
// slash, newest first.
var Versions = []string{"v1"}

// Runtime is what the internal API asks of the control plane's runtime
// (*controlplane.ControlPlane): the union of what every version needs.
type Runtime interface {
	// Ring queues a pull of a VMM's state from its sled and returns at
	// once (controlplane.ErrNotFound for an unknown VMM,
	// controlplane.ErrUnavailable when it cannot now).
	Ring(ctx context.Context, vmmID uuid.UUID) error
	// RegisterSled stores a sled's registration
	// (controlplane.ErrUnavailable when it cannot now).
	RegisterSled(ctx context.Context, s model.Sled) error
}

var _ v1.Runtime = Runtime(nil)

// NewHandler returns the internal API's HTTP handler: every version at its
// prefix, each request authenticated and validated by its contract, and
// metrics (when not nil) at /metrics, which needs the bearer token like
// every other path.
func NewHandler(rt Runtime, opts httpkit.HandlerOptions, metrics http.Handler) (http.Handler, error) {
	h1, err := v1.NewHandler(rt, opts.Log)
	if err != nil {
		return nil, err
	}
	mounts := []httpkit.Version{{Prefix: "/v1", Handler: h1}}
	if metrics != nil {
		mounts = append(mounts, httpkit.Version{Prefix: "/metrics", Handler: httpkit.GuardMetrics(metrics)})
	}
	return httpkit.NewHandler(opts, mounts...)
}
