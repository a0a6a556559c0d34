package server

import (
	"net/http"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// apiVersion is one version of the VMM server's API: where it is mounted
// and how its handler is made over the core. Each version is a spoke in its
// own file (v1.go, ...); the core behind them names none.
type apiVersion struct {
	prefix     string
	newHandler func(Core) (http.Handler, error)
}

// apiVersions lists the versions this server serves, oldest first.
var apiVersions = []apiVersion{
	{prefix: "/v1", newHandler: newV1Handler},
	{prefix: "/v2", newHandler: newV2Handler},
}

// NewHandler returns the server's HTTP handler: every version in
// apiVersions mounted at its path, over one core, on the shared skeleton
// (request ids, access log, body limits, authentication by opts.Auth; the
// zero Auth accepts no credentials).
func NewHandler(core Core, opts httpkit.HandlerOptions) (http.Handler, error) {
	mounted := make([]httpkit.Version, 0, len(apiVersions))
	for _, v := range apiVersions {
		h, err := v.newHandler(core)
		if err != nil {
			return nil, err
		}
		mounted = append(mounted, httpkit.Version{Prefix: v.prefix, Handler: h})
	}
	return httpkit.NewHandler(opts, mounted...)
}

// sourceStreamPath is the path at which a migration target asks its source
// for the migration stream. Every version serves the same stream (its
// protocol is negotiated inside it, not by the path), so the target uses
// the oldest version this server serves: every source it can migrate from,
// released builds included, serves that one.
func sourceStreamPath(migration uuid.UUID) string {
	return apiVersions[0].prefix + "/instance/migrate/" + migration.String() + "/start"
}
