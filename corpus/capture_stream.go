package corpus

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/wagglevm/waggle/server/migration"
)

// A migration's stream, as the target saw it: the capturer puts a
// recording proxy between the target and the source (the target dials the
// proxy as the migration's source address), keeps the bytes of each
// direction, and reads them back as the HTTP upgrade and then frames.

// streamProxy forwards one connection to a target address and records
// the bytes each way.
type streamProxy struct {
	ln       net.Listener
	to       string
	mu       sync.Mutex
	up, down bytes.Buffer // up: from the target (dialer); down: from the source
	done     chan struct{}
	err      error
}

// newStreamProxy listens on loopback and forwards the first connection it
// takes to the address to.
func newStreamProxy(to string) (*streamProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &streamProxy{ln: ln, to: to, done: make(chan struct{})}
	go p.serve()
	return p, nil
}

// Addr is where the target dials.
func (p *streamProxy) Addr() string { return p.ln.Addr().String() }

func (p *streamProxy) serve() {
	defer close(p.done)
	c, err := p.ln.Accept()
	p.ln.Close()
	if err != nil {
		p.err = err
		return
	}
	defer c.Close()
	s, err := net.Dial("tcp", p.to)
	if err != nil {
		p.err = err
		return
	}
	defer s.Close()
	var wg sync.WaitGroup
	pump := func(dst, src net.Conn, rec *bytes.Buffer) {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.mu.Lock()
				rec.Write(buf[:n])
				p.mu.Unlock()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		// One side is done: end the other's writes too.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	wg.Add(2)
	go pump(s, c, &p.up)
	go pump(c, s, &p.down)
	wg.Wait()
}

// recorded waits until the connection has ended (or ctx ends) and returns
// the bytes of each direction.
func (p *streamProxy) recorded(ctx context.Context) (up, down []byte, err error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		p.ln.Close()
		return nil, nil, fmt.Errorf("the migration stream did not end: %w", ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.up.Bytes()), bytes.Clone(p.down.Bytes()), p.err
}

// streamFrames reads one direction of a recorded stream: the HTTP upgrade
// request (up) or answer (down), then frames to the end. Each frame is
// returned whole, header and payload, as it was on the wire.
func streamFrames(data []byte, up bool) ([]migration.Frame, [][]byte, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	if up {
		if _, err := http.ReadRequest(br); err != nil {
			return nil, nil, fmt.Errorf("the target's upgrade request: %w", err)
		}
	} else {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("the source's upgrade answer: %w", err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, nil, fmt.Errorf("the source answered the upgrade with HTTP %d", resp.StatusCode)
		}
	}
	var frames []migration.Frame
	var raw [][]byte
	for {
		var rec bytes.Buffer
		f, err := migration.ReadFrame(io.TeeReader(br, &rec), nil)
		if errors.Is(err, io.EOF) && rec.Len() == 0 {
			return frames, raw, nil
		}
		if err != nil {
			return frames, raw, fmt.Errorf("frame %d: %w", len(frames)+1, err)
		}
		f.Payload = bytes.Clone(f.Payload)
		frames = append(frames, f)
		raw = append(raw, rec.Bytes())
	}
}
