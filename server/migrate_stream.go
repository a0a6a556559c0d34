package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wagglevm/waggle/server/migration"
)

// streamConn is the connection of a migration stream, with its timeouts: no
// single Read or Write (of at most writeChunk bytes) may wait for the peer
// longer than the idle timeout, nor past the hard deadline while one is
// set; and stop ends every wait at once, now and later.
type streamConn struct {
	net.Conn

	mu sync.Mutex
	// idle bounds each wait; until, if not zero, bounds them all. Guarded
	// by mu, as is stopped.
	idle  time.Duration
	until time.Time
	// stopped is why the stream was stopped; nil while it was not.
	stopped error
	// timedOut is the last wait's timeout, nil if none timed out. A
	// reader may drop a Read's error (bufio.Reader.ReadLine does, after
	// part of a line), so a caller can ask here why its read ended.
	timedOut error
}

// writeChunk is the most a Write hands the kernel under one deadline, so
// that a slow but live reader is not taken for a silent one: a peer that
// takes less than writeChunk bytes in the idle timeout (200 KB/s at the
// default) is. It is the size of a peer's write buffer, so a flush is one
// chunk.
const writeChunk = 1 << 20

func newStreamConn(c net.Conn, idle time.Duration) *streamConn {
	return &streamConn{Conn: c, idle: idle}
}

// setLimits changes the idle timeout and the hard deadline (zero: none).
func (c *streamConn) setLimits(idle time.Duration, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle, c.until = idle, until
}

// stop makes every wait on the stream end now, and every later one fail,
// with cause.
func (c *streamConn) stop(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped == nil {
		c.stopped = cause
	}
	_ = c.Conn.SetDeadline(time.Now())
}

// lastWords lets the stream send for d more, even if it was stopped, so
// that an Abort can tell the peer why the stream ends.
func (c *streamConn) lastWords(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped, c.idle, c.until = nil, d, time.Now().Add(d)
}

// arm sets the deadline of the next wait; under mu, so that a stop is
// never undone by it.
func (c *streamConn) arm(read bool) (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped != nil {
		return 0, c.stopped
	}
	d := time.Now().Add(c.idle)
	if !c.until.IsZero() && c.until.Before(d) {
		d = c.until
	}
	if read {
		return c.idle, c.Conn.SetReadDeadline(d)
	}
	return c.idle, c.Conn.SetWriteDeadline(d)
}

// errSilentPeer is a peer that stalled the stream past a timeout.
var errSilentPeer = errors.New("the peer stalled the stream")

// explain turns a timeout into errSilentPeer, or into the stop's cause.
func (c *streamConn) explain(err error, idle time.Duration, what string) error {
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped != nil {
		return c.stopped
	}
	if !c.until.IsZero() && !time.Now().Before(c.until) {
		c.timedOut = fmt.Errorf("%w: the handshake took too long", errSilentPeer)
	} else {
		c.timedOut = fmt.Errorf("%w: it %s for %v", errSilentPeer, what, idle)
	}
	return c.timedOut
}

// timeout returns the error of the last wait that timed out, nil if none
// did.
func (c *streamConn) timeout() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timedOut
}

func (c *streamConn) Read(p []byte) (int, error) {
	idle, err := c.arm(true)
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	return n, c.explain(err, idle, "sent nothing")
}

func (c *streamConn) Write(p []byte) (int, error) {
	var done int
	for len(p) > 0 {
		idle, err := c.arm(false)
		if err != nil {
			return done, err
		}
		n, err := c.Conn.Write(p[:min(len(p), writeChunk)])
		done += n
		p = p[n:]
		if err != nil {
			return done, c.explain(err, idle, "took nothing we sent")
		}
	}
	return done, nil
}

// readBuffer is the size of a peer's read buffer. It is kept well below a
// RAM frame's 1 MiB of data: bufio reads straight into the caller's memory
// when the buffer is empty and the read at least as large as it, so most
// of a frame's pages go from the socket into guest memory with no copy
// between (recvInto), and at most readBuffer bytes of each pass through the
// buffer.
const readBuffer = 64 << 10

// peer is one side's end of the migration stream.
type peer struct {
	// name is what the peer is: "source" or "target".
	name string
	conn *streamConn
	r    *bufio.Reader
	w    *bufio.Writer
	buf  []byte
	// trusted says the peer has proved that it holds the migration secret:
	// only then is the reason of its Abort shown, or ours sent.
	trusted bool
	// protocol is the protocol version the handshake chose.
	protocol uint32
	// sent and received count frame bytes, for progress.
	sent, received atomic.Uint64
}

// newPeer returns the peer of conn; r, when not nil, is a reader of conn
// that may hold bytes already read.
func newPeer(name string, conn *streamConn, r *bufio.Reader) *peer {
	if r == nil {
		r = bufio.NewReaderSize(conn, readBuffer)
	}
	return &peer{name: name, conn: conn, r: r, w: bufio.NewWriterSize(conn, 1<<20)}
}

// send queues a frame; flush sends what is queued.
func (p *peer) send(t migration.Type, payload []byte) error {
	if err := migration.WriteFrame(p.w, t, payload); err != nil {
		return err
	}
	p.sent.Add(uint64(migration.HeaderSize + len(payload)))
	return nil
}

func (p *peer) flush() error {
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// sendRAM sends a RAM frame whose data is written from data itself: a
// large block bypasses the buffer (one copy fewer per page), a small one
// is buffered like any frame.
func (p *peer) sendRAM(gpa uint64, data []byte) error {
	var hdr [migration.HeaderSize + 12]byte
	if _, err := p.w.Write(migration.AppendRAMFrameHeader(hdr[:0], gpa, len(data))); err != nil {
		return fmt.Errorf("write RAM frame: %w", err)
	}
	if len(data) <= p.w.Available() {
		_, _ = p.w.Write(data) // cannot fail: it fits the buffer
	} else {
		if err := p.flush(); err != nil {
			return err
		}
		if _, err := p.conn.Write(data); err != nil {
			return fmt.Errorf("write RAM frame: %w", err)
		}
	}
	p.sent.Add(uint64(len(hdr) + len(data)))
	return nil
}

// sendNow sends one frame at once.
func (p *peer) sendNow(t migration.Type, payload []byte) error {
	if err := p.send(t, payload); err != nil {
		return err
	}
	return p.flush()
}

// errPeerAborted is the peer's Abort. Its reason is the peer's own text:
// Error shows it only when the peer was trusted, and then sanitized.
type errPeerAborted struct {
	peer    string
	code    migration.AbortCode
	reason  string
	trusted bool
}

func (e *errPeerAborted) Error() string {
	switch e.code {
	case migration.AbortNoSuchMigration:
		return reasonNoSuchMigration
	case migration.AbortSecretRefused:
		return "the " + e.peer + " refused the migration secret"
	case migration.AbortNoCommonProtocol:
		return reasonNoProtocol
	}
	if e.trusted && e.reason != "" {
		return "the " + e.peer + " aborted: " + sanitize(e.reason, maxShownReason)
	}
	return "the " + e.peer + " aborted the migration"
}

// recv reads the next frame. A peer's Abort becomes an *errPeerAborted;
// the payload is valid until the next recv.
func (p *peer) recv() (migration.Frame, error) {
	return p.recvInto(nil)
}

// ramInto takes a RAM frame's page data, n bytes for gpa on, from r; the
// head of the frame has been read and checked.
type ramInto func(gpa uint64, n int, r io.Reader) error

// recvInto is recv, except that, if into is not nil, a RAM frame's page
// data is handed to into to read, straight into guest memory, rather than
// into a buffer: the frame is then returned without a payload.
func (p *peer) recvInto(into ramInto) (migration.Frame, error) {
	t, n, err := migration.ReadHeader(p.r)
	if err != nil {
		return migration.Frame{}, fmt.Errorf("receive: %w", err)
	}
	if t == migration.TypeRAM && into != nil {
		gpa, size, err := migration.ReadRAMHead(p.r, n)
		if err != nil {
			return migration.Frame{}, fmt.Errorf("receive: %w", err)
		}
		data := &readRecorder{r: p.r}
		err = into(gpa, size, data)
		if data.err != nil {
			return migration.Frame{}, fmt.Errorf("receive: %w", migration.Truncated(t, data.err))
		}
		if err != nil {
			return migration.Frame{}, err
		}
		p.received.Add(uint64(migration.HeaderSize) + uint64(n))
		return migration.Frame{Type: t}, nil
	}
	f, err := migration.ReadPayload(p.r, t, n, p.buf)
	if err != nil {
		return f, fmt.Errorf("receive: %w", err)
	}
	if cap(f.Payload) > cap(p.buf) {
		p.buf = f.Payload[:0]
	}
	p.received.Add(uint64(migration.HeaderSize + len(f.Payload)))
	if f.Type == migration.TypeAbort {
		a, err := migration.DecodeAbort(f.Payload)
		if err != nil {
			return f, err
		}
		return f, &errPeerAborted{peer: p.name, code: a.Code, reason: a.Reason, trusted: p.trusted}
	}
	return f, nil
}

// readRecorder keeps the first error its reader gave: a RAM frame's data
// that ended early is the stream's fault, not the guest memory's.
type readRecorder struct {
	r   io.Reader
	err error
}

func (d *readRecorder) Read(b []byte) (int, error) {
	n, err := d.r.Read(b)
	if err != nil && d.err == nil {
		d.err = err
	}
	return n, err
}

// expect reads the next frame and checks its type.
func (p *peer) expect(t migration.Type) (migration.Frame, error) {
	f, err := p.recv()
	if err != nil {
		return f, err
	}
	if f.Type != t {
		return f, fmt.Errorf("%w: expected %s, got %s", migration.ErrFrame, t, f.Type)
	}
	return f, nil
}

// abort tells the peer why the migration ends, best effort and within a
// second. An untrusted peer learns only the code.
func (p *peer) abort(err error) {
	var pa *errPeerAborted
	if errors.As(err, &pa) {
		return // the peer knows
	}
	a := migration.Abort{Code: abortCode(err)}
	if p.trusted {
		a.Reason = err.Error()
	}
	p.conn.lastWords(time.Second)
	_ = migration.WriteFrame(p.w, migration.TypeAbort, a.Encode())
	_ = p.w.Flush()
}
