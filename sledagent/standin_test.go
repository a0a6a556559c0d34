package sledagent_test

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	cpi "github.com/wagglevm/waggle/gen/control-plane-internal/v1"
	sa "github.com/wagglevm/waggle/gen/sled-agent/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent/cpclient"
)

// controlPlane is a control plane stand-in: the control-plane-internal v1
// contract (generated server, the skeleton's validation and bearer auth)
// on a fixed address that can go down and come back. At each ring it
// answers 202 at once and then, apart from the request, pulls the VMM's
// state from the sled agent through the sled-agent v1 client.
type controlPlane struct {
	t     testing.TB
	addr  string
	token string
	agent *sa.ClientWithResponses // set to pull state back

	mu      sync.Mutex
	srv     *http.Server
	rings   map[uuid.UUID]int
	pulled  map[uuid.UUID]int64 // the newest generation pulled
	sleds   map[uuid.UUID]cpi.SledRegistration
	arrived chan ringArrival
}

type ringArrival struct {
	id  uuid.UUID
	at  time.Time
	gen int64 // the generation pulled back (0 when not pulling)
	got time.Time
}

func newControlPlane(t testing.TB) *controlPlane {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	token, err := httpkit.GenerateToken()
	require.NoError(t, err)
	cp := &controlPlane{t: t, addr: addr, token: token, rings: map[uuid.UUID]int{}, pulled: map[uuid.UUID]int64{},
		sleds: map[uuid.UUID]cpi.SledRegistration{}, arrived: make(chan ringArrival, 100000)}
	t.Cleanup(cp.down)
	return cp
}

func (cp *controlPlane) url() string { return "http://" + cp.addr }

// bell returns the agent's doorbell client for this stand-in.
func (cp *controlPlane) bell() *cpclient.Client {
	c, err := cpclient.New(cp.url(), func() (string, error) { return cp.token, nil })
	require.NoError(cp.t, err)
	return c
}

// up starts serving (again) on the stand-in's address.
func (cp *controlPlane) up() {
	doc, err := cpi.GetSwagger()
	require.NoError(cp.t, err)
	validate, err := httpkit.NewValidator(doc, "/v1")
	require.NoError(cp.t, err)
	strict := cpi.NewStrictHandler(cp, nil)
	r := chi.NewRouter()
	r.Use(validate)
	h, err := httpkit.NewHandler(httpkit.HandlerOptions{Auth: httpkit.BearerToken(cp.token), Log: quietLog()},
		httpkit.Version{Prefix: "/v1", Handler: cpi.HandlerFromMux(strict, r)})
	require.NoError(cp.t, err)
	var ln net.Listener
	for range 100 { // the port was just closed; it may linger briefly
		if ln, err = net.Listen("tcp", cp.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(cp.t, err)
	srv := &http.Server{Handler: h}
	cp.mu.Lock()
	cp.srv = srv
	cp.mu.Unlock()
	go srv.Serve(ln)
}

// down stops serving: connections are refused.
func (cp *controlPlane) down() {
	cp.mu.Lock()
	srv := cp.srv
	cp.srv = nil
	cp.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (cp *controlPlane) SledRegister(ctx context.Context, req cpi.SledRegisterRequestObject) (cpi.SledRegisterResponseObject, error) {
	cp.mu.Lock()
	cp.sleds[req.SledId] = *req.Body
	cp.mu.Unlock()
	return cpi.SledRegister204Response{}, nil
}

func (cp *controlPlane) VmmChanged(ctx context.Context, req cpi.VmmChangedRequestObject) (cpi.VmmChangedResponseObject, error) {
	now := time.Now()
	cp.mu.Lock()
	cp.rings[req.VmmId]++
	agent := cp.agent
	cp.mu.Unlock()
	if agent == nil {
		cp.arrived <- ringArrival{id: req.VmmId, at: now}
		return cpi.VmmChanged202Response{}, nil
	}
	go func() { // never inside the ring's request
		resp, err := agent.VmmStateGetWithResponse(context.Background(), req.VmmId)
		a := ringArrival{id: req.VmmId, at: now, got: time.Now()}
		if err == nil && resp.JSON200 != nil {
			a.gen = resp.JSON200.Gen
			cp.mu.Lock()
			cp.pulled[req.VmmId] = max(cp.pulled[req.VmmId], a.gen)
			cp.mu.Unlock()
		}
		cp.arrived <- a
	}()
	return cpi.VmmChanged202Response{}, nil
}

func (cp *controlPlane) ringsOf(id uuid.UUID) int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.rings[id]
}

func (cp *controlPlane) pulledGen(id uuid.UUID) int64 {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.pulled[id]
}

// agentClient is a sled-agent v1 client of the agent at url.
func agentClient(t testing.TB, url, token string) *sa.ClientWithResponses {
	c, err := sa.NewClientWithResponses(url+"/v1", sa.WithRequestEditorFn(httpkit.BearerAuth(token)))
	require.NoError(t, err)
	return c
}
