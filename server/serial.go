package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSerialKeep is how many bytes of serial output a server keeps.
const DefaultSerialKeep = 1 << 20

// consoleWriteTimeout bounds one write to a console's client: a client
// that takes no output for that long is cut off. A variable for tests.
var consoleWriteTimeout = 10 * time.Second

// subscriberQueue is how many chunks an attached console may fall behind
// before it is cut off; the guest never waits for a reader.
const subscriberQueue = 256

// Why an instance's consoles end: each is the close reason a console's
// client is given.
const (
	consoleVMStopped    = "the VM stopped"
	consoleVMFailed     = "the VM failed"
	consoleVMMigrated   = "the VM migrated away"
	consoleShuttingDown = "the server is shutting down; the VM stopped"
	consoleBehind       = "reader fell behind"
	consoleClosed       = "the console was closed"
)

// serialLog keeps the most recent output of a serial port and fans it out to
// attached consoles. Write never blocks on a reader: a console whose queue is
// full is disconnected (its channel closed).
type serialLog struct {
	mu sync.Mutex
	// input sends bytes to the guest, giving up when ctx ends; nil when
	// there is no VM. Guarded by mu, as are the fields below.
	input func(ctx context.Context, p []byte) error
	// buf holds bytes [total-len(buf), total) of everything written, of
	// which the last keep are kept (see kept).
	buf   []byte
	keep  int
	total uint64
	subs  map[*serialSub]struct{}
	// ended says the instance's VM is gone: a console attached now gets
	// the kept bytes and is then closed, for endReason.
	ended     bool
	endReason string
}

func newSerialLog(keep int) *serialLog {
	return &serialLog{keep: keep, subs: map[*serialSub]struct{}{}}
}

// Write records guest output and hands it to every console.
func (l *serialLog) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	// Drop old bytes only once twice what is kept has piled up, so that a
	// guest writing byte by byte costs a copy of the kept bytes every keep
	// bytes, not at every byte.
	if len(l.buf) > 2*l.keep {
		l.buf = append(l.buf[:0], l.kept()...)
	}
	l.total += uint64(len(p))
	chunk := append([]byte(nil), p...)
	for s := range l.subs {
		select {
		case s.out <- chunk:
		default:
			l.dropLocked(s, ConsoleEnd{Behind: true, Reason: consoleBehind})
		}
	}
	return len(p), nil
}

// kept returns the most recent bytes, at most keep of them; l.mu is held.
func (l *serialLog) kept() []byte {
	return l.buf[len(l.buf)-min(len(l.buf), l.keep):]
}

// history answers a SerialQuery from what is kept.
func (l *serialLog) history(q SerialQuery) SerialHistory {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.kept()
	first := l.total - uint64(len(kept)) // offset of kept[0]
	start := first
	switch {
	case q.FromStart != nil:
		start = max(*q.FromStart, first)
	case q.MostRecent != nil:
		if *q.MostRecent < l.total {
			start = max(l.total-*q.MostRecent, first)
		}
	}
	start = min(start, l.total)
	end := min(l.total, start+uint64(q.MaxBytes))
	return SerialHistory{
		// Never nil: no output yet is an empty string, not null.
		Data:  append([]byte{}, kept[start-first:end-first]...),
		Start: start, End: end,
	}
}

// serialSub is one attached console.
type serialSub struct {
	l   *serialLog
	out chan []byte
	// ctx ends when the console is closed, and with it any input the
	// guest has not taken yet.
	ctx    context.Context
	cancel context.CancelFunc
	// closed and end (why it was closed) are guarded by l.mu.
	closed bool
	end    ConsoleEnd
}

// attach returns a console that first receives the kept bytes, then
// everything written from now on; once the VM is gone, only the kept bytes.
func (l *serialLog) attach() *serialSub {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &serialSub{l: l, out: make(chan []byte, subscriberQueue)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if kept := l.kept(); len(kept) > 0 {
		s.out <- append([]byte(nil), kept...)
	}
	l.subs[s] = struct{}{}
	if l.ended {
		l.dropLocked(s, ConsoleEnd{Reason: l.endReason})
	}
	return s
}

// dropLocked disconnects s, for end; l.mu is held.
func (l *serialLog) dropLocked(s *serialSub, end ConsoleEnd) {
	if !s.closed {
		s.closed, s.end = true, end
		delete(l.subs, s)
		close(s.out)
		s.cancel()
	}
}

// closeAll disconnects every console, telling each why (reason, one of
// the console* phrases), and stops taking input: the VM is gone. History
// stays readable.
func (l *serialLog) closeAll(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs {
		l.dropLocked(s, ConsoleEnd{Reason: reason})
	}
	l.input, l.ended, l.endReason = nil, true, reason
}

// reopen is called when a new instance is created: consoles attached from
// now on stay attached, for its VM's output.
func (l *serialLog) reopen() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = false
}

// subscribers returns how many consoles are attached.
func (l *serialLog) subscribers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.subs)
}

func (s *serialSub) Output() <-chan []byte { return s.out }

// End says why Output was closed.
func (s *serialSub) End() ConsoleEnd {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return s.end
}

var errNoSerialInput = errors.New("the instance has no running VM to take serial input")

func (s *serialSub) Write(p []byte) (int, error) {
	s.l.mu.Lock()
	in := s.l.input
	s.l.mu.Unlock()
	if in == nil {
		return 0, errNoSerialInput
	}
	if err := in(s.ctx, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *serialSub) Close() error {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	s.l.dropLocked(s, ConsoleEnd{Reason: consoleClosed})
	return nil
}

// setInput sets where console input goes.
func (l *serialLog) setInput(f func(ctx context.Context, p []byte) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.input = f
}

// consoleCount counts the consoles attached to a server.
type consoleCount struct{ n atomic.Int32 }

// take counts one more console, unless limit are attached already.
func (c *consoleCount) take(limit int) bool {
	for {
		n := c.n.Load()
		if int(n) >= limit {
			return false
		}
		if c.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// attached returns how many consoles are attached.
func (c *consoleCount) attached() int { return int(c.n.Load()) }

// countedConsole is an attached console that gives its place back when it
// is closed (once, however often Close is called).
type countedConsole struct {
	*serialSub
	n    *consoleCount
	once sync.Once
}

func (c *countedConsole) Close() error {
	c.once.Do(func() { c.n.n.Add(-1) })
	return c.serialSub.Close()
}
