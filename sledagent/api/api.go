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
	metrics := a.MetricsHandler()
	guarded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !httpkit.Authenticated(r.Context()) {
			httpkit.WriteError(w, r, httpkit.Errorf(http.StatusUnauthorized, httpkit.CodeUnauthorized,
				"this path needs a bearer token: send header Authorization: Bearer <token>"))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpkit.WriteError(w, r, httpkit.Errorf(http.StatusMethodNotAllowed, httpkit.CodeMethodNotAllowed,
				"%s is not allowed on /metrics; allowed: GET, HEAD", r.Method))
			return
		}
		metrics.ServeHTTP(w, r)
	})
	return httpkit.NewHandler(opts,
		httpkit.Version{Prefix: "/v1", Handler: h1},
		httpkit.Version{Prefix: "/metrics", Handler: guarded})
}
