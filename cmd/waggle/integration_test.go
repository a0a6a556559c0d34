package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/kvmtest"
)

// These tests run the real waggle binary as a subprocess and drive it over
// real HTTP with the generated client, as a user would.

var waggleBin string

// testToken is the bearer token of every server the tests start, kept in
// testTokenFile; WAGGLE_TOKEN_FILE names it, so the CLI subprocesses send it.
var testToken, testTokenFile string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "waggle-bin-")
	if err != nil {
		panic(err)
	}
	waggleBin = filepath.Join(dir, "waggle")
	if testToken, err = httpkit.GenerateToken(); err != nil {
		panic(err)
	}
	testTokenFile = filepath.Join(dir, "token")
	if err := httpkit.WriteTokenFile(testTokenFile, testToken); err != nil {
		panic(err)
	}
	os.Setenv("WAGGLE_TOKEN_FILE", testTokenFile)
	out, err := exec.Command("go", "build", "-o", waggleBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build waggle: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// serverProc is a `waggle server` subprocess.
type serverProc struct {
	addr   string
	token  string // the bearer token the server takes
	root   string // the server's storage root: disk paths in specs are relative to it
	client *api.ClientWithResponses
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{} // closed when the process has exited and its log is read
}

var listenLine = regexp.MustCompile(`waggle server listening"? addr=(\S+)`)

// startServer starts `waggle server` on a free loopback port, with the
// tests' token and a storage root of its own, and waits until it listens;
// the test's cleanup stops it.
func startServer(t testing.TB, env ...string) *serverProc {
	t.Helper()
	return startServerIn(t, t.TempDir(), env...)
}

// startServerIn is startServer with the storage root root, which other
// servers of the test may share, as hosts share storage.
func startServerIn(t testing.TB, root string, env ...string) *serverProc {
	t.Helper()
	return startServerFlags(t, root, nil, env...)
}

// startServerFlags is startServerIn with more flags for `waggle server`.
func startServerFlags(t testing.TB, root string, flags []string, env ...string) *serverProc {
	t.Helper()
	args := append([]string{"server", "-listen", "127.0.0.1:0", "-auth-token-file", testTokenFile, "-storage-root", root}, flags...)
	p := &serverProc{token: testToken, root: root}
	p.cmd, p.log, p.exited, p.addr = startDaemon(t, args, env, listenLine)
	var err error
	p.client, err = api.NewClientWithResponses("http://"+p.addr+"/v1", api.WithRequestEditorFn(httpkit.BearerAuth(p.token)))
	require.NoError(t, err)
	return p
}

// startDaemon starts `waggle <args>` and waits until its log shows the
// address it listens on (the first group of listening); the test's cleanup
// interrupts it, and prints its log when the test failed. exited is closed
// once the process has exited and its log is read.
func startDaemon(t testing.TB, args, env []string, listening *regexp.Regexp) (cmd *exec.Cmd, log *syncBuffer, exited chan struct{}, addr string) {
	t.Helper()
	cmd = exec.Command(waggleBin, args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	log, exited = &syncBuffer{}, make(chan struct{})
	t.Cleanup(func() {
		stopProc(cmd, exited)
		if t.Failed() {
			t.Logf("waggle %s log:\n%s", args[0], log.String())
		}
	})
	addrc := make(chan string, 1)
	go func() {
		// The log is read to its end before Wait, which closes the pipe.
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // a line over the limit: the process must not block on its log
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case addr = <-addrc:
	case <-exited:
		t.Fatalf("waggle %s exited before it listened: %v\n%s", args[0], cmd.ProcessState, log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("waggle %s did not start listening", args[0])
	}
	return cmd, log, exited, addr
}

// stopProc interrupts a process and waits for it to exit, killing it
// after 10 s; it may be called more than once.
func stopProc(cmd *exec.Cmd, exited chan struct{}) {
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// stop interrupts the server and waits for it to exit; it may be called
// more than once.
func (p *serverProc) stop() { stopProc(p.cmd, p.exited) }

// syncBuffer is a bytes.Buffer safe for one writer and other readers: a
// subprocess's output, read by the test as it comes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func tickerSpec(t *testing.T, cmdline string) api.InstanceSpec {
	t.Helper()
	w, err := specDecode(fmt.Sprintf(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},
	 "boot":{"image":"ticker","cmdline":%q},
	 "components":{"com1":{"type":"serial_port","num":"com1"}}}`, cmdline))
	require.NoError(t, err)
	return w
}

func specDecode(s string) (api.InstanceSpec, error) {
	var w api.InstanceSpec
	err := json.Unmarshal([]byte(s), &w)
	return w, err
}

// waitState follows the state monitor from gen until want (or a final
// state), returning every state seen.
func waitState(t testing.TB, c *api.ClientWithResponses, gen int64, want api.InstanceState) (int64, []api.InstanceState) {
	t.Helper()
	var seen []api.InstanceState
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		to := int32(5000)
		r, err := c.InstanceStateMonitorWithResponse(context.Background(), &api.InstanceStateMonitorParams{Gen: gen, TimeoutMs: &to})
		require.NoError(t, err)
		require.NotNil(t, r.JSON200, string(r.Body))
		if r.JSON200.Gen == gen {
			continue
		}
		require.Greater(t, r.JSON200.Gen, gen, "generations only grow")
		gen = r.JSON200.Gen
		seen = append(seen, r.JSON200.State)
		if r.JSON200.State == want {
			return gen, seen
		}
		if r.JSON200.State == api.InstanceStateFailed {
			t.Fatalf("instance failed: %s", deref(r.JSON200.FailureReason))
		}
	}
	t.Fatalf("state %s not reached; saw %v", want, seen)
	return 0, nil
}

// serialHistory returns what the instance's guest printed, for conditions
// that must not fail the test (Eventually runs them on another goroutine).
func serialHistory(c *api.ClientWithResponses) (string, error) {
	r, err := c.InstanceSerialHistoryGetWithResponse(context.Background(), &api.InstanceSerialHistoryGetParams{})
	if err != nil {
		return "", err
	}
	if r.JSON200 == nil {
		return "", fmt.Errorf("serial history: HTTP %d: %s", r.StatusCode(), r.Body)
	}
	return string(r.JSON200.Data), nil
}

// serialCount is how many times text is in the serial history; -1 when it
// cannot be read.
func serialCount(c *api.ClientWithResponses, text string) int {
	out, err := serialHistory(c)
	if err != nil {
		return -1
	}
	return strings.Count(out, text)
}

// serialUntil reads the serial history until it contains want.
func serialUntil(t testing.TB, c *api.ClientWithResponses, want string) string {
	t.Helper()
	var last string // written only by the check that succeeds
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		out, err := serialHistory(c)
		if !assert.NoError(ct, err) {
			return
		}
		if !strings.Contains(out, want) {
			ct.Errorf("serial never showed %q; it ends with %q", want, tail(out, 2048))
			return
		}
		last = out
	}, 30*time.Second, 20*time.Millisecond)
	return last
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestServerProcessHarness: the server every test here starts (the tests'
// token, a storage root of its own) comes up without KVM, answers a client
// that sends the token, refuses one that does not, and ends when stopped.
func TestServerProcessHarness(t *testing.T) {
	p := startServer(t)
	fi, err := os.Stat(p.root)
	require.NoError(t, err)
	require.True(t, fi.IsDir())

	g, err := p.client.InstanceGetWithResponse(context.Background())
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, g.StatusCode(), string(g.Body))
	require.Equal(t, "no_instance", g.JSON404.ErrorCode)

	resp, err := http.Get("http://" + p.addr + "/v1/instance")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a request without the token")

	p.stop()
	select {
	case <-p.exited:
	default:
		t.Fatal("stop returned before the server exited")
	}
	require.NotContains(t, p.log.String(), p.token, "the token is never logged")
}

func TestServerRunsAVMThroughItsLifecycle(t *testing.T) {
	kvmtest.Require(t)
	p := startServer(t)
	ctx := context.Background()
	c := p.client

	props := api.InstanceProperties{Id: uuid.New(), Name: "life"}
	r, err := c.InstanceEnsureWithResponse(ctx, specEnsure(t, props, tickerSpec(t, "pace_ms=20")))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	require.Equal(t, api.InstanceStateCreating, r.JSON201.State)
	gen := r.JSON201.Gen

	// Ensure is idempotent for the identical request, 409 for another.
	r, err = c.InstanceEnsureWithResponse(ctx, specEnsure(t, props, tickerSpec(t, "pace_ms=20")))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.StatusCode())
	r, err = c.InstanceEnsureWithResponse(ctx, specEnsure(t, props, tickerSpec(t, "pace_ms=21")))
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, r.StatusCode())
	require.Equal(t, "instance_exists", r.JSON409.ErrorCode)

	s, err := c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode(), string(s.Body))
	gen, seen := waitState(t, c, gen, api.InstanceStateRunning)
	require.Equal(t, api.InstanceStateRunning, seen[len(seen)-1])
	serialUntil(t, c, "tick 3\n")

	// The console streams live output to several readers at once.
	wsURL := "ws://" + p.addr + "/v1/instance/serial"
	var consoles []*websocket.Conn
	for range 2 {
		ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: httpkit.BearerHeader(p.token)})
		require.NoError(t, err)
		defer ws.CloseNow()
		consoles = append(consoles, ws)
	}
	for _, ws := range consoles {
		var got []byte
		for !regexp.MustCompile(`tick (\d+)\n.*tick \d+\n`).Match(got) {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, data, err := ws.Read(rctx)
			cancel()
			require.NoError(t, err)
			got = append(got, data...)
		}
	}

	// Reboot restarts the guest: it boots again and ticks from the start.
	s, err = c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedReboot})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode(), "reboot is allowed while running")
	gen, _ = waitState(t, c, gen, api.InstanceStateRunning)
	require.Eventually(t, func() bool { return serialCount(c, "ticker ready") == 2 }, 20*time.Second, 50*time.Millisecond,
		"the guest booted again after reboot, on the same console")

	s, err = c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedStop})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode())
	end, _ := waitState(t, c, gen, api.InstanceStateDestroyed)
	// A monitor sees the latest state; the generation shows every step:
	// stopping, stopped, destroyed.
	require.Equal(t, gen+3, end)

	s, err = c.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, s.StatusCode())
	require.Equal(t, "invalid_transition", s.JSON409.ErrorCode)
	require.Contains(t, s.JSON409.Message, "destroyed")
}

// TestServerRefusesAnUnbuildableSpecAndKeepsNothing: a spec the contract
// takes but the host cannot build (its disk file is not beneath the
// server's storage root) is refused with the component at fault, tells
// nothing of the root, leaves no instance, and the server takes a good
// spec afterwards.
func TestServerRefusesAnUnbuildableSpecAndKeepsNothing(t *testing.T) {
	kvmtest.Require(t)
	p := startServer(t)
	ctx := context.Background()
	w, err := specDecode(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"disk"},
	 "components":{"d":{"type":"virtio_disk","backend":"b","slot":0},
	  "b":{"type":"file_storage_backend","path":"nonexistent/disk.img"}}}`)
	require.NoError(t, err)
	r, err := c(p).InstanceEnsureWithResponse(ctx, specEnsure(t, api.InstanceProperties{Id: uuid.New(), Name: "x"}, w))
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, r.StatusCode(), string(r.Body))
	require.Equal(t, "vm_error", r.JSON400.ErrorCode)
	require.Contains(t, r.JSON400.Message, "vm: components.b.path: ")
	require.Contains(t, r.JSON400.Message, `"nonexistent/disk.img"`)
	require.NotContains(t, r.JSON400.Message, p.root, "the storage root is the server's own business")

	g, err := c(p).InstanceGetWithResponse(ctx)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, g.StatusCode(), "a failed ensure leaves no instance behind")

	// The server still takes a good spec afterwards.
	r, err = c(p).InstanceEnsureWithResponse(ctx, specEnsure(t, api.InstanceProperties{Id: uuid.New(), Name: "y"}, tickerSpec(t, "")))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
}

func c(p *serverProc) *api.ClientWithResponses { return p.client }

func ptr[T any](v T) *T { return &v }

// runCLI runs `waggle vm ...` against p and returns its stdout.
func runCLI(t *testing.T, p *serverProc, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(waggleBin, append([]string{"vm"}, args...)...)
	cmd.Env = append(os.Environ(), "WAGGLE_SERVER="+p.addr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.String(), err
}

func TestCLIDrivesAVM(t *testing.T) {
	kvmtest.Require(t)
	p := startServer(t)
	out, err := runCLI(t, p, "create", "-config", "../../examples/ticker.toml", "-o", "json")
	require.NoError(t, err)
	var inst api.Instance
	require.NoError(t, json.Unmarshal([]byte(out), &inst))
	require.Equal(t, "ticker", inst.Properties.Name)
	require.Equal(t, api.InstanceStateCreating, inst.State)

	out, err = runCLI(t, p, "run")
	require.NoError(t, err)
	require.Contains(t, out, "running")

	out, err = runCLI(t, p, "serial", "-until", "tick 2", "-timeout", "20s")
	require.NoError(t, err)
	require.Contains(t, out, "tick 1\n")

	out, err = runCLI(t, p, "get")
	require.NoError(t, err)
	require.Regexp(t, `state\s+running`, out)
	// The same VM through v1, as a released CLI's user would see it.
	out, err = runCLI(t, p, "get", "-api", "v1")
	require.NoError(t, err)
	require.Regexp(t, `state\s+running`, out)

	out, err = runCLI(t, p, "spec", "-o", "json")
	require.NoError(t, err)
	require.Contains(t, out, `"image": "ticker"`)

	out, err = runCLI(t, p, "stop")
	require.NoError(t, err)
	require.Contains(t, out, "stopped") // destroyed follows on its own, maybe after the CLI is done
	require.Eventually(t, func() bool { return inState(p, api.InstanceStateDestroyed) }, 10*time.Second, 10*time.Millisecond)

	_, err = runCLI(t, p, "run")
	require.ErrorContains(t, err, "invalid_transition")
}

func TestCurlFollowsTheREADME(t *testing.T) {
	kvmtest.Require(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	p := startServer(t)
	cmd := exec.Command("bash", "../../scripts/curl-flow.sh", p.addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "curl flow ok")
}

func TestGuestFailureShowsInTheInstance(t *testing.T) {
	kvmtest.Require(t)
	p := startServer(t)
	ctx := context.Background()
	w, err := specDecode(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"crash","cmdline":"delay_ms=10"},
	 "components":{"com1":{"type":"serial_port","num":"com1"}}}`)
	require.NoError(t, err)
	r, err := c(p).InstanceEnsureWithResponse(ctx, specEnsure(t, api.InstanceProperties{Id: uuid.New(), Name: "crashy"}, w))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	s, err := c(p).InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode())
	require.Eventually(t, func() bool {
		g, err := c(p).InstanceGetWithResponse(ctx)
		return err == nil && g.JSON200 != nil && g.JSON200.State == api.InstanceStateFailed
	}, 20*time.Second, 20*time.Millisecond)
	g, err := c(p).InstanceGetWithResponse(ctx)
	require.NoError(t, err)
	require.Contains(t, deref(g.JSON200.FailureReason), "triple fault")
	require.Contains(t, serialUntil(t, c(p), "crash in 10 ms"), "crash in 10 ms")

	// The server process survived and still answers.
	s, err = c(p).InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, s.StatusCode())
	require.Contains(t, s.JSON409.Message, "failed")

	// A failed instance is over: a new ensure replaces it, and its guest runs.
	w, err = specDecode(`{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":"pace_ms=20"},
	 "components":{"com1":{"type":"serial_port","num":"com1"}}}`)
	require.NoError(t, err)
	r, err = c(p).InstanceEnsureWithResponse(ctx, specEnsure(t, api.InstanceProperties{Id: uuid.New(), Name: "next"}, w))
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, r.StatusCode(), string(r.Body))
	s, err = c(p).InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, s.StatusCode(), string(s.Body))
	serialUntil(t, c(p), "tick 2\n")
}
