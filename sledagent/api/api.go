// Package api is the sled agent's HTTP API: every supported version of the
// sled-agent contract mounted at its path over one sledagent.Agent, on the
// shared skeleton (internal/httpkit), and the Prometheus metrics at
// /metrics, outside the versioned API.
package api

import (
	"net/http"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
	v1 "github.com/wagglevm/waggle/sledagent/api/v1"
)

// Versions lists the API versions the agent serves, as path prefixes
// without their slash, newest first (the sled's registration names them).
var Versions = []string{"v1"}

// NewHandler returns the agent's HTTP handler. /metrics needs the bearer
// token like every other path.
func NewHandler(a *sledagent.Agent, opts httpkit.HandlerOptions) (http.Handler, error) {
	h1, err := v1.NewHandler(a)
	if err != nil {
		return nil, err
	}
	return httpkit.NewHandler(opts,
		httpkit.Version{Prefix: "/v1", Handler: h1},
		httpkit.Version{Prefix: "/metrics", Handler: httpkit.GuardMetrics(a.MetricsHandler())})
}
