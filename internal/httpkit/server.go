package httpkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of ServerOptions.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxConns          = 256
)

// ServerOptions configure NewServer.
type ServerOptions struct {
	// ReadHeaderTimeout bounds the time to read a request's header
	// (default DefaultReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that has sent no new
	// request for this long (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxConns bounds the connections open at once, upgraded ones
	// included (default DefaultMaxConns). At the limit, a new connection
	// takes the place of the one that has been quiet longest (no request
	// yet, or idle between requests), so that silent connections cannot
	// lock clients out; a connection busy with a request that has no good
	// credentials counts as quiet. When every connection is busy, it is
	// answered 503 too_many_connections and closed.
	MaxConns int
	// Log receives the server's own errors (default slog.Default()).
	Log *slog.Logger
}

// Server is an http.Server with timeouts, a connection limit and a
// shutdown that ends in bounded time, upgraded connections included. The
// body deadline lives in the handler (HandlerOptions.BodyReadTimeout).
type Server struct {
	srv    *http.Server
	opts   ServerOptions
	cancel context.CancelFunc // ends every request's context at shutdown
	conns  *connSet
}

// NewServer returns a Server for h.
func NewServer(h http.Handler, opts ServerOptions) *Server {
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{opts: opts, cancel: cancel, conns: newConnSet()}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return base },
		ConnState:         s.conns.track,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if lc, ok := c.(*limitConn); ok {
				return context.WithValue(ctx, connKey{}, lc)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(opts.Log.Handler(), slog.LevelWarn),
	}
	return s
}

// Serve accepts connections on ln, at most MaxConns open at once, until
// Shutdown. It returns http.ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(&limitListener{Listener: ln, max: s.opts.MaxConns, conns: s.conns, log: s.opts.Log})
}

// Shutdown stops the server within ctx: it stops accepting, ends the
// context of every request in flight (long polls answer at once), waits
// for requests to finish and upgraded connections to end, and when ctx
// ends first closes whatever is left, upgraded connections included
// (http.Server.Shutdown does not track those). It returns ctx's error
// when it had to close connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if werr := s.conns.wait(ctx); werr != nil {
		s.conns.closeAll()
		err = werr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// connSet holds the open connections a limitListener accepted.
type connSet struct {
	mu sync.Mutex
	// conns maps each open connection to the time it last became quiet
	// (new, or idle between requests); the zero time while it is busy.
	conns   map[*limitConn]time.Time // guarded by mu
	changed chan struct{}            // closed and replaced when conns shrinks; guarded by mu
}

func newConnSet() *connSet {
	return &connSet{conns: map[*limitConn]time.Time{}, changed: make(chan struct{})}
}

// add adds c, a new connection. At max it first evicts the connection
// that has been quiet longest; when none is quiet, c is refused.
func (cs *connSet) add(c *limitConn, max int) bool {
	cs.mu.Lock()
	var victim *limitConn
	if len(cs.conns) >= max {
		var since time.Time
		for other, quiet := range cs.conns {
			if !quiet.IsZero() && (victim == nil || quiet.Before(since)) {
				victim, since = other, quiet
			}
		}
		if victim == nil {
			cs.mu.Unlock()
			return false
		}
		delete(cs.conns, victim)
	}
	cs.conns[c] = time.Now()
	cs.mu.Unlock()
	if victim != nil {
		_ = victim.Close() // outside the lock: Close removes it (again)
	}
	return true
}

// track follows the HTTP server's view of each connection: new and idle
// ones are quiet, and may be evicted; active and hijacked ones are not
// (but see markEvictable).
func (cs *connSet) track(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*limitConn)
	if !ok {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if _, open := cs.conns[c]; !open {
		return
	}
	switch state {
	case http.StateNew, http.StateIdle:
		cs.conns[c] = time.Now()
	case http.StateActive, http.StateHijacked:
		cs.conns[c] = time.Time{}
	}
}

type connKey struct{}

// markEvictable lets the connection of the request ctx belongs to be
// evicted (see ServerOptions.MaxConns) for as long as that request lasts,
// as if it were quiet. It does nothing outside a Server.
func markEvictable(ctx context.Context) {
	c, ok := ctx.Value(connKey{}).(*limitConn)
	if !ok {
		return
	}
	cs := c.set
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if _, open := cs.conns[c]; open {
		cs.conns[c] = time.Now()
	}
}

func (cs *connSet) remove(c *limitConn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.conns, c)
	close(cs.changed)
	cs.changed = make(chan struct{})
}

// wait waits until no connection is open or ctx ends.
func (cs *connSet) wait(ctx context.Context) error {
	for {
		cs.mu.Lock()
		n, ch := len(cs.conns), cs.changed
		cs.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (cs *connSet) closeAll() {
	cs.mu.Lock()
	all := make([]*limitConn, 0, len(cs.conns))
	for c := range cs.conns {
		all = append(all, c)
	}
	cs.mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
}

// limitListener accepts at most max connections open at once. One over
// the limit is answered 503 and closed at once rather than left in the
// kernel's queue, so its client learns at once that it must come back.
type limitListener struct {
	net.Listener
	max     int
	conns   *connSet
	log     *slog.Logger
	refused int       // connections refused since the last log line; Accept's own
	logged  time.Time // when the last line was logged; Accept's own
}

// tooMany is the whole answer to a connection over the limit.
var tooMany = func() []byte {
	body, _ := json.Marshal(ErrorBody{ErrorCode: CodeTooManyConnections,
		Message: "the server has too many connections open; try again later", RequestID: "-"})
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"+
		"Connection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitConn{Conn: c, set: l.conns}
		if l.conns.add(lc, l.max) {
			return lc, nil
		}
		// One line a second at most, whatever the flood.
		if l.refused++; time.Since(l.logged) >= time.Second {
			l.log.Warn("connections refused: too many open", "refused", l.refused, "max", l.max)
			l.refused, l.logged = 0, time.Now()
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(tooMany)
		_ = c.Close()
	}
}

// limitConn frees its place in the set when it is closed, however it is
// closed: by the HTTP server, or by a handler that hijacked it.
type limitConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.set.remove(c) })
	return err
}
