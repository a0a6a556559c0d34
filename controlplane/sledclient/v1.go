package sledclient

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
)

// v1 is a sled agent reached through version 1 of the sled-agent API.
type v1 struct {
	c   conn
	api *api.Client
}

var _ controlplane.SledClient = (*v1)(nil)

func newV1(c conn) (controlplane.SledClient, error) {
	cl, err := api.NewClient(c.baseURL("v1"), api.WithHTTPClient(c.hc))
	if err != nil {
		return nil, err
	}
	return &v1{c: c, api: cl}, nil
}

// Ping reads the agent's inventory (GET /v1/inventory), and checks that
// the agent that answers is the sled's.
func (s *v1) Ping(ctx context.Context) error {
	cl, a, err := s.c.do(ctx, "ping sled "+s.c.sled.String(), func(ctx context.Context, e editor) (*http.Response, error) {
		return s.api.InventoryGet(ctx, e)
	})
	if err != nil {
		return err
	}
	if a.status != http.StatusOK {
		return cl.failed(a)
	}
	var inv api.Inventory
	if err := cl.decode(a, &inv); err != nil {
		return err
	}
	if inv.SledId != s.c.sled {
		return cl.bad("is sled %s, not %s (another agent took the address?)", inv.SledId, s.c.sled)
	}
	return nil
}

// VmmState reads a VMM (GET /v1/vmms/{id}): its server's address and its
// state, converted to the domain's.
func (s *v1) VmmState(ctx context.Context, id uuid.UUID) (string, model.SledVmmState, error) {
	cl, a, err := s.c.do(ctx, fmt.Sprintf("read VMM %s", id), func(ctx context.Context, e editor) (*http.Response, error) {
		return s.api.VmmGet(ctx, id, e)
	})
	if err != nil {
		return "", model.SledVmmState{}, err
	}
	switch {
	case a.status == http.StatusNotFound && refusal(a).ErrorCode == "no_such_vmm":
		return "", model.SledVmmState{}, cl.gone(id)
	case a.status != http.StatusOK:
		return "", model.SledVmmState{}, cl.failed(a)
	}
	var v api.Vmm
	if err := cl.decode(a, &v); err != nil {
		return "", model.SledVmmState{}, err
	}
	addr, st, err := vmmFromV1(id, v)
	if err != nil {
		return "", model.SledVmmState{}, cl.bad("answered VMM %s: %v", id, err)
	}
	return addr, st, nil
}

// Unregister tells the agent to forget a VMM the control plane holds
// terminal (DELETE /v1/vmms/{id}?force=true: one the control plane failed
// while its sled was silent must not run on); one it does not know is no
// error.
func (s *v1) Unregister(ctx context.Context, id uuid.UUID) error {
	force := true
	cl, a, err := s.c.do(ctx, fmt.Sprintf("unregister VMM %s", id), func(ctx context.Context, e editor) (*http.Response, error) {
		return s.api.VmmUnregister(ctx, id, &api.VmmUnregisterParams{Force: &force}, e)
	})
	if err != nil {
		return err
	}
	switch {
	case a.status == http.StatusNoContent:
		return nil
	case a.status == http.StatusNotFound && refusal(a).ErrorCode == "no_such_vmm":
		return nil
	}
	return cl.failed(a)
}
