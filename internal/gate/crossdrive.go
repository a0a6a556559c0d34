package gate

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The checks of a release that need no VM: one build's `waggle server` is
// driven through the other build's `waggle vm` CLI on the endpoints that
// answer without a VM, in whichever API version that CLI speaks to that
// server (the paths below leave the version out). A server with no
// instance answers GET /instance with 404 no_instance; it refuses an
// ensure whose disk file does not exist with a 4xx (and still has no
// instance after it); and it answers a wrong token with 401 unauthorized. The CLI shows each answer as
// "(<status> <error_code>" in its error, which is how the check reads it.

// crossSpec is a vmm-server v1 InstanceSpec whose disk file does not exist
// under any storage root the check makes: every server refuses it with a
// 4xx, with or without KVM.
const crossSpec = `{"board":{"chipset":"i440fx","cpus":1,"memory_mb":16},"boot":{"cmdline":"","image":"disk"},` +
	`"components":{"disk0":{"backend":"disk0-be","slot":0,"type":"virtio_disk"},` +
	`"disk0-be":{"block_size":512,"path":"compat-gate/no-such-disk.img","readonly":false,"type":"file_storage_backend"}}}`

// cliAnswer finds the status and error code in a CLI error.
var cliAnswer = regexp.MustCompile(`\((\d{3}) ([a-z][a-z0-9_]*)[,)]`)

// crossTimeout bounds each CLI command and the server's start.
const crossTimeout = 30 * time.Second

// CrossDrive starts serverBin's `waggle server` (on a free loopback port,
// with its own storage root and token file under dir) and drives it with
// cliBin's `waggle vm` on the endpoints that need no VM. It returns what
// it checked, in words, and every failure.
func CrossDrive(ctx context.Context, serverBin, cliBin, dir string) ([]string, error) {
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, err
	}
	token, err := writeToken(filepath.Join(dir, "token"))
	if err != nil {
		return nil, err
	}
	wrong, err := writeToken(filepath.Join(dir, "wrong-token"))
	if err != nil {
		return nil, err
	}
	spec := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(spec, []byte(crossSpec), 0o644); err != nil {
		return nil, err
	}
	srv, err := startServer(ctx, serverBin, dir, storage, token)
	if err != nil {
		return nil, err
	}
	defer srv.stop()

	var did []string
	var errs []error
	cli := func(tokenFile string, args ...string) (int, string, error) {
		full := append([]string{"vm", args[0], "-server", srv.addr, "-token-file", tokenFile}, args[1:]...)
		return runCLI(ctx, cliBin, dir, full...)
	}
	// expect runs the CLI and checks the answer: status wantStatus (0:
	// any 4xx) and code wantCode (empty: any).
	expect := func(what string, wantStatus int, wantCode, tokenFile string, args ...string) {
		st, c, err := cli(tokenFile, args...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			return
		}
		okStatus := st == wantStatus || (wantStatus == 0 && st >= 400 && st < 500)
		if !okStatus || (wantCode != "" && c != wantCode) {
			want := strings.TrimSpace(fmt.Sprintf("%d %s", wantStatus, wantCode))
			if wantStatus == 0 {
				want = "a 4xx"
			}
			errs = append(errs, fmt.Errorf("%s: want %s, got %d %s", what, want, st, c))
			return
		}
		did = append(did, fmt.Sprintf("%s: %d %s", what, st, c))
	}
	expect("GET /instance", 404, "no_instance", token, "get")
	expect("PUT /instance (missing disk)", 0, "", token, "create", "-spec", spec)
	expect("GET /instance after the refused ensure", 404, "no_instance", token, "get")
	expect("GET /instance with a wrong token", 401, "unauthorized", wrong, "get")
	if err := srv.exited(); err != nil {
		errs = append(errs, err)
	}
	return did, errors.Join(errs...)
}

// writeToken writes a new random bearer token to path, mode 0600.
func writeToken(path string) (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600)
}

// runCLI runs bin with args and returns the status and error code the
// CLI's error shows. A command that succeeds, or fails without showing an
// answer of the server, is an error.
func runCLI(ctx context.Context, bin, dir string, args ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, crossTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = isolatedEnv(dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	line := "waggle " + strings.Join(args, " ")
	if ctx.Err() != nil {
		return 0, "", fmt.Errorf("%s did not end within %v", line, crossTimeout)
	}
	if err == nil {
		return 0, "", fmt.Errorf("%s succeeded; it should have shown the server's refusal: %s", line, tail(stdout.Bytes(), 300))
	}
	m := cliAnswer.FindStringSubmatch(stderr.String())
	if m == nil {
		return 0, "", fmt.Errorf("%s: %v, and its error shows no answer of the server (\"(<status> <code>\"): %s", line, err, tail(stderr.Bytes(), 500))
	}
	st, _ := strconv.Atoi(m[1])
	return st, m[2], nil
}

// isolatedEnv is the environment of the processes the check starts: their
// state and data directories under dir, nothing of the user's.
func isolatedEnv(dir string) []string {
	env := []string{"HOME=" + dir, "XDG_STATE_HOME=" + filepath.Join(dir, "state"), "XDG_DATA_HOME=" + filepath.Join(dir, "data")}
	for _, k := range []string{"PATH", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// serverProc is a running `waggle server`.
type serverProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *lockedBuffer
	done   chan struct{} // closed when the process has ended
	err    error         // set before done closes
	cancel context.CancelFunc
}

// startServer starts bin's `waggle server` on a free loopback port and
// waits until it accepts connections. The port is free when chosen; should
// another process take it before the server binds it, the server is
// started again on another, twice at most. env is added to the server's
// environment.
func startServer(ctx context.Context, bin, dir, storage, tokenFile string, env ...string) (*serverProc, error) {
	for attempt := 1; ; attempt++ {
		p, err := startServerOnce(ctx, bin, dir, storage, tokenFile, env)
		if err == nil || attempt == 3 || !errors.Is(err, errPortTaken) {
			return p, err
		}
	}
}

// errPortTaken says the server could not bind the port chosen for it.
var errPortTaken = errors.New("the port was taken")

func startServerOnce(ctx context.Context, bin, dir, storage, tokenFile string, env []string) (*serverProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, bin, "server", "-listen", addr, "-auth-token-file", tokenFile, "-storage-root", storage)
	cmd.Env = append(isolatedEnv(dir), env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	p := &serverProc{cmd: cmd, addr: addr, stderr: &lockedBuffer{}, done: make(chan struct{}), cancel: cancel}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s server: %w", bin, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	deadline := time.NewTimer(crossTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			cancel()
			out := p.stderr.Bytes()
			err := fmt.Errorf("%s server ended before it listened on %s (%v): %s", bin, addr, p.err, tail(out, 1000))
			if bytes.Contains(out, []byte("address already in use")) {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			return nil, err
		case <-deadline.C:
			p.stop()
			return nil, fmt.Errorf("%s server did not listen on %s within %v: %s", bin, addr, crossTimeout, tail(p.stderr.Bytes(), 1000))
		case <-tick.C:
		}
	}
}

// exited returns an error if the server has ended on its own.
func (p *serverProc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("the server ended during the checks (%v): %s", p.err, tail(p.stderr.Bytes(), 1000))
	default:
		return nil
	}
}

// stop interrupts the server and waits for it to end.
func (p *serverProc) stop() {
	p.cancel()
	<-p.done
}

// lockedBuffer is a bytes.Buffer safe for a process's writes and our reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what was written so far.
func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
