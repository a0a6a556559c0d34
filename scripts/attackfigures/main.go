// Command attackfigures plays the attacks of the security issue against a
// real `waggle server` process, one after another, and prints for each what
// the server answered and its open fds, threads and resident memory before
// and after. Run it with scripts/attack-figures.sh. Attacks that need a
// running VM run only where /dev/kvm is present and say so elsewhere.
//
// Every address it talks to is on loopback; every loop is bounded.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("waggle", "bin/waggle", "the waggle binary to attack")
	flag.Parse()
	if err := run(*bin); err != nil {
		fmt.Fprintln(os.Stderr, "attackfigures:", err)
		os.Exit(1)
	}
}

// target is a running server under attack.
type target struct {
	cmd   *exec.Cmd
	addr  string
	token string
	root  string
	log   *bytes.Buffer
	logMu *sync.Mutex
}

// usage is what the server process holds at one moment.
type usage struct{ fds, threads, rssKiB int }

func (u usage) String() string {
	return fmt.Sprintf("fds %d, threads %d, RSS %d KiB", u.fds, u.threads, u.rssKiB)
}

func (t *target) usage() usage {
	pid := t.cmd.Process.Pid
	var u usage
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		u.fds = len(ents)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "Threads:" {
			fmt.Sscan(f[1], &u.threads)
		}
		if len(f) >= 2 && f[0] == "VmRSS:" {
			fmt.Sscan(f[1], &u.rssKiB)
		}
	}
	return u
}

var listening = regexp.MustCompile(`waggle server listening"? addr=(\S+)`)

func start(bin string, withToken bool, extra ...string) (*target, error) {
	dir, err := os.MkdirTemp("", "waggle-attack-")
	if err != nil {
		return nil, err
	}
	t := &target{root: filepath.Join(dir, "storage"), log: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	t.token = strings.Repeat("attackfigures-token-", 3)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(t.token), 0o600); err != nil {
		return nil, err
	}
	args := []string{"server", "-listen", "127.0.0.1:0", "-storage-root", t.root, "-body-timeout", "3s", "-idle-timeout", "3s"}
	if withToken {
		args = append(args, "-auth-token-file", tokenFile)
	}
	args = append(args, extra...)
	t.cmd = exec.Command(bin, args...)
	stderr, err := t.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.logMu.Lock()
			t.log.WriteString(sc.Text() + "\n")
			t.logMu.Unlock()
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case t.addr = <-addrc:
		return t, nil
	case <-time.After(20 * time.Second):
		_ = t.cmd.Process.Kill()
		return nil, fmt.Errorf("the server did not start:\n%s", t.log.String())
	}
}

func (t *target) stop() {
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = t.cmd.Process.Kill()
		<-done
	}
	_ = os.RemoveAll(filepath.Dir(t.root))
}

// answer is one HTTP answer, shortly.
func answer(resp *http.Response, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	var body struct {
		Code    string `json:"error_code"`
		Message string `json:"message"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if json.Unmarshal(raw, &body) == nil && body.Code != "" {
		return fmt.Sprintf("%d %s: %s", resp.StatusCode, body.Code, body.Message)
	}
	return fmt.Sprintf("%d", resp.StatusCode)
}

func (t *target) do(method, path, contentType, body string, auth bool) string {
	req, err := http.NewRequest(method, "http://"+t.addr+path, strings.NewReader(body))
	if err != nil {
		return err.Error()
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	return answer(client.Do(req))
}

func ensureWithDisk(path string, readonly bool) string {
	return fmt.Sprintf(`{"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"attack"},
	 "spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"components":{
	  "disk0":{"type":"virtio_disk","backend":"disk0-be","slot":0},
	  "disk0-be":{"type":"file_storage_backend","path":%q,"readonly":%t}}}}`, path, readonly)
}

// attack is one attack: it returns what the server answered.
type attack struct {
	name string
	kvm  bool
	run  func(t *target) string
}

func run(bin string) error {
	_, kvmErr := os.Stat("/dev/kvm")
	t, err := start(bin, true)
	if err != nil {
		return err
	}
	defer t.stop()
	fmt.Printf("waggle server at %s (storage root %s)\n\n", t.addr, t.root)
	fmt.Printf("| attack | the server answers | before | after |\n|---|---|---|---|\n")
	for _, a := range attacks() {
		if a.kvm && kvmErr != nil {
			fmt.Printf("| %s | not run: needs a VM, and this host has no /dev/kvm | | |\n", a.name)
			continue
		}
		before := t.usage()
		got := a.run(t)
		time.Sleep(200 * time.Millisecond) // let closed connections be reaped before counting
		after := t.usage()
		fmt.Printf("| %s | %s | %s | %s |\n", a.name, strings.ReplaceAll(got, "|", "/"), before, after)
	}
	// A get that still answers, after all of it.
	fmt.Printf("\nafter every attack, GET /v1/instance answers: %s\n", t.do("GET", "/v1/instance", "", "", true))

	wide, err := start(bin, false, "-listen", "0.0.0.0:0")
	if err != nil {
		return err
	}
	wide.logMu.Lock()
	warned := strings.Contains(wide.log.String(), "WARNING")
	wide.logMu.Unlock()
	wide.stop()
	fmt.Printf("listening on 0.0.0.0 without --auth-token-file: a WARNING line on stderr: %t\n", warned)
	return nil
}

func attacks() []attack {
	return []attack{
		{name: "no bearer token", run: func(t *target) string { return t.do("GET", "/v1/instance", "", "", false) }},
		{name: "a wrong bearer token", run: func(t *target) string {
			req, _ := http.NewRequest("GET", "http://"+t.addr+"/v1/instance", nil)
			req.Header.Set("Authorization", "Bearer "+strings.Repeat("x", 60))
			return answer(http.DefaultClient.Do(req))
		}},
		{name: "disk path ../../etc/shadow", run: func(t *target) string {
			return t.do("PUT", "/v1/instance", "application/json", ensureWithDisk("../../etc/shadow", false), true)
		}},
		{name: "disk path /etc/shadow", run: func(t *target) string {
			return t.do("PUT", "/v1/instance", "application/json", ensureWithDisk("/etc/shadow", false), true)
		}},
		{name: "a symlink in the root to /etc/shadow", run: func(t *target) string {
			_ = os.Symlink("/etc/shadow", filepath.Join(t.root, "shadow"))
			return t.do("PUT", "/v1/instance", "application/json", ensureWithDisk("shadow", false), true)
		}},
		{name: "a symlink in the root to /proc/self/root/etc/passwd", run: func(t *target) string {
			_ = os.Symlink("/proc/self/root/etc/passwd", filepath.Join(t.root, "passwd"))
			return t.do("PUT", "/v1/instance", "application/json", ensureWithDisk("passwd", true), true)
		}},
		{name: "a read-only backend that is a FIFO (and a GET during it)", run: func(t *target) string {
			_ = syscall.Mkfifo(filepath.Join(t.root, "fifo"), 0o600)
			start := time.Now()
			got := t.do("PUT", "/v1/instance", "application/json", ensureWithDisk("fifo", true), true)
			return fmt.Sprintf("%s (in %v); GET then: %s", got, time.Since(start).Round(time.Millisecond), t.do("GET", "/v1/instance", "", "", true))
		}},
		{name: "a 1 TiB guest", run: func(t *target) string {
			start := time.Now()
			got := t.do("PUT", "/v1/instance", "application/json", `{"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"big"},
			 "spec":{"board":{"cpus":1,"memory_mb":1048576,"chipset":"i440fx"},"components":{}}}`, true)
			return fmt.Sprintf("%s (in %v)", got, time.Since(start).Round(time.Millisecond))
		}},
		{name: "a migration source outside the allowed peers (127.0.0.0/8 is allowed: 203.0.113.9, never dialed)", run: func(t *target) string {
			return t.do("PUT", "/v1/instance", "application/json", `{"properties":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"m"},
			 "migrate":{"migration_id":"7d2f0c1e-3b4a-4c5d-8e6f-9a0b1c2d3e4f","src_addr":"203.0.113.9:12400",
			  "secret":"3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`, true)
		}},
		{name: "Content-Type application/json;;;=", run: func(t *target) string {
			return t.do("PUT", "/v1/instance/state", "application/json;;;=", `{"requested":"run"}{}`, true)
		}},
		{name: "GET with Content-Type application/json and no body", run: func(t *target) string {
			return t.do("GET", "/v1/instance", "application/json", "", true)
		}},
		{name: "1,100 slow-body connections without a token (one byte a second), then a GET", run: func(t *target) string { return slowBodies(t, false) }},
		{name: "1,100 slow-body connections with the token (one byte a second), then a GET", run: func(t *target) string { return slowBodies(t, true) }},
		{name: "500 idle keep-alive connections, then a GET", run: idleConns},
		{name: "10,000 console open-close cycles", kvm: true, run: func(t *target) string { return "see TestConsoleCyclesLeaveNoFD" }},
		{name: "an armed source sent 8 header bytes, then silence", kvm: true, run: func(t *target) string { return "see the migration stream tests" }},
	}
}

// slowBodies opens 1,100 connections that each promise a body and send it
// one byte a second, then asks a GET while they hang. With the token they
// are requests the server must read (each is cut at the body timeout);
// without it they are answered 401 at once and closed.
func slowBodies(t *target, withToken bool) string {
	auth := ""
	if withToken {
		auth = "Authorization: Bearer " + t.token + "\r\n"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused, cut := 0, 0
	for range 1100 {
		c, err := net.DialTimeout("tcp", t.addr, 2*time.Second)
		if err != nil {
			mu.Lock()
			refused++
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			fmt.Fprintf(c, "PUT /v1/instance/state HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", auth)
			for ctx.Err() == nil {
				if _, err := c.Write([]byte(" ")); err != nil {
					mu.Lock()
					cut++
					mu.Unlock()
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
	time.Sleep(time.Second) // the connections are open and hanging now
	start := time.Now()
	get := t.do("GET", "/v1/instance", "", "", true)
	took := time.Since(start)
	wg.Wait()
	return fmt.Sprintf("GET meanwhile: %s in %v; slow connections cut or refused by the server: %d of 1100",
		get, took.Round(time.Millisecond), cut+refused)
}

// idleConns opens 500 connections that send nothing at all, asks a GET
// meanwhile, and counts what became of them within the server's header
// timeout and a little more: answered 503 at once (over the connection
// limit), closed by the server, or still open.
func idleConns(t *target) string {
	var conns []net.Conn
	for range 500 {
		c, err := net.DialTimeout("tcp", t.addr, 2*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	get := t.do("GET", "/v1/instance", "", "", true)
	var refused, closed, open int
	deadline := time.Now().Add(12 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetReadDeadline(deadline)
			buf := make([]byte, 12)
			n, err := io.ReadFull(c, buf)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case n > 0 && strings.HasPrefix(string(buf[:n]), "HTTP/1.1 503"):
				refused++
			case err != nil && os.IsTimeout(err):
				open++
			default:
				closed++
			}
		}()
	}
	wg.Wait()
	return fmt.Sprintf("GET meanwhile: %s; of %d silent connections: %d answered 503 at once, %d closed by the server "+
		"(header timeout), %d still open after 12 s", get, len(conns), refused, closed, open)
}
