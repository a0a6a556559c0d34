package httpkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"
)

type requestIDKey struct{}

// RequestID returns the id of the request ctx belongs to, or "" outside
// a request.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withRequestID gives every request an id: the client's X-Request-Id when
// it sends a sane one, else a fresh random one. The id is echoed in the
// response header, the access log and every Error body.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !saneRequestID(id) {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// saneRequestID reports whether a client's request id may be echoed: 1 to
// 64 printable ASCII characters.
func saneRequestID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// statusRecorder remembers the status a handler wrote, for the access log.
// It passes Hijack and deadlines through (via Unwrap and
// http.ResponseController) so that upgrades work behind it.
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

// withAccessLog logs one line per request, and turns a handler's panic into
// a 500 with the Error schema instead of a dropped connection.
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
					WriteError(rec, r, &Error{http.StatusInternalServerError, CodeInternal, "internal error"})
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

// withBodyLimit caps a request body at max bytes and gives the client
// timeout to send it: the connection's read deadline is set before the
// body is read and cleared once it has been read to its end, so that a
// long poll or an upgraded connection, whose body is empty or read at
// once, is not cut. A body nobody reads keeps the deadline, which bounds
// the server's own discarding of it after the handler.
func withBodyLimit(max int64, timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			WriteError(w, r, Errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
				"request body is larger than %s", byteSize(max)))
			return
		}
		if !HasBody(r) {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		body := io.ReadCloser(http.MaxBytesReader(w, r.Body, max))
		if timeout > 0 && rc.SetReadDeadline(time.Now().Add(timeout)) == nil {
			body = &deadlineBody{ReadCloser: body, rc: rc}
		}
		r.Body = body
		next.ServeHTTP(w, r)
	})
}

// HasBody reports whether r may carry body bytes: a body that is known to
// be empty (no body, or Content-Length 0) is none.
func HasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// deadlineBody clears the connection's read deadline when the body has
// been read to its end.
type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	cleared bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.cleared {
		b.cleared = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
