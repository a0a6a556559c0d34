package httpkit

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync/atomic"
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

// withWriteDeadline gives every answer timeout to be written: a client
// that stops reading cannot hold its handler (and its connection's place)
// for ever. The deadline outlives the handler, so that it also bounds the
// server's flushing of the answer's end; a handler that takes the
// connection over (Hijack) has it cleared (see statusRecorder.Hijack).
func withWriteDeadline(timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if timeout > 0 {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout))
		}
		next.ServeHTTP(w, r)
	})
}

// Hijack hands the connection over, with its read and write deadlines
// cleared: the skeleton's deadlines are for HTTP requests and answers, not
// for the protocol the connection switches to, which sets its own.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		_ = c.Close()
		return nil, nil, fmt.Errorf("clear deadlines of hijacked connection: %w", err)
	}
	return c, brw, nil
}

type bodyLimitKey struct{}

// bodyLimit returns the body size limit the request ctx belongs to was
// given by NewHandler, else DefaultMaxBodyBytes.
func bodyLimit(ctx context.Context) int64 {
	if n, ok := ctx.Value(bodyLimitKey{}).(int64); ok && n > 0 {
		return n
	}
	return DefaultMaxBodyBytes
}

// withBodyLimit caps a request body at max bytes and gives the client
// timeout to send it, from the first read of it to its end: the
// connection's read deadline is set then and cleared once the body has
// been read to its end, so that a long poll or an upgraded connection is
// not cut. A body nobody reads is never waited for: every answer given
// before the body was read to its end carries Connection: close, so that
// the server closes the connection instead of draining the body (which a
// slow client could make last, holding a connection's place). Whether an
// operation takes a body at all, and the early refusal of a declared
// length over max, are the validator's (see NewValidator).
//
// net/http reads up to 256 KiB of an unread body after the handler even
// when it will close the connection; that is bounded here by drainGrace,
// so that a slow body cannot hold the connection then either.
func withBodyLimit(max int64, timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), bodyLimitKey{}, max))
		if !HasBody(r) {
			next.ServeHTTP(w, r)
			return
		}
		body := &trackedBody{ReadCloser: http.MaxBytesReader(w, r.Body, max), timeout: timeout,
			rc: http.NewResponseController(w)}
		r.Body = body
		gw := &closeUnlessReadWriter{ResponseWriter: w, body: body}
		next.ServeHTTP(gw, r)
		if gw.hijacked || body.done.Load() {
			return
		}
		if !gw.wrote {
			gw.guard() // the server will answer for the handler
		}
		// Even a connection it will close, the server drains a little
		// (so that unread bytes do not reset it before the client has the
		// answer): what has arrived is read, but nothing is waited for.
		grace := drainGrace
		if timeout > 0 && timeout < grace {
			grace = timeout
		}
		_ = body.rc.SetReadDeadline(time.Now().Add(grace))
	})
}

// drainGrace bounds the time the server spends reading the unread rest of
// a body after the answer, before it closes the connection.
const drainGrace = 500 * time.Millisecond

// HasBody reports whether r may carry body bytes: a body that is known to
// be empty (no body, or Content-Length 0) is none.
func HasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// trackedBody arms the connection's read deadline at the body's first
// read, clears it at the body's end, and remembers whether the end was
// reached.
type trackedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	armed   bool
	done    atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	if !b.armed {
		b.armed = true
		if b.timeout > 0 {
			_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
		}
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done.Load() {
		b.done.Store(true)
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// closeUnlessReadWriter adds Connection: close to an answer given before
// the request's body was read to its end.
type closeUnlessReadWriter struct {
	http.ResponseWriter
	body     *trackedBody
	wrote    bool
	hijacked bool
}

func (c *closeUnlessReadWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(c.ResponseWriter).Hijack()
	if err == nil {
		c.hijacked = true
	}
	return conn, brw, err
}

func (c *closeUnlessReadWriter) guard() {
	c.wrote = true
	if !c.body.done.Load() {
		c.ResponseWriter.Header().Set("Connection", "close")
	}
}

func (c *closeUnlessReadWriter) WriteHeader(code int) {
	if !c.wrote && code >= 200 {
		c.guard()
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *closeUnlessReadWriter) Write(p []byte) (int, error) {
	if !c.wrote {
		c.guard()
	}
	return c.ResponseWriter.Write(p)
}

func (c *closeUnlessReadWriter) Flush() {
	if !c.wrote {
		c.guard()
	}
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *closeUnlessReadWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
