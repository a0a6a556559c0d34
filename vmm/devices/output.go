package devices

import (
	"io"
	"sync"
)

// OutputBuffer sits between a device that must never block (a UART's
// transmitter, called on a vCPU thread) and a writer that may (a pipe, a
// socket, a slow terminal). Write copies into a bounded buffer and returns at
// once; a goroutine drains the buffer into the writer. When the buffer is
// full, further bytes are dropped and counted.
//
// Its Write method is a UART output sink: NewUART(num, irq, ob.Write).
type OutputBuffer struct {
	w io.Writer

	// done is closed when the draining goroutine has returned.
	done chan struct{}

	mu sync.Mutex
	// cond is signalled when buf gains bytes or closed is set; uses mu.
	cond *sync.Cond
	// buf holds bytes not yet written, at most max of them; guarded by mu.
	buf []byte
	max int
	// dropped counts bytes that did not fit; guarded by mu.
	dropped uint64
	// err is the first error the writer returned; after it, bytes are
	// dropped. Guarded by mu.
	err error
	// closed is set by Close; guarded by mu.
	closed bool
}

// NewOutputBuffer returns an OutputBuffer holding up to size bytes for w and
// starts its draining goroutine; Close stops it.
func NewOutputBuffer(w io.Writer, size int) *OutputBuffer {
	if size <= 0 {
		size = 64 << 10
	}
	o := &OutputBuffer{w: w, max: size, done: make(chan struct{})}
	o.cond = sync.NewCond(&o.mu)
	go o.drain()
	return o
}

// Write queues what fits of p and drops the rest. It never blocks on the
// underlying writer.
func (o *OutputBuffer) Write(p []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.err != nil {
		o.dropped += uint64(len(p))
		return
	}
	n := min(len(p), o.max-len(o.buf))
	o.buf = append(o.buf, p[:n]...)
	o.dropped += uint64(len(p) - n)
	if n > 0 {
		o.cond.Signal()
	}
}

// Dropped returns how many bytes were dropped because the buffer was full,
// the writer had failed or the buffer was closed.
func (o *OutputBuffer) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// Err returns the first error the underlying writer returned, if any.
func (o *OutputBuffer) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Close writes out what is buffered, stops the draining goroutine and
// returns the writer's first error. Later writes are dropped.
func (o *OutputBuffer) Close() error {
	o.mu.Lock()
	o.closed = true
	o.cond.Signal()
	o.mu.Unlock()
	<-o.done
	return o.Err()
}

func (o *OutputBuffer) drain() {
	defer close(o.done)
	var chunk []byte
	for {
		o.mu.Lock()
		for len(o.buf) == 0 && !o.closed {
			o.cond.Wait()
		}
		if len(o.buf) == 0 || o.err != nil {
			o.mu.Unlock()
			return
		}
		chunk = append(chunk[:0], o.buf...)
		o.buf = o.buf[:0]
		o.mu.Unlock()

		if _, err := o.w.Write(chunk); err != nil {
			o.mu.Lock()
			o.err = err
			o.buf = o.buf[:0]
			o.mu.Unlock()
			return
		}
	}
}
