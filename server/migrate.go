package server

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/server/migration"
)

// migrations is the instance's migration bookkeeping; guarded by Runtime.mu.
type migrations struct {
	// expect is the id of the outbound migration the source was armed for
	// (zero: none).
	expect uuid.UUID
	in     *MigrationProgress
	out    *MigrationProgress
	// abortOut aborts the outbound migration in progress, if any.
	abortOut func(error)
}

func (m *migrations) statusLocked() MigrationStatus {
	st := MigrationStatus{}
	if m.in != nil {
		in := *m.in
		st.In = &in
	}
	if m.out != nil {
		out := *m.out
		st.Out = &out
	}
	return st
}

// Convergence policy of the RAM pre-copy: after the first full pass, copy
// dirty pages in rounds until few are left, too many rounds passed, or too
// much time; then pause the VM for the final copy.
const (
	convergePages  = 256 // 1 MiB left: pause
	maxRounds      = 10
	maxPrecopyTime = 10 * time.Second
	// ioTimeout bounds the wait for any one frame from the peer.
	ioTimeout = 60 * time.Second
)

// FailPoints make a server misbehave on purpose at chosen points of a
// migration, so that tests of the failure paths can run against real
// processes. They are set by the WAGGLE_FAILPOINTS environment variable of
// `waggle server` (comma-separated names); production servers set none.
type FailPoints map[string]bool

// The fail points.
const (
	// FailStallInPrecopy: after its first RAM frame the target stops
	// reading until the source reports the migration failed, or a minute
	// (time for a test to kill it, stop the source, or end its guest).
	FailStallInPrecopy = "target-stall-in-precopy"
	// FailDeviceImport: the target cuts each device payload short, so its
	// import of the VM's state fails in the device's own Restore.
	FailDeviceImport = "target-fail-device-import"
	// FailOldestDeviceVersions: the target offers only the oldest state
	// version of each device kind, as a build from before the newer ones
	// would, so the source must write that version.
	FailOldestDeviceVersions = "target-offers-oldest-device-versions"
)

// ParseFailPoints parses a comma-separated list.
func ParseFailPoints(s string) FailPoints {
	fp := FailPoints{}
	for _, name := range strings.Split(s, ",") {
		if name = strings.TrimSpace(name); name != "" {
			fp[name] = true
		}
	}
	return fp
}

// peer is one side's end of the migration stream.
type peer struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	buf  []byte
	// sent and received count frame bytes, for progress.
	sent, received atomic.Uint64
}

func newPeer(conn net.Conn, r *bufio.Reader) *peer {
	if r == nil {
		r = bufio.NewReaderSize(conn, 1<<20)
	}
	return &peer{conn: conn, r: r, w: bufio.NewWriterSize(conn, 1<<20)}
}

// send queues a frame; flush sends what is queued.
func (p *peer) send(t migration.Type, payload []byte) error {
	_ = p.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := migration.WriteFrame(p.w, t, payload); err != nil {
		return err
	}
	p.sent.Add(uint64(migration.HeaderSize + len(payload)))
	return nil
}

func (p *peer) flush() error {
	_ = p.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
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

// errPeerAborted is the peer's Abort, with its reason.
type errPeerAborted struct{ reason string }

func (e *errPeerAborted) Error() string { return "the peer aborted: " + e.reason }

// recv reads the next frame. A peer's Abort becomes an *errPeerAborted;
// the payload is valid until the next recv.
func (p *peer) recv() (migration.Frame, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	f, err := migration.ReadFrame(p.r, p.buf)
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
		return f, &errPeerAborted{a.Reason}
	}
	return f, nil
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

// abort tells the peer why the migration ends, best effort.
func (p *peer) abort(err error) {
	var pa *errPeerAborted
	if errors.As(err, &pa) {
		return // the peer knows
	}
	_ = p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = migration.WriteFrame(p.w, migration.TypeAbort, migration.Abort{Reason: err.Error()}.Encode())
	_ = p.w.Flush()
}
