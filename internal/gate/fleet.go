package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wagglevm/waggle/corpus"
)

// The fleet check of a release that serves the control plane's contracts:
// one build's `waggle control-plane`, on its own embedded PostgreSQL,
// with two of the other build's `waggle sled-agent`s on loopback, driven
// through the control plane's external API. Without a VM it checks what
// crosses the builds' lines without one: both agents register (PUT
// /sleds/{id} of the internal API) and `GET /v1/sleds` shows them with
// their capacity; the control plane's watcher reaches each agent (their
// last contact moves on); the doorbell answers a ring; a spec that breaks
// its version's rules is refused with 400 invalid_spec and stores
// nothing; a name in use is refused with 409 name_in_use; each API
// refuses a wrong token with 401; a start the sled cannot run (no
// /dev/kvm) unwinds, naming the register step, and leaves no reservation
// or VMM; a delete ends done and frees the name. On KVM an instance is
// created, started, migrated between the two sleds, stopped and deleted,
// each saga ending done and the instance where it should be, and nothing
// is left behind on any sled.

// Bounds of the fleet check. The control plane's first start makes its
// PostgreSQL cluster, which takes seconds.
var (
	// FleetStartTimeout bounds each process's start.
	FleetStartTimeout = 2 * time.Minute
	// FleetWait bounds each wait for the fleet to reach a state (sleds
	// registered, a saga ended).
	FleetWait = 2 * time.Minute
)

// fleetCallTimeout bounds each HTTP request of the check.
const fleetCallTimeout = 30 * time.Second

// fleetBadSpec is a vmm-server/v1 spec that breaks v1's rules (a board
// without CPUs): every control plane refuses it at create.
const fleetBadSpec = `{"board":{"chipset":"i440fx","cpus":0,"memory_mb":64},"boot":{"cmdline":"","image":"ticker"},` +
	`"components":{"com1":{"num":"com1","type":"serial_port"}}}`

// fleetSpec is the ticker the fleet check creates (and, on KVM, runs
// and migrates).
const fleetSpec = `{"board":{"chipset":"i440fx","cpus":1,"memory_mb":32},"boot":{"cmdline":"pace_ms=100","image":"ticker"},` +
	`"components":{"com1":{"num":"com1","type":"serial_port"}}}`

// FleetError says which step of the fleet check failed, in which
// pairing of builds.
type FleetError struct {
	// Release is the release's name; Way says the pairing ("<release>'s
	// control plane with HEAD's sled agents", ...); Step what was checked.
	Release, Way, Step string
	Err                error
}

func (e *FleetError) Error() string {
	if e.Release == "" { // FleetDrive's own, not yet placed in a pairing
		return fmt.Sprintf("%s: %v", e.Step, e.Err)
	}
	return fmt.Sprintf("release %s: %s: %s: %v", e.Release, e.Way, e.Step, e.Err)
}

func (e *FleetError) Unwrap() error { return e.Err }

// fleetProcFailPoints sets WAGGLE_FAILPOINTS of the fleet check's
// processes by role ("control-plane", "sled-agent"), for tests.
var fleetProcFailPoints = map[string]string{}

// FleetBothWays runs FleetDrive twice: relBin's control plane with
// headBin's sled agents, then headBin's control plane with relBin's sled
// agents. It returns what each way checked, and every failure as a
// *FleetError; a way that fails does not stop the other.
func FleetBothWays(ctx context.Context, release, relBin, headBin string, kvm bool) ([]string, error) {
	var did []string
	var errs []error
	for _, way := range []struct{ what, cp, sled string }{
		{release + "'s control plane with HEAD's sled agents", relBin, headBin},
		{"HEAD's control plane with " + release + "'s sled agents", headBin, relBin},
	} {
		steps, err := FleetDrive(ctx, way.cp, way.sled, kvm)
		if err != nil {
			var fe *FleetError
			if errors.As(err, &fe) {
				fe.Release, fe.Way = release, way.what
			} else {
				err = &FleetError{Release: release, Way: way.what, Step: "(running the fleet)", Err: err}
			}
			errs = append(errs, err)
			continue
		}
		did = append(did, fmt.Sprintf("%s (%s)", way.what, strings.Join(steps, ", ")))
	}
	return did, errors.Join(errs...)
}

// FleetDrive starts cpBin's `waggle control-plane` and two of sledBin's
// `waggle sled-agent`s on loopback, in a directory of its own that it
// removes, and drives them through the control plane's external API:
// the checks without a VM, and with kvm the instance's life on the fleet.
// It returns what it checked, in words; a failure is a *FleetError
// naming its step. Every process it starts has ended when it returns.
func FleetDrive(ctx context.Context, cpBin, sledBin string, kvm bool) ([]string, error) {
	// The embedded PostgreSQL runs as an account of its own when the gate
	// runs as root: its directory must let that account in, which the
	// gate's own temporary directory (0700) does not.
	dir, err := os.MkdirTemp("", "waggle-gate-fleet-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	f := &fleet{dir: dir}
	defer f.stop()
	if err := f.start(ctx, cpBin, sledBin); err != nil {
		return nil, err
	}
	if err := f.checkWithoutVM(ctx, kvm); err != nil {
		return f.did, err
	}
	if kvm {
		if err := f.checkLife(ctx); err != nil {
			return f.did, err
		}
	}
	for _, p := range f.procs {
		if err := p.exited(); err != nil {
			return f.did, &FleetError{Step: "the processes ran to the end", Err: fmt.Errorf("%s: %w", p.name, err)}
		}
	}
	return f.did, nil
}

// fleet is the running fleet of one FleetDrive.
type fleet struct {
	dir                 string
	procs               []*fleetProc
	internal, api       string   // the control plane's addresses
	agents              []string // the sled agents' addresses
	cpToken, apiToken   string   // files
	sledToken, badToken string   // files
	did                 []string // what was checked, in words
	client              http.Client
	sledIDs             map[string]string // agent address -> sled id
	registeredAt        map[string]string // sled id -> last_contact when first seen
}

// fleetProc is a process of the fleet check.
type fleetProc struct {
	*serverProc
	name string
}

func (f *fleet) start(ctx context.Context, cpBin, sledBin string) error {
	var err error
	for name, p := range map[string]*string{"cp": &f.cpToken, "api": &f.apiToken, "sled": &f.sledToken, "wrong": &f.badToken} {
		if *p, err = writeToken(filepath.Join(f.dir, name+".token")); err != nil {
			return err
		}
	}
	cp, addrs, err := startFleetProc(ctx, "control-plane", cpBin, f.dir, 2, func(a []string) []string {
		return []string{"control-plane", "-listen", a[0], "-api-listen", a[1],
			"-auth-token-file", f.cpToken, "-api-token-file", f.apiToken, "-sled-agent-token-file", f.sledToken,
			"-data-dir", filepath.Join(f.dir, "cp"), "-watch-interval", "1s", "-sled-lost-after", "1m"}
	})
	if err != nil {
		return &FleetError{Step: "starting the control plane", Err: err}
	}
	f.procs = append(f.procs, cp)
	f.internal, f.api = addrs[0], addrs[1]
	for n := 1; n <= 2; n++ {
		name := fmt.Sprintf("sled-agent-%d", n)
		ports, err := freeRange(4)
		if err != nil {
			return err
		}
		agent, addrs, err := startFleetProc(ctx, name, sledBin, f.dir, 1, func(a []string) []string {
			return []string{"sled-agent", "-listen", a[0], "-auth-token-file", f.sledToken,
				"-root", filepath.Join(f.dir, name), "-cpus", "2", "-memory-mib", "1024", "-vmm-ports", ports,
				"-control-plane", "http://" + f.internal, "-control-plane-token-file", f.cpToken}
		})
		if err != nil {
			return &FleetError{Step: "starting " + name, Err: err}
		}
		f.procs = append(f.procs, agent)
		f.agents = append(f.agents, addrs[0])
	}
	return nil
}

// stop interrupts every process of the fleet, the agents first, and waits
// for each to end. An agent leaves its VMM servers running when it stops,
// so each agent is first told to forget every VMM it still holds (force):
// a check that failed with a VM running leaves no VMM server behind.
func (f *fleet) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), fleetCallTimeout)
	defer cancel()
	for _, addr := range f.agents {
		a, err := f.call(ctx, addr, f.sledToken, "GET", "/vmms", nil)
		if err != nil || a.Status != 200 {
			continue
		}
		var list struct {
			Vmms []struct {
				ID string `json:"vmm_id"`
			} `json:"vmms"`
		}
		if json.Unmarshal(a.Body, &list) != nil {
			continue
		}
		for _, v := range list.Vmms {
			_, _ = f.call(ctx, addr, f.sledToken, "DELETE", "/vmms/"+v.ID+"?force=true", nil)
		}
	}
	for _, p := range slices.Backward(f.procs) {
		p.stop()
	}
}

// startFleetProc starts bin as the fleet's process name, with the
// arguments args gives for nAddrs free loopback addresses, and waits until
// each accepts connections. Should another process take an address first,
// the process is started again on others, twice at most.
func startFleetProc(ctx context.Context, name, bin, dir string, nAddrs int, args func([]string) []string) (*fleetProc, []string, error) {
	for attempt := 1; ; attempt++ {
		var addrs []string
		for range nAddrs {
			a, err := freeAddr()
			if err != nil {
				return nil, nil, err
			}
			addrs = append(addrs, a)
		}
		p, err := startFleetProcOnce(ctx, name, bin, dir, args(addrs), addrs)
		if err == nil || attempt == 3 || !errors.Is(err, errPortTaken) {
			return p, addrs, err
		}
	}
}

func startFleetProcOnce(ctx context.Context, name, bin, dir string, args, addrs []string) (*fleetProc, error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = isolatedEnv(filepath.Join(dir, name+"-home"))
	role := strings.TrimRight(name, "-0123456789")
	if fp := fleetProcFailPoints[role]; fp != "" {
		cmd.Env = append(cmd.Env, "WAGGLE_FAILPOINTS="+fp)
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 15 * time.Second
	p := &fleetProc{serverProc: &serverProc{cmd: cmd, addr: addrs[0], stderr: &lockedBuffer{}, done: make(chan struct{}), cancel: cancel}, name: name}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s %s: %w", bin, args[0], err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	deadline := time.NewTimer(FleetStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for _, addr := range addrs {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				cancel()
				out := p.stderr.Bytes()
				err := fmt.Errorf("%s ended before it listened on %s (%v): %s", name, addr, p.err, tail(out, 1500))
				if bytes.Contains(out, []byte("address already in use")) {
					err = fmt.Errorf("%w: %w", errPortTaken, err)
				}
				return nil, err
			case <-deadline.C:
				p.stop()
				return nil, fmt.Errorf("%s did not listen on %s within %v: %s", name, addr, FleetStartTimeout, tail(p.stderr.Bytes(), 1500))
			case <-tick.C:
			}
		}
	}
	return p, nil
}

// freeAddr returns a loopback address whose port was free when asked.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// freeRange returns a range of n loopback ports, "LOW-HIGH", each free
// when asked, for a sled agent's VMM servers. It looks below the kernel's
// ephemeral range: the ports next to one the kernel hands a listener are
// the ones it hands outgoing connections (Linux gives those the other
// parity), and with tests running beside, twenty tries there once found
// none free.
func freeRange(n int) (string, error) {
	const floor = 10000
	top := ephemeralLow() - n
	if top <= floor {
		top = 65536 - n
	}
	for range 200 {
		lo := floor + rand.IntN(top-floor)
		free := true
		for p := lo; p < lo+n && free; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				free = false
				continue
			}
			ln.Close()
		}
		if free {
			return fmt.Sprintf("%d-%d", lo, lo+n-1), nil
		}
	}
	return "", errors.New("no range of free loopback ports for the VMM servers")
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// where it cannot be read).
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	var lo, hi int
	if err != nil {
		return 32768
	}
	if n, _ := fmt.Sscan(string(data), &lo, &hi); n != 2 || lo < 1024 {
		return 32768
	}
	return lo
}

// apiAnswer is a JSON answer of an API: its status and body.
type apiAnswer struct {
	Status int
	Body   []byte
}

// code returns the error_code of an error answer ("" if none).
func (a apiAnswer) code() string {
	var e struct {
		Code string `json:"error_code"`
	}
	_ = json.Unmarshal(a.Body, &e)
	return e.Code
}

func (a apiAnswer) String() string {
	return fmt.Sprintf("%d %s", a.Status, strings.TrimSpace(tail(a.Body, 600)))
}

// call sends method path (below /v1) to addr with the bearer token in
// tokenFile ("" for none) and body (nil for none) and returns the answer.
func (f *fleet) call(ctx context.Context, addr, tokenFile, method, path string, body any) (apiAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, fleetCallTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiAnswer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/v1"+path, rd)
	if err != nil {
		return apiAnswer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tokenFile != "" {
		t, err := os.ReadFile(tokenFile)
		if err != nil {
			return apiAnswer{}, err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(t)))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return apiAnswer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return apiAnswer{}, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	return apiAnswer{Status: resp.StatusCode, Body: b}, nil
}

// expect sends a request to the external API and checks its status (and,
// for an error, its code), decoding a success's body into out (nil: not).
func (f *fleet) expect(ctx context.Context, method, path string, body any, status int, code string, out any) error {
	a, err := f.call(ctx, f.api, f.apiToken, method, path, body)
	if err != nil {
		return err
	}
	if a.Status != status || (code != "" && a.code() != code) {
		return fmt.Errorf("%s %s: want %d %s, got %s", method, path, status, code, a)
	}
	if out != nil {
		if err := json.Unmarshal(a.Body, out); err != nil {
			return fmt.Errorf("%s %s: decode the answer: %w: %s", method, path, err, a)
		}
	}
	return nil
}

// The shapes of the external API the check reads.
type (
	fleetResources struct {
		CPUs      int64 `json:"cpus"`
		MemoryMiB int64 `json:"memory_mib"`
	}
	fleetSled struct {
		ID          string         `json:"id"`
		Address     string         `json:"address"`
		APIVersions []string       `json:"api_versions"`
		State       string         `json:"state"`
		Capacity    fleetResources `json:"capacity"`
		Reserved    fleetResources `json:"reserved"`
		Vmms        int64          `json:"vmms"`
		LastContact string         `json:"last_contact"`
	}
	fleetInstance struct {
		ID        string `json:"id"`
		Name      string `json:"name"`
		State     string `json:"state"`
		ActiveVmm *struct {
			ID     string `json:"id"`
			SledID string `json:"sled_id"`
			State  string `json:"state"`
		} `json:"active_vmm"`
		Migration json.RawMessage `json:"migration"`
	}
	fleetSaga struct {
		ID        string `json:"id"`
		Kind      string `json:"kind"`
		State     string `json:"state"`
		Error     string `json:"error"`
		ErrorCode string `json:"error_code"`
		Steps     []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"steps"`
	}
)

// failedStep names the saga's failed step ("" if none).
func (s fleetSaga) failedStep() string {
	for _, st := range s.Steps {
		if st.State == "failed" {
			return st.Name
		}
	}
	return ""
}

// sleds reads GET /v1/sleds.
func (f *fleet) sleds(ctx context.Context) ([]fleetSled, error) {
	var list struct {
		Sleds []fleetSled `json:"sleds"`
	}
	err := f.expect(ctx, "GET", "/sleds", nil, 200, "", &list)
	return list.Sleds, err
}

// eventually calls cond until it returns true, an error, or FleetWait
// passes; then the error says what was waited for and what was seen last.
func eventually(ctx context.Context, what string, cond func() (bool, string, error)) error {
	deadline := time.Now().Add(FleetWait)
	for {
		ok, seen, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not so within %v; last seen: %s", what, FleetWait, seen)
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// step runs one check, recording it in words, or wrapping its failure in
// a *FleetError.
func (f *fleet) step(what string, err error) error {
	if err != nil {
		return &FleetError{Step: what, Err: err}
	}
	f.did = append(f.did, what)
	return nil
}

// checkWithoutVM runs the checks that need no VM. With kvm, the start
// that unwinds for want of /dev/kvm is left out.
func (f *fleet) checkWithoutVM(ctx context.Context, kvm bool) error {
	if err := f.step("both sleds registered and listed active with their capacity", f.registered(ctx)); err != nil {
		return err
	}
	if err := f.step("the control plane reached both agents (their last contact moved on)", f.contacted(ctx)); err != nil {
		return err
	}
	if err := f.step("a ring of the doorbell answered (404 no_such_vmm for a VMM it does not know)", f.ring(ctx)); err != nil {
		return err
	}
	if err := f.step("wrong tokens refused with 401 by the external and internal APIs and the sled agents", f.refusals(ctx)); err != nil {
		return err
	}
	if err := f.step("a create with a spec that breaks its version's rules refused with 400 invalid_spec, nothing stored", f.badCreate(ctx)); err != nil {
		return err
	}
	var inst fleetInstance
	if err := f.step("an instance created stopped, its name then refused with 409 name_in_use", f.create(ctx, &inst)); err != nil {
		return err
	}
	if !kvm {
		if err := f.step("a start the sleds cannot run (no /dev/kvm) unwound at its register step, the instance stopped", f.startUnwinds(ctx, inst.ID)); err != nil {
			return err
		}
		if err := f.step("no reservation or VMM left on any sled", f.nothingLeft(ctx)); err != nil {
			return err
		}
		if err := f.step("the instance deleted (saga done, 404 after, its name free)", f.delete(ctx, inst.ID)); err != nil {
			return err
		}
		return nil
	}
	return f.step("the instance deleted (saga done, 404 after, its name free)", f.delete(ctx, inst.ID))
}

// registered waits until GET /v1/sleds lists one active sled for each
// agent, with the capacity it was given, and notes their ids.
func (f *fleet) registered(ctx context.Context) error {
	return eventually(ctx, "both sled agents registered and active", func() (bool, string, error) {
		sleds, err := f.sleds(ctx)
		if err != nil {
			return false, "", err
		}
		f.sledIDs, f.registeredAt = map[string]string{}, map[string]string{}
		for _, s := range sleds {
			if !slices.Contains(f.agents, s.Address) {
				return false, "", fmt.Errorf("GET /v1/sleds lists a sled at %s, which is none of the fleet's agents %v", s.Address, f.agents)
			}
			if s.State != "active" || s.Capacity != (fleetResources{CPUs: 2, MemoryMiB: 1024}) || !slices.Contains(s.APIVersions, "v1") {
				return false, fmt.Sprintf("%+v", s), nil
			}
			f.sledIDs[s.Address] = s.ID
			f.registeredAt[s.ID] = s.LastContact
		}
		return len(f.sledIDs) == len(f.agents), fmt.Sprintf("%d of %d sleds listed: %+v; %s", len(sleds), len(f.agents), sleds, f.logTails()), nil
	})
}

// logTails is, for a failure's message, what each of the fleet's
// processes last warned of (its last three warnings and errors), or else
// the end of its output.
func (f *fleet) logTails() string {
	var parts []string
	for _, p := range f.procs {
		out := p.stderr.Bytes()
		var warned []string
		for line := range strings.SplitSeq(string(out), "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				warned = append(warned, line)
			}
		}
		if len(warned) > 0 {
			parts = append(parts, fmt.Sprintf("%s last warned: %s", p.name, strings.Join(warned[max(0, len(warned)-3):], " | ")))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s's last output: %s", p.name, strings.TrimSpace(tail(out, 600))))
	}
	return strings.Join(parts, "; ")
}

// contacted waits until each sled's last contact is later than when it
// was first listed: the watcher pinged its agent, through the sled-agent
// API, and the agent answered.
func (f *fleet) contacted(ctx context.Context) error {
	return eventually(ctx, "the control plane's watcher reached every sled agent", func() (bool, string, error) {
		sleds, err := f.sleds(ctx)
		if err != nil {
			return false, "", err
		}
		n := 0
		for _, s := range sleds {
			if first, ok := f.registeredAt[s.ID]; ok && s.LastContact > first {
				n++
			}
		}
		return n == len(f.agents), fmt.Sprintf("%+v (first seen %v); %s", sleds, f.registeredAt, f.logTails()), nil
	})
}

// ring rings the doorbell of a VMM the control plane does not know, with
// the agents' token, as an agent does: 404 no_such_vmm.
func (f *fleet) ring(ctx context.Context) error {
	a, err := f.call(ctx, f.internal, f.cpToken, "POST", "/vmms/00000000-0000-4000-8000-00000000dead/changed", nil)
	if err != nil {
		return err
	}
	if a.Status != 404 || a.code() != "no_such_vmm" {
		return fmt.Errorf("POST /v1/vmms/{id}/changed: want 404 no_such_vmm, got %s", a)
	}
	return nil
}

// refusals sends a wrong token, and none, to each API of the fleet.
func (f *fleet) refusals(ctx context.Context) error {
	for _, c := range []struct{ what, addr, token, method, path string }{
		{"the external API, a wrong token", f.api, f.badToken, "GET", "/instances"},
		{"the external API, no token", f.api, "", "GET", "/sleds"},
		{"the internal API, the external API's token", f.internal, f.apiToken, "POST", "/vmms/00000000-0000-4000-8000-00000000dead/changed"},
		{"a sled agent, the control plane's token for agents", f.agents[0], f.cpToken, "GET", "/vmms"},
	} {
		a, err := f.call(ctx, c.addr, c.token, c.method, c.path, nil)
		if err != nil {
			return err
		}
		if a.Status != 401 || a.code() != "unauthorized" {
			return fmt.Errorf("%s (%s %s): want 401 unauthorized, got %s", c.what, c.method, c.path, a)
		}
	}
	return nil
}

// envelope is a vmm-server/v1 spec in the external API's envelope.
func envelope(spec string) map[string]any {
	return map[string]any{"spec_version": "vmm-server/v1", "spec": json.RawMessage(spec)}
}

// badCreate creates an instance whose spec breaks v1's rules: 400
// invalid_spec, and no instance stored.
func (f *fleet) badCreate(ctx context.Context) error {
	body := map[string]any{"name": "gate-bad", "spec": envelope(fleetBadSpec)}
	if err := f.expect(ctx, "POST", "/instances", body, 400, "invalid_spec", nil); err != nil {
		return err
	}
	return f.expect(ctx, "GET", "/instances/gate-bad", nil, 404, "no_such_instance", nil)
}

// create creates the instance gate-ticker without starting it, then
// another of the same name.
func (f *fleet) create(ctx context.Context, inst *fleetInstance) error {
	body := map[string]any{"name": "gate-ticker", "spec": envelope(fleetSpec)}
	var created struct {
		Instance fleetInstance   `json:"instance"`
		Saga     json.RawMessage `json:"saga"`
	}
	if err := f.expect(ctx, "POST", "/instances", body, 201, "", &created); err != nil {
		return err
	}
	*inst = created.Instance
	if inst.Name != "gate-ticker" || inst.ID == "" {
		return fmt.Errorf("POST /v1/instances answered instance %+v, not gate-ticker with an id", *inst)
	}
	if err := f.awaitInstance(ctx, inst.ID, "stopped", inst); err != nil {
		return err
	}
	return f.expect(ctx, "POST", "/instances", body, 409, "name_in_use", nil)
}

// awaitInstance waits until the instance is in state want.
func (f *fleet) awaitInstance(ctx context.Context, id, want string, inst *fleetInstance) error {
	return eventually(ctx, "the instance "+want, func() (bool, string, error) {
		if err := f.expect(ctx, "GET", "/instances/"+id, nil, 200, "", inst); err != nil {
			return false, "", err
		}
		return inst.State == want, fmt.Sprintf("%+v", *inst), nil
	})
}

// saga starts a saga with POST path (202) and waits until it ends,
// returning how it ended.
func (f *fleet) saga(ctx context.Context, method, path string, body any) (fleetSaga, error) {
	var s fleetSaga
	if err := f.expect(ctx, method, path, body, 202, "", &s); err != nil {
		return s, err
	}
	return f.awaitSaga(ctx, s)
}

// awaitSaga waits until the saga s ends and returns how it ended.
func (f *fleet) awaitSaga(ctx context.Context, s fleetSaga) (fleetSaga, error) {
	err := eventually(ctx, "the saga "+s.Kind+" ended", func() (bool, string, error) {
		if err := f.expect(ctx, "GET", "/sagas/"+s.ID, nil, 200, "", &s); err != nil {
			return false, "", err
		}
		return s.State == "done" || s.State == "unwound" || s.State == "stuck", fmt.Sprintf("%+v", s), nil
	})
	return s, err
}

// sagaDone starts a saga and wants it done.
func (f *fleet) sagaDone(ctx context.Context, method, path string, body any) error {
	s, err := f.saga(ctx, method, path, body)
	if err != nil {
		return err
	}
	if s.State != "done" {
		return fmt.Errorf("%s %s: the saga %s ended %s (error_code %s, failed step %q): %s", method, path, s.Kind, s.State, s.ErrorCode, s.failedStep(), s.Error)
	}
	return nil
}

// startUnwinds starts the instance where no sled can run a VM: the saga
// unwinds at its register step (the sled's VMM server refuses the VM),
// and the instance is stopped again.
func (f *fleet) startUnwinds(ctx context.Context, id string) error {
	s, err := f.saga(ctx, "POST", "/instances/"+id+"/start", nil)
	if err != nil {
		return err
	}
	if s.State != "unwound" || s.failedStep() != "register" {
		return fmt.Errorf("want the start saga unwound at its register step, got %s at %q (error_code %s): %s", s.State, s.failedStep(), s.ErrorCode, s.Error)
	}
	for _, st := range s.Steps {
		if st.State != "undone" && st.State != "failed" && st.State != "pending" {
			return fmt.Errorf("the unwound start saga left its step %s %s", st.Name, st.State)
		}
	}
	var inst fleetInstance
	return f.awaitInstance(ctx, id, "stopped", &inst)
}

// nothingLeft waits until no sled holds a reservation or a VMM, in the
// control plane's records and in each agent's own list of VMMs.
func (f *fleet) nothingLeft(ctx context.Context) error {
	return eventually(ctx, "no reservation or VMM on any sled", func() (bool, string, error) {
		sleds, err := f.sleds(ctx)
		if err != nil {
			return false, "", err
		}
		for _, s := range sleds {
			if s.Reserved != (fleetResources{}) || s.Vmms != 0 {
				return false, fmt.Sprintf("GET /v1/sleds: %+v", sleds), nil
			}
		}
		for _, addr := range f.agents {
			a, err := f.call(ctx, addr, f.sledToken, "GET", "/vmms", nil)
			if err != nil {
				return false, "", err
			}
			var list struct {
				Vmms []json.RawMessage `json:"vmms"`
			}
			if a.Status != 200 || json.Unmarshal(a.Body, &list) != nil {
				return false, "", fmt.Errorf("the sled agent at %s: GET /v1/vmms: want 200 and a list, got %s", addr, a)
			}
			if len(list.Vmms) != 0 {
				return false, fmt.Sprintf("the sled agent at %s still holds %d VMMs: %s", addr, len(list.Vmms), a), nil
			}
		}
		return true, "", nil
	})
}

// delete deletes the stopped instance: the saga ends done, the instance
// answers 404, and its name can be taken again (and is freed once more).
func (f *fleet) delete(ctx context.Context, id string) error {
	if err := f.sagaDone(ctx, "DELETE", "/instances/"+id, nil); err != nil {
		return err
	}
	if err := f.expect(ctx, "GET", "/instances/"+id, nil, 404, "no_such_instance", nil); err != nil {
		return err
	}
	var list struct {
		Instances []fleetInstance `json:"instances"`
	}
	if err := f.expect(ctx, "GET", "/instances", nil, 200, "", &list); err != nil {
		return err
	}
	if len(list.Instances) != 0 {
		return fmt.Errorf("GET /v1/instances after the delete lists %+v", list.Instances)
	}
	return nil
}

// checkLife runs an instance's life on KVM: created and started on a
// sled, migrated to the other, stopped and deleted, each saga done, and
// nothing left behind.
func (f *fleet) checkLife(ctx context.Context) error {
	body := map[string]any{"name": "gate-life", "spec": envelope(fleetSpec), "start": true}
	var created struct {
		Instance fleetInstance `json:"instance"`
		Saga     *fleetSaga    `json:"saga"`
	}
	var inst fleetInstance
	err := func() error {
		if err := f.expect(ctx, "POST", "/instances", body, 201, "", &created); err != nil {
			return err
		}
		if created.Saga == nil {
			return errors.New("a create with start answered no saga")
		}
		s, err := f.awaitSaga(ctx, *created.Saga)
		if err != nil {
			return err
		}
		if s.State != "done" {
			return fmt.Errorf("the start saga ended %s (error_code %s, failed step %q): %s", s.State, s.ErrorCode, s.failedStep(), s.Error)
		}
		return f.awaitInstance(ctx, created.Instance.ID, "running", &inst)
	}()
	if err := f.step("an instance created and started, running on a sled", err); err != nil {
		return err
	}
	id := inst.ID
	if inst.ActiveVmm == nil {
		return f.step("the running instance has an active VMM", errors.New("GET answers none"))
	}
	from := inst.ActiveVmm.SledID
	err = func() error {
		if err := f.sagaDone(ctx, "POST", "/instances/"+id+"/migrate", map[string]any{}); err != nil {
			return err
		}
		if err := f.awaitInstance(ctx, id, "running", &inst); err != nil {
			return err
		}
		if inst.ActiveVmm == nil || inst.ActiveVmm.SledID == from {
			return fmt.Errorf("after the migration the instance runs on %+v, not on the other sled than %s", inst.ActiveVmm, from)
		}
		if len(inst.Migration) > 0 && string(inst.Migration) != "null" {
			return fmt.Errorf("after the migration the instance still shows one: %s", inst.Migration)
		}
		return nil
	}()
	if err := f.step("the instance migrated to the other sled, running there", err); err != nil {
		return err
	}
	err = func() error {
		if err := f.sagaDone(ctx, "POST", "/instances/"+id+"/stop", nil); err != nil {
			return err
		}
		return f.awaitInstance(ctx, id, "stopped", &inst)
	}()
	if err := f.step("the instance stopped", err); err != nil {
		return err
	}
	if err := f.step("no reservation or VMM left on any sled after the stop", f.nothingLeft(ctx)); err != nil {
		return err
	}
	return f.step("the instance deleted", f.delete(ctx, id))
}

// fleetVersion is the contract whose release brings a release into the
// fleet check: the control plane's external API, released with its
// internal API and the sled agent's.
var fleetVersion = corpus.Version{API: "control-plane", N: 1}

// checkFleets runs FleetBothWays for each release that serves
// control-plane/v1 and was built (bins: release name -> binary), against
// HEAD's binary head. It returns what ran, what was skipped and why, and
// every failure.
func checkFleets(ctx context.Context, rels []corpus.Release, bins map[string]string, head string) (ran, skipped []string, err error) {
	kvm := KVMAvailable()
	var errs []error
	anyFleet := false
	for _, r := range rels {
		if !slices.Contains(r.Versions, fleetVersion) {
			continue
		}
		anyFleet = true
		if bins[r.Name] == "" || head == "" {
			skipped = append(skipped, fmt.Sprintf("%s's fleet both ways (a build failed)", r.Name))
			continue
		}
		did, err := FleetBothWays(ctx, r.Name, bins[r.Name], head, kvm)
		for _, d := range did {
			ran = append(ran, "fleet: "+d)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if anyFleet && !kvm {
		skipped = append(skipped, "an instance started, migrated between two sleds, stopped and deleted on each release's fleet and HEAD's, both ways (needs /dev/kvm, which this machine lacks)")
	}
	return ran, skipped, errors.Join(errs...)
}
