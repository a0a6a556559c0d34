package sledagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/spec"
)

// Options configure an Agent.
type Options struct {
	// Root is the agent's directory: its registry, and one directory per
	// VMM holding the VMM's token, log and storage root. Made 0700.
	Root string
	// SledID is the sled's id; the zero id reads Root/sled-id, or makes it.
	SledID uuid.UUID
	// Capacity is what the agent offers to VMMs.
	Capacity Resources
	// PortMin and PortMax bound the ports of the VMM servers (inclusive).
	PortMin, PortMax int
	// Host is the address the VMM servers listen on; 127.0.0.1 if empty.
	Host string
	// VMMBinary and VMMArgs start a VMM server: the agent appends -listen,
	// -auth-token-file and -storage-root. Default: this executable, "server".
	VMMBinary string
	VMMArgs   []string
	// Dial reaches a VMM server; required.
	Dial Dialer
	// Bell rings the control plane's doorbell; nil rings nothing.
	Bell Bell
	// Backoff between failed rings; zero: DefaultBackoff.
	Backoff Backoff
	// StartTimeout bounds the wait for a new VMM server to answer; 15 s if
	// zero.
	StartTimeout time.Duration
	Log          *slog.Logger
}

// Agent runs the VMMs of one sled.
type Agent struct {
	opts   Options
	log    *slog.Logger
	sledID uuid.UUID
	m      *metrics
	bell   *doorbell

	ctx    context.Context // ends at Close: stops watchers
	cancel context.CancelFunc
	wg     sync.WaitGroup
	lock   *os.File // holds root/lock until Close

	mu       sync.Mutex
	vmms     map[uuid.UUID]*vmm
	starting map[uuid.UUID]*pending
	// unregistering holds the ids being unregistered: gone from vmms, but
	// their process, directory and reservation not yet released; each
	// channel is closed when that is done.
	unregistering map[uuid.UUID]chan struct{}
	reserved      Resources
	ports         map[int]bool
	closed        bool
}

// vmm is one registered VMM.
type vmm struct {
	rec    vmmRecord    // persisted; State is kept in state
	state  SledVmmState // under Agent.mu
	proc   *Process     // nil once terminal after a restart without a process
	client VMMClient    // under Agent.mu; nil until an adopted server answers
}

// pending is a registration being started; a second identical request
// waits for it.
type pending struct {
	fingerprint string
	done        chan struct{}
	rec         *vmmRecord // once its process runs: saved, marked Starting
}

// New starts an agent over opts.Root, which it locks (a second agent over
// the same root fails with ErrRootLocked): it loads the registry, adopts
// the VMM servers still running (their pid and command line match the
// record; one that does not answer yet is dialled again by its watcher;
// one that refuses its token is killed), marks those that vanished failed,
// and kills and removes what an ensure cut short by a crash left behind.
// Every registered VMM's doorbell rings once, so that nothing that changed
// while no agent ran is lost.
func New(opts Options) (*Agent, error) {
	if opts.Dial == nil {
		return nil, errors.New("sled agent: no Dial")
	}
	if opts.PortMin <= 0 || opts.PortMax < opts.PortMin || opts.PortMax > 65535 {
		return nil, fmt.Errorf("sled agent: VMM port range %d-%d is not valid", opts.PortMin, opts.PortMax)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.VMMBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("sled agent: find the waggle binary: %w", err)
		}
		opts.VMMBinary = exe
		if opts.VMMArgs == nil {
			opts.VMMArgs = []string{"server"}
		}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	if opts.Backoff.Min <= 0 || opts.Backoff.Max < opts.Backoff.Min {
		opts.Backoff = DefaultBackoff
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, err
	}
	opts.Root = root
	if err := os.MkdirAll(filepath.Join(root, "vmms"), 0o700); err != nil {
		return nil, fmt.Errorf("sled agent root: %w", err)
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	id := opts.SledID
	if id == uuid.Nil {
		if id, err = sledID(root); err != nil {
			lock.Close()
			return nil, err
		}
	}
	reg, err := loadRegistry(root)
	if err != nil {
		lock.Close()
		return nil, err
	}
	m := newMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		opts: opts, log: opts.Log, sledID: id, m: m,
		bell: newDoorbell(opts.Bell, opts.Backoff, opts.Log, m),
		ctx:  ctx, cancel: cancel, lock: lock,
		vmms: map[uuid.UUID]*vmm{}, starting: map[uuid.UUID]*pending{}, ports: map[int]bool{},
		unregistering: map[uuid.UUID]chan struct{}{},
	}
	for _, rec := range reg.VMMs {
		if !rec.Starting {
			a.restore(rec)
		}
	}
	a.sweepOrphans()
	a.mu.Lock()
	err = a.saveLocked()
	a.updateGaugeLocked()
	ids := a.idsLocked()
	a.mu.Unlock()
	if err != nil {
		a.Close()
		return nil, err
	}
	for _, id := range ids {
		a.bell.notify(id)
	}
	return a, nil
}

// restore takes back one VMM of the registry: adopted when its process
// still runs and answers with its token, else failed.
func (a *Agent) restore(rec vmmRecord) {
	v := &vmm{rec: rec, state: rec.State.domain()}
	a.reserved.CPUs += rec.CPUs
	a.reserved.MemoryMiB += rec.MemoryMiB
	a.ports[rec.Port] = true
	a.vmms[rec.ID] = v
	if v.state.State.Terminal() {
		// Its process may still run (it is killed at unregister).
		if pidAlive(rec.Pid) && cmdlineHas(rec.Pid, rec.TokenPath) {
			if p, err := adopt(rec.Pid, rec.TokenPath); err == nil {
				v.proc = p
			}
		}
		return
	}
	why := a.tryAdopt(v)
	if why == "" {
		a.log.Info("adopted a running VMM", "vmm_id", rec.ID, "pid", rec.Pid, "addr", rec.Addr)
		a.startWatch(v)
		return
	}
	a.log.Warn("a VMM did not survive the agent's restart", "vmm_id", rec.ID, "pid", rec.Pid, "why", why)
	a.m.exits.WithLabelValues("unknown").Inc()
	v.state = transition(v.state, StateFailed, &FailureReason{Kind: FailureProcessExited,
		Message: fmt.Sprintf("the VMM process (pid %d) %s", rec.Pid, why)})
}

// sweepOrphans removes what a crash between the start of a VMM server and
// the end of its ensure left behind: every directory beneath vmms/ that
// no restored VMM owns, after killing any process whose command line holds
// that directory's token file (pid and command line prove it is the
// agent's, whatever the registry lost).
func (a *Agent) sweepOrphans() {
	dir := filepath.Join(a.opts.Root, "vmms")
	entries, err := os.ReadDir(dir)
	if err != nil {
		a.log.Error("the VMMs' directories could not be listed", "dir", dir, "err", err)
		return
	}
	// Owned by name (vmms/<id>), not by the recorded path: a root that
	// was moved keeps its VMMs' directories.
	owned := map[string]bool{}
	for id, v := range a.vmms {
		owned[id.String()] = true
		if filepath.Dir(filepath.Clean(v.rec.Dir)) == dir {
			owned[filepath.Base(v.rec.Dir)] = true
		}
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if owned[e.Name()] {
			continue
		}
		token := filepath.Join(path, "token")
		for _, pid := range pidsWithArg(token) {
			p, err := adopt(pid, token)
			if err != nil {
				continue // gone meanwhile
			}
			a.log.Warn("killing the VMM server of an ensure that never ended", "dir", path, "pid", pid)
			if err := p.Kill(10 * time.Second); err != nil {
				a.log.Error("an orphan VMM server could not be killed", "pid", pid, "err", err)
			}
		}
		if err := os.RemoveAll(path); err != nil {
			a.log.Error("an orphan VMM directory could not be removed", "dir", path, "err", err)
		}
	}
}

// tryAdopt adopts v's process; it answers why not, or "". The pid and
// the token file on its command line prove the process is the VMM server
// the registry recorded: it is adopted even when it does not answer now
// (a slow or busy server, a refused connection), and the watcher keeps
// dialling it with backoff. Only a definite refusal of its token (a
// stranger's server on that port, or a token file replaced) kills it.
func (a *Agent) tryAdopt(v *vmm) string {
	rec := v.rec
	if !pidAlive(rec.Pid) || !cmdlineHas(rec.Pid, rec.TokenPath) {
		return "was gone when the agent restarted"
	}
	p, err := adopt(rec.Pid, rec.TokenPath)
	if err != nil {
		return "was gone when the agent restarted"
	}
	client, err := a.dialVMM(v)
	switch {
	case err == nil:
		v.proc, v.client = p, client
	case errors.Is(err, ErrTokenRefused):
		if kerr := p.Kill(10 * time.Second); kerr != nil {
			a.log.Error("a VMM that refused its token could not be killed", "vmm_id", rec.ID, "pid", rec.Pid, "err", kerr)
		}
		return "was running when the agent restarted but did not answer with its token, and was killed: " + err.Error()
	default:
		a.log.Warn("an adopted VMM's server does not answer yet; retrying", "vmm_id", rec.ID, "pid", rec.Pid, "err", err)
		v.proc = p
	}
	return ""
}

// dialVMM reaches v's server with the token its file holds.
func (a *Agent) dialVMM(v *vmm) (VMMClient, error) {
	token, err := httpkit.ReadTokenFile(v.rec.TokenPath)
	if err != nil {
		return nil, fmt.Errorf("read the VMM's token: %v: %w", err, ErrVMMUnavailable)
	}
	ctx, cancel := context.WithTimeout(a.ctx, 3*time.Second)
	defer cancel()
	return a.opts.Dial(ctx, v.rec.Addr, token)
}

// SledID returns the sled's id.
func (a *Agent) SledID() uuid.UUID { return a.sledID }

// Capacity returns what the agent offers.
func (a *Agent) Capacity() Resources { return a.opts.Capacity }

// Close stops watching and ringing and saves the registry. The VMM
// processes run on: a later agent over the same root adopts them.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.bell.close()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.saveLocked()
	a.lock.Close() // after the last save: the next agent may start now
	return err
}

// transition returns s moved to state (with failure, for StateFailed),
// its generation bumped.
func transition(s SledVmmState, state VmmState, failure *FailureReason) SledVmmState {
	s.State, s.Failure = state, failure
	s.Gen++
	s.TimeUpdated = time.Now().UTC()
	return s
}

func (a *Agent) idsLocked() []uuid.UUID {
	ids := make([]uuid.UUID, 0, len(a.vmms))
	for id := range a.vmms {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareUUID)
	return ids
}

// compareUUID orders ids by their bytes, which is the order of their
// strings.
func compareUUID(x, y uuid.UUID) int { return bytes.Compare(x[:], y[:]) }

// saveLocked writes the registry.
func (a *Agent) saveLocked() error {
	reg := registryFile{SledID: a.sledID, Saved: time.Now().UTC()}
	for _, id := range a.idsLocked() {
		v := a.vmms[id]
		rec := v.rec
		rec.State = toDiskState(v.state)
		reg.VMMs = append(reg.VMMs, rec)
	}
	starting := make([]uuid.UUID, 0, len(a.starting))
	for id, p := range a.starting {
		if p.rec != nil {
			starting = append(starting, id)
		}
	}
	slices.SortFunc(starting, compareUUID)
	for _, id := range starting {
		rec := *a.starting[id].rec
		rec.Starting = true
		reg.VMMs = append(reg.VMMs, rec)
	}
	return saveRegistry(a.opts.Root, reg)
}

// save writes the registry, logging a failure: the state in memory is
// still right, and the next change writes it again.
func (a *Agent) saveLockedLog() {
	if err := a.saveLocked(); err != nil {
		a.log.Error("the registry could not be saved", "err", err)
	}
}

func (a *Agent) updateGaugeLocked() {
	counts := map[VmmState]int{}
	for _, v := range a.vmms {
		counts[v.state.State]++
	}
	for _, s := range AllStates {
		a.m.vmms.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

// view answers v as the API shows it.
func (v *vmm) view() Vmm {
	return Vmm{ID: v.rec.ID, Properties: Properties{ID: v.rec.Properties.ID, Name: v.rec.Properties.Name,
		Description: v.rec.Properties.Description}, Addr: v.rec.Addr,
		Resources: Resources{CPUs: v.rec.CPUs, MemoryMiB: v.rec.MemoryMiB}, State: v.state}
}

// Get returns a registered VMM.
func (a *Agent) Get(id uuid.UUID) (Vmm, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.vmms[id]
	if !ok {
		return Vmm{}, fmt.Errorf("VMM %s: %w", id, ErrNoSuchVmm)
	}
	return v.view(), nil
}

// State returns a registered VMM's state.
func (a *Agent) State(id uuid.UUID) (SledVmmState, error) {
	v, err := a.Get(id)
	return v.State, err
}

// List returns every registered VMM, ordered by id.
func (a *Agent) List() []Vmm {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Vmm, 0, len(a.vmms))
	for _, id := range a.idsLocked() {
		out = append(out, a.vmms[id].view())
	}
	return out
}

// Inventory returns the sled's id and capacity.
func (a *Agent) Inventory() Inventory {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.opts.Capacity
	return Inventory{
		SledID:    a.sledID,
		CPUs:      Amount{Total: uint64(c.CPUs), Reserved: uint64(a.reserved.CPUs), Free: uint64(c.CPUs) - min(uint64(c.CPUs), uint64(a.reserved.CPUs))},
		MemoryMiB: Amount{Total: c.MemoryMiB, Reserved: a.reserved.MemoryMiB, Free: c.MemoryMiB - min(c.MemoryMiB, a.reserved.MemoryMiB)},
		VMMs:      len(a.vmms),
	}
}

func (a *Agent) freeLocked() Resources {
	c := a.opts.Capacity
	return Resources{CPUs: c.CPUs - min(c.CPUs, a.reserved.CPUs), MemoryMiB: c.MemoryMiB - min(c.MemoryMiB, a.reserved.MemoryMiB)}
}

// Ensure registers the VMM id and creates its instance in a VMM server of
// its own. An identical registration answers the VMM as it is (created
// false); another for a registered id fails with ErrVmmExists. A failure
// leaves no process, no directory and no reservation behind.
func (a *Agent) Ensure(ctx context.Context, id uuid.UUID, req EnsureRequest) (Vmm, bool, error) {
	if (req.Spec == nil) == (req.Migrate == nil) {
		return Vmm{}, false, &FieldError{Field: "body", Problem: "give exactly one of spec and migrate"}
	}
	for {
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			return Vmm{}, false, ErrClosed
		}
		if v, ok := a.vmms[id]; ok {
			defer a.mu.Unlock()
			if v.rec.Fingerprint != req.Fingerprint {
				return Vmm{}, false, fmt.Errorf("VMM %s: %w", id, ErrVmmExists)
			}
			return v.view(), false, nil
		}
		if gone, ok := a.unregistering[id]; ok {
			// Its directory, port and reservation are still being
			// released: a new VMM of that id waits for the end.
			a.mu.Unlock()
			select {
			case <-gone:
				continue
			case <-ctx.Done():
				return Vmm{}, false, fmt.Errorf("VMM %s is being unregistered: %w", id, ctx.Err())
			}
		}
		p, ok := a.starting[id]
		if !ok {
			break
		}
		a.mu.Unlock()
		if p.fingerprint != req.Fingerprint {
			return Vmm{}, false, fmt.Errorf("VMM %s (being started): %w", id, ErrVmmExists)
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			return Vmm{}, false, ctx.Err()
		}
	}
	// a.mu is held.
	need := req.Resources
	if free := a.freeLocked(); need.CPUs > free.CPUs || need.MemoryMiB > free.MemoryMiB {
		a.mu.Unlock()
		return Vmm{}, false, &CapacityError{Need: need, Free: free}
	}
	port, err := a.takePortLocked()
	if err != nil {
		a.mu.Unlock()
		return Vmm{}, false, err
	}
	a.reserved.CPUs += need.CPUs
	a.reserved.MemoryMiB += need.MemoryMiB
	p := &pending{fingerprint: req.Fingerprint, done: make(chan struct{})}
	a.starting[id] = p
	a.mu.Unlock()

	v, err := a.start(ctx, id, port, req, p)

	a.mu.Lock()
	if err == nil && a.closed {
		// The agent closed meanwhile, and its root may be another's
		// now: the ensure fails whole (the caller retries on the next
		// agent).
		err = ErrClosed
	}
	if err == nil {
		a.vmms[id] = v
		delete(a.starting, id)
		if serr := a.saveLocked(); serr != nil {
			// Not written down, the VMM would be lost at the next
			// restart: refuse it now rather than answer it exists.
			delete(a.vmms, id)
			a.starting[id] = p
			err = serr
		}
	}
	if err != nil {
		// A request waiting for this one (p.done) goes on only once the
		// directory, port and reservation are released.
		a.mu.Unlock()
		if v != nil {
			a.discard(id, v.proc, v.rec.Dir)
		}
		a.mu.Lock()
		a.reserved.CPUs -= need.CPUs
		a.reserved.MemoryMiB -= need.MemoryMiB
		delete(a.ports, port)
		delete(a.starting, id)
		close(p.done)
		if !a.closed {
			a.saveLockedLog() // without the starting record
		}
		a.mu.Unlock()
		return Vmm{}, false, err
	}
	close(p.done)
	a.updateGaugeLocked()
	view := v.view()
	a.startWatch(v)
	a.mu.Unlock()
	a.bell.notify(id)
	return view, true, nil
}

// takePortLocked picks the lowest port of the range that no VMM holds and
// that can be bound now.
func (a *Agent) takePortLocked() (int, error) {
	for port := a.opts.PortMin; port <= a.opts.PortMax; port++ {
		if a.ports[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(a.opts.Host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		a.ports[port] = true
		return port, nil
	}
	return 0, ErrNoFreePort
}

// discard kills a VMM the agent refuses after starting it and removes its
// directory.
func (a *Agent) discard(id uuid.UUID, proc *Process, dir string) {
	if proc != nil {
		if err := proc.Kill(10 * time.Second); err != nil {
			a.log.Error("a refused VMM's process could not be killed", "vmm_id", id, "pid", proc.Pid, "err", err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		a.log.Error("a refused VMM's directory could not be removed", "vmm_id", id, "dir", dir, "err", err)
	}
}

// start makes the VMM's directory and token, starts its server, records it
// as starting (in p, and in the registry, so that a crash leaves no
// orphan), waits for it to answer and creates the instance. On failure it
// kills the process and removes the directory.
func (a *Agent) start(ctx context.Context, id uuid.UUID, port int, req EnsureRequest, p *pending) (v *vmm, err error) {
	dir := filepath.Join(a.opts.Root, "vmms", id.String())
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, fmt.Errorf("make the VMM's directory: %w", err)
	}
	var proc *Process
	defer func() {
		if err != nil {
			a.discard(id, proc, dir)
		}
	}()
	token, err := httpkit.GenerateToken()
	if err != nil {
		return nil, err
	}
	tokenPath := filepath.Join(dir, "token")
	if err := httpkit.WriteTokenFile(tokenPath, token); err != nil {
		return nil, fmt.Errorf("write the VMM's token: %w", err)
	}
	addr := net.JoinHostPort(a.opts.Host, strconv.Itoa(port))
	args := append(slices.Clone(a.opts.VMMArgs), "-listen", addr, "-auth-token-file", tokenPath, "-storage-root", storage)
	logPath := filepath.Join(dir, "server.log")
	if proc, err = launch(a.opts.VMMBinary, args, logPath); err != nil {
		return nil, err
	}
	rec := vmmRecord{ID: id, Properties: diskProps{req.Properties.ID, req.Properties.Name, req.Properties.Description},
		CPUs: req.Resources.CPUs, MemoryMiB: req.Resources.MemoryMiB, Fingerprint: req.Fingerprint,
		Pid: proc.Pid, Port: port, Addr: addr, TokenPath: tokenPath, Dir: dir, CheckBoard: req.Migrate != nil}
	a.mu.Lock()
	if a.closed {
		err = ErrClosed // the root may be another agent's now
	} else {
		p.rec = &rec
		err = a.saveLocked()
	}
	a.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("record the starting VMM: %w", err)
	}
	client, err := a.waitReady(ctx, proc, addr, token, logPath)
	if err != nil {
		return nil, err
	}
	var mig *MigrationTarget
	if req.Migrate != nil {
		mig = req.Migrate
	}
	if err := client.Ensure(ctx, req.Properties, req.Spec, mig); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	state := SledVmmState{State: StateCreating, Gen: 1, TimeUpdated: now}
	if req.Migrate != nil {
		state.MigrationIn = &MigrationRuntime{ID: req.Migrate.MigrationID, State: MigrationPending, Gen: 1, TimeUpdated: now}
	}
	a.log.Info("VMM registered", "vmm_id", id, "pid", proc.Pid, "addr", addr)
	return &vmm{rec: rec, state: state, proc: proc, client: client}, nil
}

// waitReady dials the new server until it answers, it exits, or the start
// timeout passes.
func (a *Agent) waitReady(ctx context.Context, proc *Process, addr, token, logPath string) (VMMClient, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.StartTimeout)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		client, err := a.opts.Dial(ctx, addr, token)
		if err == nil {
			return client, nil
		}
		if !errors.Is(err, ErrVMMUnavailable) {
			return nil, err
		}
		select {
		case <-proc.Done():
			return nil, fmt.Errorf("the VMM server %s before it answered: %s: %w", proc.Status(), logTail(logPath), ErrVMMUnavailable)
		case <-ctx.Done():
			return nil, fmt.Errorf("the VMM server did not answer within %v: %w", a.opts.StartTimeout, ErrVMMUnavailable)
		case <-time.After(delay):
			delay = min(2*delay, 100*time.Millisecond)
		}
	}
}

// logTail returns the last line of a VMM server's log, for a message.
func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return "no output"
	}
	data = trimSpace(data)
	if len(data) > 300 {
		data = data[len(data)-300:]
	}
	return string(data)
}

// Request passes a state change to the VMM's server.
func (a *Agent) Request(ctx context.Context, id uuid.UUID, r Requested) (SledVmmState, error) {
	_, client, err := a.live(id)
	if err != nil {
		return SledVmmState{}, err
	}
	if err := client.Request(ctx, r); err != nil {
		return SledVmmState{}, err
	}
	return a.State(id)
}

// Arm arms the VMM as a migration source and records the outbound
// migration as pending, unless the agent has recorded that migration
// already (a repeated arm, or progress observed meanwhile).
func (a *Agent) Arm(ctx context.Context, id uuid.UUID, arm MigrationArm) (SledVmmState, MigrationArmed, error) {
	v, client, err := a.live(id)
	if err != nil {
		return SledVmmState{}, MigrationArmed{}, err
	}
	armed, err := client.Arm(ctx, arm)
	if err != nil {
		return SledVmmState{}, MigrationArmed{}, err
	}
	a.mu.Lock()
	// The watcher may have recorded this migration's progress already
	// (the server moved on before the lock was ours): that is never
	// moved back to pending.
	if prev := v.state.MigrationOut; a.vmms[id] == v && !v.state.State.Terminal() && (prev == nil || prev.ID != arm.MigrationID) {
		next := v.state
		next.MigrationOut = &MigrationRuntime{ID: arm.MigrationID, State: MigrationPending, Gen: 1, TimeUpdated: time.Now().UTC()}
		if prev := v.state.MigrationOut; prev != nil {
			next.MigrationOut.Gen = prev.Gen + 1
		}
		next.Gen++
		next.TimeUpdated = next.MigrationOut.TimeUpdated
		v.state = next
		a.saveLockedLog()
	}
	st := v.state
	a.mu.Unlock()
	a.bell.notify(id)
	return st, armed, nil
}

// Serial reads the VMM's serial history from its server.
func (a *Agent) Serial(ctx context.Context, id uuid.UUID, q SerialQuery) (SerialChunk, error) {
	_, client, err := a.live(id)
	if err != nil {
		return SerialChunk{}, err
	}
	return client.Serial(ctx, q)
}

// Console attaches to the VMM's serial console through its server.
func (a *Agent) Console(ctx context.Context, id uuid.UUID) (io.ReadWriteCloser, error) {
	_, client, err := a.live(id)
	if err != nil {
		return nil, err
	}
	return client.Console(ctx)
}

// live returns a registered VMM whose server the agent can reach, and its
// client.
func (a *Agent) live(id uuid.UUID) (*vmm, VMMClient, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.vmms[id]
	if !ok {
		return nil, nil, fmt.Errorf("VMM %s: %w", id, ErrNoSuchVmm)
	}
	if v.proc == nil {
		return nil, nil, fmt.Errorf("VMM %s is %s and its process is gone: %w", id, v.state.State, ErrVMMUnavailable)
	}
	select {
	case <-v.proc.Done():
		return nil, nil, fmt.Errorf("VMM %s: its process %s: %w", id, v.proc.Status(), ErrVMMUnavailable)
	default:
	}
	if v.client == nil {
		return nil, nil, fmt.Errorf("VMM %s: its server has not answered since the agent restarted: %w", id, ErrVMMUnavailable)
	}
	return v, v.client, nil
}

// Unregister forgets a terminal VMM (or, with force, any VMM, killing its
// process first), kills its process if it still runs, removes its
// directory and releases its reservation and port.
func (a *Agent) Unregister(ctx context.Context, id uuid.UUID, force bool) error {
	a.mu.Lock()
	v, ok := a.vmms[id]
	if !ok {
		a.mu.Unlock()
		return fmt.Errorf("VMM %s: %w", id, ErrNoSuchVmm)
	}
	if !v.state.State.Terminal() && !force {
		a.mu.Unlock()
		return fmt.Errorf("VMM %s is %s: %w", id, v.state.State, ErrNotTerminal)
	}
	// Gone from the map first: the exit of its process is no news. An
	// ensure of the same id waits until the cleanup is over.
	delete(a.vmms, id)
	gone := make(chan struct{})
	a.unregistering[id] = gone
	a.mu.Unlock()
	var errs []error
	if v.proc != nil {
		if err := v.proc.Kill(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(v.rec.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove the VMM's directory: %w", err))
	}
	a.mu.Lock()
	a.reserved.CPUs -= min(a.reserved.CPUs, v.rec.CPUs)
	a.reserved.MemoryMiB -= min(a.reserved.MemoryMiB, v.rec.MemoryMiB)
	delete(a.ports, v.rec.Port)
	delete(a.unregistering, id)
	close(gone)
	a.saveLockedLog()
	a.updateGaugeLocked()
	a.mu.Unlock()
	a.log.Info("VMM unregistered", "vmm_id", id, "forced", force && !v.state.State.Terminal())
	return errors.Join(errs...)
}

// ResourcesOf returns the resources a spec reserves: its board's CPUs and
// memory.
func ResourcesOf(s spec.Spec) Resources {
	return Resources{CPUs: s.Board().CPUs, MemoryMiB: s.Board().MemoryMiB}
}
