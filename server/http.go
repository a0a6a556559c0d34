package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wagglevm/waggle/spec"
)

// MaxBodyBytes bounds a request body; a larger one answers 413 body_too_large.
const MaxBodyBytes = 1 << 20

// Error codes: stable, listed in each contract's description.
const (
	CodeInvalidRequest    = "invalid_request"
	CodeInvalidSpec       = "invalid_spec"
	CodeNoInstance        = "no_instance"
	CodeInstanceExists    = "instance_exists"
	CodeInvalidTransition = "invalid_transition"
	CodeNoSuchMigration   = "no_such_migration"
	CodeNotFound          = "not_found"
	CodeMethodNotAllowed  = "method_not_allowed"
	CodeBodyTooLarge      = "body_too_large"
	CodeUnsupportedMedia  = "unsupported_media_type"
	CodeNotUpgraded       = "not_upgraded"
	CodeVMError           = "vm_error"
	CodeNotExpressible    = "not_expressible"
	CodeInternal          = "internal"
)

// apiError is an error with its HTTP status and code, as the handlers and
// middleware produce them.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// errorBody is the contracts' Error schema. Every version has the same
// shape, so one type serves them all.
type errorBody struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// classify maps an error from the Core or the HTTP plumbing to its status
// and code.
func classify(err error) *apiError {
	var ae *apiError
	var ve *spec.ValidationError
	var te *TransitionError
	var vme *VMError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return &apiError{http.StatusRequestEntityTooLarge, CodeBodyTooLarge, err.Error()}
	case errors.As(err, &ve):
		return &apiError{http.StatusBadRequest, CodeInvalidSpec, err.Error()}
	case errors.As(err, &te):
		return &apiError{http.StatusConflict, CodeInvalidTransition, err.Error()}
	case errors.As(err, &vme):
		return &apiError{http.StatusBadRequest, CodeVMError, err.Error()}
	case errors.Is(err, ErrNoInstance):
		return &apiError{http.StatusNotFound, CodeNoInstance, err.Error()}
	case errors.Is(err, ErrInstanceExists):
		return &apiError{http.StatusConflict, CodeInstanceExists, err.Error()}
	case errors.Is(err, ErrNoSuchMigration):
		return &apiError{http.StatusNotFound, CodeNoSuchMigration, err.Error()}
	}
	return &apiError{http.StatusInternalServerError, CodeInternal, err.Error()}
}

// writeError answers err as the Error schema.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := classify(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	_ = json.NewEncoder(w).Encode(errorBody{ErrorCode: ae.Code, Message: ae.Message, RequestID: RequestID(r.Context())})
}

type requestIDKey struct{}

// RequestID returns the id of the request ctx belongs to.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withRequestID gives every request an id: the client's X-Request-Id when it
// sends a sane one, else a fresh random one. The id is echoed in the response
// header, the access log and every Error body.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if len(id) == 0 || len(id) > 64 {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// statusRecorder remembers the status a handler wrote, for the access log.
// It passes Hijack through (via Unwrap and http.ResponseController) so that
// upgrades work behind it.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += n
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// withAccessLog logs one line per request, and turns a handler's panic into a
// 500 with the Error schema instead of a dropped connection.
func withAccessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.ErrorContext(r.Context(), "handler panic", "request_id", RequestID(r.Context()), "panic", p, "stack", string(debug.Stack()))
				if rec.status == 0 {
					writeError(rec, r, &apiError{http.StatusInternalServerError, CodeInternal, "internal error"})
				}
			}
			level := slog.LevelInfo
			if rec.status >= 500 {
				level = slog.LevelError
			}
			log.Log(r.Context(), level, "http",
				"request_id", RequestID(r.Context()), "method", r.Method, "path", r.URL.Path,
				"status", rec.status, "bytes", rec.bytes, "duration", time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

// withBodyLimit caps request bodies at MaxBodyBytes.
func withBodyLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxBodyBytes {
			writeError(w, r, &apiError{http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
				"request body is larger than 1 MiB"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// NewHandler returns the server's HTTP handler: every supported API version
// mounted at its path, over one core.
func NewHandler(core Core, log *slog.Logger) (http.Handler, error) {
	if log == nil {
		log = slog.Default()
	}
	v1, err := newV1Handler(core)
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	r.Mount("/v1", v1)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &apiError{http.StatusNotFound, CodeNotFound, "no such path: " + r.URL.Path})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &apiError{http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method + " is not allowed on " + r.URL.Path})
	})
	return withRequestID(withAccessLog(log, withBodyLimit(r))), nil
}
