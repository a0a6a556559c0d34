package httpkit

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// Defaults of HandlerOptions.
const (
	DefaultMaxBodyBytes    = 1 << 20
	DefaultBodyReadTimeout = 10 * time.Second
	DefaultWriteTimeout    = 2 * time.Minute
)

// HandlerOptions configure the skeleton NewHandler builds.
type HandlerOptions struct {
	// Log receives the access log and handler panics (default
	// slog.Default()).
	Log *slog.Logger
	// Auth checks each request's credentials; the zero Auth accepts none.
	Auth Auth
	// MaxBodyBytes bounds a request body; a larger one answers 413
	// body_too_large (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// BodyReadTimeout bounds the time a client takes to send a request
	// body, from its first read to its end; a slower body answers 408
	// request_timeout or loses its connection (default
	// DefaultBodyReadTimeout). A body nobody reads is not waited for.
	BodyReadTimeout time.Duration
	// WriteTimeout bounds the time an answer takes to be written, from
	// the handler's start: a client that stops reading loses its
	// connection (default DefaultWriteTimeout). It must exceed the longest
	// long poll. A connection taken over by its handler (an upgrade) has
	// its deadlines cleared.
	WriteTimeout time.Duration
}

// Version is one API version for NewHandler to mount: Handler serves
// every path below Prefix ("/v1"). Handler is expected to sit behind
// NewValidator with the same prefix, which refuses what the version's
// contract does not allow and asks for credentials where it says so.
type Version struct {
	Prefix  string
	Handler http.Handler
}

// NewHandler returns the skeleton with versions mounted: each request gets
// an id and an access log line, its credentials checked (see
// Authenticated) and its body bounded in size and time, and then goes to
// the version its path is under. A path under no version answers 404
// not_found, in the Error schema like every other refusal.
func NewHandler(opts HandlerOptions, versions ...Version) (http.Handler, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.BodyReadTimeout <= 0 {
		opts.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	r := chi.NewRouter()
	seen := map[string]bool{}
	for _, v := range versions {
		if !strings.HasPrefix(v.Prefix, "/") || strings.HasSuffix(v.Prefix, "/") || seen[v.Prefix] {
			return nil, fmt.Errorf("mount prefix %q: want a unique path like /v1", v.Prefix)
		}
		seen[v.Prefix] = true
		r.Mount(v.Prefix, v.Handler)
	}
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		WriteError(w, req, &Error{http.StatusNotFound, CodeNotFound, "no such path: " + req.URL.Path})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		allowed := routeMethods(r, req.URL.Path)
		setAllow(w, allowed)
		WriteError(w, req, Errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			"%s is not allowed on %s; allowed: %s", req.Method, req.URL.Path, strings.Join(allowed, ", ")))
	})
	var h http.Handler = r
	h = withBodyLimit(opts.MaxBodyBytes, opts.BodyReadTimeout, h)
	h = withAuth(opts.Auth, h)
	h = withWriteDeadline(opts.WriteTimeout, h)
	h = withAccessLog(opts.Log, h)
	return withRequestID(h), nil
}

// routeMethods lists the methods routes has on path, for a 405 from the
// router itself (one that a version's own chi router answers).
func routeMethods(routes chi.Routes, path string) []string {
	var out []string
	for _, m := range methods {
		if routes.Match(chi.NewRouteContext(), m, path) {
			out = append(out, m)
		}
	}
	return out
}
