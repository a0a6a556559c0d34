package server

import (
	"fmt"
	"net/http"
	"time"

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

// serialQuery is every version's serial history query: at most one of
// fromStart and mostRecent, and at most maxBytes (64 KiB when not given).
func serialQuery(fromStart, mostRecent *int64, maxBytes *int32) (SerialQuery, error) {
	if fromStart != nil && mostRecent != nil {
		return SerialQuery{}, &apiError{http.StatusBadRequest, CodeInvalidRequest, "query parameters from_start and most_recent: give at most one"}
	}
	q := SerialQuery{MaxBytes: 65536}
	if maxBytes != nil {
		q.MaxBytes = int(*maxBytes)
	}
	if fromStart != nil {
		v := uint64(*fromStart)
		q.FromStart = &v
	}
	if mostRecent != nil {
		v := uint64(*mostRecent)
		q.MostRecent = &v
	}
	return q, nil
}

// armRequest is every version's arm request: a migration id, the secret
// when the client gives one (else the server makes it), and the arm's
// lifetime in seconds when given.
func armRequest(id uuid.UUID, secret *string, ttlSeconds *int32) MigrationArm {
	arm := MigrationArm{ID: id}
	if secret != nil {
		arm.Secret = *secret
	}
	if ttlSeconds != nil {
		arm.TTL = time.Duration(*ttlSeconds) * time.Second
	}
	return arm
}

// requested is every version's state change request ("run", "stop",
// "reboot"; the contracts' enums spell them as Requested.String does).
func requested(wire string) (Requested, error) {
	for _, r := range []Requested{RequestRun, RequestStop, RequestReboot} {
		if r.String() == wire {
			return r, nil
		}
	}
	return 0, &apiError{http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("body.requested: unknown request %q", wire)}
}

// monitorWait is how long every version's state monitor waits: timeout_ms
// when given, else 30 s.
func monitorWait(timeoutMs *int32) time.Duration {
	if timeoutMs != nil {
		return msDuration(*timeoutMs)
	}
	return msDuration(30000)
}
