package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/db"
	"github.com/wagglevm/waggle/controlplane/internalapi"
	"github.com/wagglevm/waggle/controlplane/model"
	"github.com/wagglevm/waggle/controlplane/sledclient"
	sledapi "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/internal/pgembed/pgtest"
	"github.com/wagglevm/waggle/sledagent"
	agentapi "github.com/wagglevm/waggle/sledagent/api"
	"github.com/wagglevm/waggle/sledagent/cpclient"
	"github.com/wagglevm/waggle/sledagent/sledtest"
)

// waggleBin is the binary the sled agents start VMM servers from.
var waggleBin string

func TestMain(m *testing.M) {
	bin, cleanup, err := sledtest.BuildWaggle()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	waggleBin = bin
	defer cleanup()
	pgtest.Main(m)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fleet is a control plane over real PostgreSQL, serving its internal API
// over real HTTP, with real sled agents (each serving its API over real
// HTTP and running real VMM server processes, whose instances are played:
// there is no KVM here).
type fleet struct {
	t       testing.TB
	dbURL   string
	store   *db.DB
	cpAddr  string // the internal API's address, kept across restarts
	cpToken string

	perSled int // VMMs each sled has room and ports for (0: 8)

	mu    sync.Mutex
	cp    *controlplane.ControlPlane // the running control plane; guarded by mu
	stop  func()                     // stops it; guarded by mu
	sleds []*sled
}

// sled is one sled agent of a fleet.
type sled struct {
	id     uuid.UUID
	root   string
	agent  *sledagent.Agent
	fakes  *sledtest.Fakes
	addr   string
	token  string
	client *sledapi.ClientWithResponses
	srv    *http.Server
}

// cpOptions are the control plane options of a test fleet: the watcher is
// run by the tests themselves (WatchOnce), and retries are quick.
func cpOptions(store controlplane.Store, dial controlplane.SledDialer) controlplane.Options {
	return controlplane.Options{Store: store, Dial: dial, Logger: quiet(), WatchInterval: -1,
		CallTimeout: 2 * time.Second, RetryBackoff: 5 * time.Millisecond, SledLostAfter: time.Hour}
}

func newFleet(t testing.TB, sleds int) *fleet { return newFleetSized(t, sleds, 0) }

// newFleetSized is newFleet with sleds that have room (CPUs, memory and
// ports) for perSled one-CPU, 64 MiB VMMs (0: 8).
func newFleetSized(t testing.TB, sleds, perSled int) *fleet {
	t.Helper()
	ctx := context.Background()
	f := &fleet{t: t, dbURL: pgtest.Database(t), perSled: perSled}
	store, err := db.Open(ctx, f.dbURL, db.WithLogger(quiet()))
	require.NoError(t, err)
	t.Cleanup(store.Close)
	f.store = store
	f.cpToken, err = httpkit.GenerateToken()
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f.cpAddr = ln.Addr().String()
	f.startControlPlane(ln)
	t.Cleanup(f.stopControlPlane)
	for range sleds {
		f.addSled()
	}
	return f
}

// dialer reaches the fleet's sled agents, each with its own token.
func (f *fleet) dialer() controlplane.SledDialer {
	return sledclient.New(func(addr string) (string, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.sleds {
			if s.addr == addr {
				return s.token, nil
			}
		}
		return "", fmt.Errorf("no sled at %s", addr)
	})
}

// startControlPlane runs a control plane over the fleet's database and
// serves its internal API on ln.
func (f *fleet) startControlPlane(ln net.Listener) {
	t := f.t
	cp, err := controlplane.New(cpOptions(f.store, f.dialer()))
	require.NoError(t, err)
	h, err := internalapi.NewHandler(cp, httpkit.HandlerOptions{Log: quiet(), Auth: httpkit.BearerToken(f.cpToken)}, cp.MetricsHandler())
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = cp.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	f.mu.Lock()
	f.cp = cp
	f.stop = func() {
		cancel()
		_ = srv.Close()
		wg.Wait()
	}
	f.mu.Unlock()
}

// stopControlPlane stops the control plane and its API (the database
// stays).
func (f *fleet) stopControlPlane() {
	f.mu.Lock()
	stop := f.stop
	f.stop, f.cp = nil, nil
	f.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// restartControlPlane starts a new control plane on the same address.
func (f *fleet) restartControlPlane() {
	f.startControlPlane(listenAgain(f.t, f.cpAddr))
}

// listenAgain listens at addr again once a closed server there lets go
// of it (within 10 s).
func listenAgain(t testing.TB, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	require.Eventually(t, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "address %s stays taken", addr)
	return ln
}

func (f *fleet) controlPlane() *controlplane.ControlPlane {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cp
}

var portMu sync.Mutex
var portNext = 20000 + (os.Getpid()%100)*100

func portRange(n int) (int, int) {
	portMu.Lock()
	defer portMu.Unlock()
	lo := portNext
	portNext += n
	return lo, lo + n - 1
}

// addSled starts a sled agent that rings the fleet's control plane, and
// registers its sled as the real command does.
func (f *fleet) addSled() *sled { return f.addSledDialing(nil) }

// addSledDialing is addSled with the VMM servers reached by dial: nil plays
// their instances (sledtest), vmmclient.New(nil) runs real VMs on KVM.
func (f *fleet) addSledDialing(dial sledagent.Dialer) *sled {
	t := f.t
	ctx := context.Background()
	s := &sled{root: t.TempDir(), fakes: sledtest.NewFakes()}
	if dial == nil {
		dial = s.fakes.Dial
	}
	bell, err := cpclient.New("http://"+f.cpAddr, func() (string, error) { return f.cpToken, nil })
	require.NoError(t, err)
	room, ports := 8, 20
	if f.perSled > 0 {
		room, ports = f.perSled, 2*f.perSled+10 // a VMM and, while it migrates in, its target
	}
	lo, hi := portRange(ports)
	s.agent, err = sledagent.New(sledagent.Options{Root: s.root, Capacity: sledagent.Resources{CPUs: uint32(room), MemoryMiB: uint64(room) * 512},
		PortMin: lo, PortMax: hi, VMMBinary: waggleBin, VMMArgs: []string{"server"}, Dial: dial, Bell: bell,
		Backoff: sledagent.Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond}, Log: quiet()})
	require.NoError(t, err)
	s.id = s.agent.SledID()
	s.token, err = httpkit.GenerateToken()
	require.NoError(t, err)
	h, err := agentapi.NewHandler(s.agent, httpkit.HandlerOptions{Log: quiet(), Auth: httpkit.BearerToken(s.token)})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.srv.Close()
		for _, v := range s.agent.List() {
			_ = s.agent.Unregister(context.Background(), v.ID, true)
		}
		_ = s.agent.Close()
	})
	s.client, err = sledapi.NewClientWithResponses("http://"+s.addr+"/v1", sledapi.WithRequestEditorFn(httpkit.BearerAuth(s.token)))
	require.NoError(t, err)
	f.mu.Lock()
	f.sleds = append(f.sleds, s)
	f.mu.Unlock()
	require.NoError(t, bell.Register(ctx, s.id, s.addr, agentapi.Versions, s.agent.Capacity()))
	return s
}

const tickerSpec = `{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"boot":{"image":"ticker","cmdline":"pace_ms=20"},"components":{"com1":{"type":"serial_port","num":"com1"}}}`

// instance stores a new instance, stopped (no VMM).
func (f *fleet) instance(name string) model.Instance {
	f.t.Helper()
	in := model.Instance{ID: uuid.New(), Name: name, SpecVersion: "vmm-server/v1", Spec: []byte(tickerSpec),
		Resources: model.Resources{CPUs: 1, MemoryMiB: 64}, TimeCreated: time.Now().UTC(),
		Runtime: model.InstanceRuntime{State: model.InstanceNoVmm, Gen: 1, TimeUpdated: time.Now().UTC()}}
	require.NoError(f.t, f.store.CreateInstance(context.Background(), in))
	return in
}

// start does what the start saga will: a VMM record on sled s, the
// instance pointed at it, the VMM registered on the sled and run, through
// the sled agent's API.
func (f *fleet) start(in model.Instance, s *sled) uuid.UUID {
	t := f.t
	ctx := context.Background()
	id := uuid.New()
	now := time.Now().UTC()
	require.NoError(t, f.store.CreateVmm(ctx, model.Vmm{ID: id, InstanceID: in.ID, SledID: s.id, Resources: in.Resources,
		TimeCreated: now, Runtime: model.VmmRuntime{State: model.VmmCreating, Gen: 1, TimeUpdated: now}}))
	cur, err := f.store.Instance(ctx, in.ID)
	require.NoError(t, err)
	next := cur.Runtime
	next.State, next.ActiveVmm, next.Failure, next.Gen, next.TimeUpdated = model.InstanceVmm, uuid.NullUUID{UUID: id, Valid: true}, nil, next.Gen+1, now
	res, err := f.store.UpdateInstanceRuntime(ctx, in.ID, next)
	require.NoError(t, err)
	require.Equal(t, model.WriteUpdated, res)

	var specBody map[string]any
	require.NoError(t, json.Unmarshal(in.Spec, &specBody))
	var body sledapi.VmmEnsureRequest
	require.NoError(t, body.FromVmmEnsureFromSpec(sledapi.VmmEnsureFromSpec{
		Instance: sledapi.InstanceProperties{Id: in.ID, Name: in.Name},
		Spec:     sledapi.SpecEnvelope{SpecVersion: in.SpecVersion, Spec: specBody}}))
	reg, err := s.client.VmmRegisterWithResponse(ctx, id, body)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, reg.StatusCode(), string(reg.Body))
	run, err := s.client.VmmStatePutWithResponse(ctx, id, sledapi.VmmStateChangeRequest{Requested: sledapi.VmmStateRequestedRun})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, run.StatusCode(), string(run.Body))
	return id
}

// addrOf is the address of VMM id's server on s.
func (s *sled) addrOf(t testing.TB, id uuid.UUID) string {
	v, err := s.agent.Get(id)
	require.NoError(t, err)
	return v.Addr
}

// vmmState reads a VMM's stored state.
func (f *fleet) vmm(id uuid.UUID) model.Vmm {
	f.t.Helper()
	v, err := f.store.Vmm(context.Background(), id)
	require.NoError(f.t, err)
	return v
}

// waitVmm waits until the stored VMM satisfies ok.
func (f *fleet) waitVmm(id uuid.UUID, what string, ok func(model.Vmm) bool) model.Vmm {
	f.t.Helper()
	var last model.Vmm
	require.Eventuallyf(f.t, func() bool {
		v, err := f.store.Vmm(context.Background(), id)
		if err != nil {
			return false
		}
		last = v
		return ok(v)
	}, 15*time.Second, 5*time.Millisecond, "VMM %s never %s; last stored: %+v", id, what, &last)
	return last
}

func inState(name string) func(model.Vmm) bool {
	return func(v model.Vmm) bool { return v.Runtime.State.Name() == name }
}

// pidOf reads a VMM's pid from its agent's registry on disk.
func (s *sled) pidOf(t testing.TB, id uuid.UUID) int {
	t.Helper()
	pid, err := sledtest.RegistryPid(s.root, id)
	require.NoError(t, err)
	return pid
}
