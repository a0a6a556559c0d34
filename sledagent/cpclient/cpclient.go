// Package cpclient reaches the control plane for the sled agent through
// the generated client of the control-plane-internal API: the doorbell
// (sledagent.Bell) and the sled's registration.
package cpclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/control-plane-internal/v1"
	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
)

// Client is the control plane as the agent sees it.
type Client struct {
	c *api.ClientWithResponses
}

// New returns a client of the control plane at baseURL (e.g.
// http://10.0.0.1:12200), which sends the token that token returns; it is
// asked at every request, so that a rotated token file is picked up.
func New(baseURL string, token func() (string, error)) (*Client, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	c, err := api.NewClientWithResponses(strings.TrimSuffix(baseURL, "/")+"/v1", api.WithHTTPClient(hc),
		api.WithRequestEditorFn(func(ctx context.Context, req *http.Request) error {
			t, err := token()
			if err != nil {
				return fmt.Errorf("the control plane's token: %w", err)
			}
			return httpkit.BearerAuth(t)(ctx, req)
		}))
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

var _ sledagent.Bell = (*Client)(nil)

// Ring rings the VMM's doorbell: POST /v1/vmms/{id}/changed, no body.
// 404 no_such_vmm is sledagent.ErrBellUnknownVmm.
func (c *Client) Ring(ctx context.Context, vmmID uuid.UUID) error {
	resp, err := c.c.VmmChangedWithResponse(ctx, vmmID)
	if err != nil {
		return fmt.Errorf("ring the doorbell: %w", err)
	}
	switch {
	case resp.StatusCode() == http.StatusAccepted:
		return nil
	case resp.JSON404 != nil && resp.JSON404.ErrorCode == "no_such_vmm":
		return sledagent.ErrBellUnknownVmm
	}
	return fmt.Errorf("ring the doorbell: %w", answered(resp.StatusCode(), resp.Body))
}

// Register registers the sled: its agent's address, API versions and
// capacity.
func (c *Client) Register(ctx context.Context, sledID uuid.UUID, addr string, versions []string, capacity sledagent.Resources) error {
	resp, err := c.c.SledRegisterWithResponse(ctx, sledID, api.SledRegistration{
		Address: addr, ApiVersions: versions,
		Capacity: api.SledCapacity{Cpus: int32(capacity.CPUs), MemoryMib: int64(capacity.MemoryMiB)},
	})
	if err != nil {
		return fmt.Errorf("register the sled: %w", err)
	}
	if resp.StatusCode() != http.StatusNoContent {
		return fmt.Errorf("register the sled: %w", answered(resp.StatusCode(), resp.Body))
	}
	return nil
}

// answered words the control plane's refusal: its status and, when the body
// is its Error, the code and the message (which names the field at fault).
func answered(status int, body []byte) error {
	var e api.Error
	if json.Unmarshal(body, &e) != nil || e.ErrorCode == "" {
		return fmt.Errorf("the control plane answered %d", status)
	}
	return fmt.Errorf("the control plane answered %d %s: %s", status, e.ErrorCode, e.Message)
}
