package corpus

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The capturer's processes: real `waggle server`s of this build, on
// loopback, driven by this build's `waggle vm` CLI, and read over plain
// HTTP so that each response body is kept exactly as the server wrote it.

// capServer is a running `waggle server`.
type capServer struct {
	name, addr, token, storage string
	cmd                        *exec.Cmd
	out                        *capBuffer
	done                       chan struct{} // closed once the process has ended
	werr                       error         // set before done closes
}

// capBuffer collects a process's output for error messages.
type capBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.Write(p)
}

// tail returns the last n bytes written.
func (c *capBuffer) tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// capEnv is the environment of the capturer's processes: nothing of the
// user's state or data directories.
func capEnv(dir string) []string {
	env := []string{"HOME=" + dir, "XDG_STATE_HOME=" + filepath.Join(dir, "state"), "XDG_DATA_HOME=" + filepath.Join(dir, "data")}
	for _, k := range []string{"PATH", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// startCapServer starts bin's `waggle server` named name under dir, with
// its own token file and the storage root storage, on a free loopback port,
// and waits until it accepts connections.
func startCapServer(ctx context.Context, bin, dir, name, storage string, wait time.Duration) (*capServer, error) {
	sdir := filepath.Join(dir, name)
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	s := &capServer{name: name, token: filepath.Join(sdir, "token"), storage: storage, out: &capBuffer{}, done: make(chan struct{})}
	if err := os.WriteFile(s.token, []byte(hex.EncodeToString(tok)+"\n"), 0o600); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	ln.Close()
	s.cmd = exec.Command(bin, "server", "-listen", s.addr, "-auth-token-file", s.token, "-storage-root", storage)
	s.cmd.Env = capEnv(sdir)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s server: %w", name, err)
	}
	go func() {
		s.werr = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("the %s server ended before it listened (%v): %s", name, s.werr, s.out.tail(1000))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("the %s server did not listen on %s within %v: %s", name, s.addr, wait, s.out.tail(1000))
		}
	}
}

// stop interrupts the server and waits (10 s at most) for it to end, then
// kills it.
func (s *capServer) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// get fetches path (with its query) of version 1 from the server with its
// token and returns the body exactly as sent; any status but 200 is an
// error.
func (s *capServer) get(ctx context.Context, path string) ([]byte, error) {
	return s.call(ctx, http.MethodGet, "/v1"+path, nil, http.StatusOK)
}

// call sends one request to the server with its token (path is the whole
// path, with the version's prefix and the query; body, when not nil, is
// JSON) and returns the answer's body exactly as sent; any status but want
// is an error that names the request and shows the body.
func (s *capServer) call(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := os.ReadFile(s.token)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+s.addr+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s on the %s server: %w", method, path, s.name, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s on the %s server: %w", method, path, s.name, err)
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s on the %s server: HTTP %d, want %d: %.300s", method, path, s.name, resp.StatusCode, want, got)
	}
	return got, nil
}

// vm runs the CLI's `waggle vm <cmd> -server <s> -token-file <s's> args...`
// within limit and returns its stdout.
func (s *capServer) vm(ctx context.Context, bin, dir string, limit time.Duration, cmd string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := exec.CommandContext(ctx, bin, append([]string{"vm", cmd, "-server", s.addr, "-token-file", s.token}, args...)...)
	c.Env = capEnv(dir)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("waggle vm %s (%s server) did not end within %v: %.500s", cmd, s.name, limit, stderr.String())
	}
	if err != nil {
		return nil, fmt.Errorf("waggle vm %s (%s server): %w: %.1000s", cmd, s.name, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// awaitSerial waits until the guest's serial history holds want, within
// limit, and returns the history's text.
func (s *capServer) awaitSerial(ctx context.Context, want string, limit time.Duration) (string, error) {
	return s.awaitSerialFrom(ctx, want, 0, limit)
}

// serialEnd returns the absolute offset just past the last byte of the
// guest's serial history now.
func (s *capServer) serialEnd(ctx context.Context) (uint64, error) {
	body, err := s.get(ctx, "/instance/serial/history?most_recent=0")
	if err != nil {
		return 0, err
	}
	var h struct {
		End uint64 `json:"end"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return 0, fmt.Errorf("the %s server's serial history: %w", s.name, err)
	}
	return h.End, nil
}

// awaitSerialFrom waits until the guest's serial output from the absolute
// offset from on holds want, within limit, and returns that text. A
// migration target's history starts with the source's (it moves with the
// VM): reading from the offset it had when the migration ended shows what
// the guest printed on the target.
func (s *capServer) awaitSerialFrom(ctx context.Context, want string, from uint64, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		body, err := s.get(ctx, fmt.Sprintf("/instance/serial/history?from_start=%d&max_bytes=1048576", from))
		if err != nil {
			return "", err
		}
		var h struct {
			Data []byte `json:"data"`
		}
		if err := json.Unmarshal(body, &h); err != nil {
			return "", fmt.Errorf("the %s server's serial history: %w", s.name, err)
		}
		if bytes.Contains(h.Data, []byte(want)) {
			return string(h.Data), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the %s server's guest did not print %q after offset %d within %v: %q", s.name, want, from, limit, tailString(string(h.Data), 300))
		}
		select {
		case <-ctx.Done():
			return "", errors.Join(fmt.Errorf("waiting for %q", want), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
