// Package externalapi is the control plane's external API, the one its
// users (and `waggle instance`) call: every supported version of the
// control-plane contract mounted at its path over controlplane.Operations,
// on the shared skeleton (internal/httpkit). It is served on a listener and
// with a token of its own, apart from the internal API the sled agents
// call. Each version lives in a package of its own; a new one is a package
// and a line here.
package externalapi

import (
	"net/http"

	"github.com/wagglevm/waggle/controlplane"
	v1 "github.com/wagglevm/waggle/controlplane/externalapi/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
)

// Versions lists the API versions served, as path prefixes without their
// slash, newest first.
var Versions = []string{"v1"}

// NewHandler returns the external API's HTTP handler: every version at its
// prefix, each request authenticated and validated by its contract.
func NewHandler(ops controlplane.Operations, opts httpkit.HandlerOptions) (http.Handler, error) {
	h1, err := v1.NewHandler(ops, opts.Log)
	if err != nil {
		return nil, err
	}
	return httpkit.NewHandler(opts, httpkit.Version{Prefix: "/v1", Handler: h1})
}
