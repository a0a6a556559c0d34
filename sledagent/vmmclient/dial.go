// Package vmmclient drives VMM servers for the sled agent: it finds the
// newest API version a server speaks and adapts that version's generated
// client to the agent's sledagent.VMMClient, converting between the wire
// types and the agent's domain types. A new VMM server API version adds a
// file here and a line in the versions table; the agent does not change.
package vmmclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/wagglevm/waggle/internal/httpkit"
	"github.com/wagglevm/waggle/sledagent"
)

// version is one VMM server API version the agent can drive.
type version struct {
	// prefix is the version's mount path, e.g. "/v1".
	prefix string
	// probe is a GET path (after prefix) that every server of the version
	// serves: 200, or an Error whose code is not "not_found".
	probe string
	// client adapts the version's generated client.
	client func(base string, hc *http.Client, token string) (sledagent.VMMClient, error)
}

// versions lists the versions the agent drives, newest first.
var versions = []version{
	{prefix: "/v2", probe: "/instance", client: newV2},
	{prefix: "/v1", probe: "/instance", client: newV1},
}

// New returns a Dialer whose clients use hc (nil: a client of its own with
// keep-alive connections, and no overall timeout: the state monitor
// long-polls).
func New(hc *http.Client) sledagent.Dialer {
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	return func(ctx context.Context, addr, token string) (sledagent.VMMClient, error) {
		return dial(ctx, hc, addr, token)
	}
}

// dial finds the newest version the server at addr speaks.
func dial(ctx context.Context, hc *http.Client, addr, token string) (sledagent.VMMClient, error) {
	base := "http://" + addr
	for _, v := range versions {
		ok, err := speaks(ctx, hc, base+v.prefix+v.probe, token)
		if err != nil {
			return nil, err
		}
		if ok {
			return v.client(base+v.prefix, hc, token)
		}
	}
	return nil, &sledagent.RefusedError{Status: http.StatusBadGateway, Code: "vmm_unavailable",
		Message: "the VMM server speaks no API version this agent drives"}
}

// speaks probes one version: true when the server serves the path (an
// answer, or an error other than "no such path"); an error when it does
// not answer or refuses the token.
func speaks(ctx context.Context, hc *http.Client, url, token string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	req.Header = httpkit.BearerHeader(token)
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("probe %s: %v: %w", url, err, sledagent.ErrVMMUnavailable)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return true, nil
	}
	e := decodeError(resp.StatusCode, body)
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return false, fmt.Errorf("probe %s: %w", url, sledagent.ErrTokenRefused)
	case resp.StatusCode == http.StatusNotFound && e.Code == httpkit.CodeNotFound:
		return false, nil
	case resp.StatusCode >= 500:
		return false, fmt.Errorf("probe %s: %d %s: %w", url, resp.StatusCode, e.Message, sledagent.ErrVMMUnavailable)
	}
	return true, nil
}

// decodeError reads an Error body; a body that is not one keeps the
// status as its message.
func decodeError(status int, body []byte) *sledagent.RefusedError {
	var e httpkit.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil || e.ErrorCode == "" {
		return &sledagent.RefusedError{Status: status, Code: "vmm_unavailable", Message: http.StatusText(status)}
	}
	return &sledagent.RefusedError{Status: status, Code: e.ErrorCode, Message: e.Message}
}

// answer turns a generated response's status and body into nil (2xx), a
// *RefusedError (4xx) or ErrVMMUnavailable (anything else).
func answer(status int, body []byte, what string) error {
	switch {
	case status >= 200 && status < 300:
		return nil
	case status >= 400 && status < 500:
		return decodeError(status, body)
	}
	e := decodeError(status, body)
	return fmt.Errorf("%s: the VMM server answered %d %s: %w", what, status, e.Message, sledagent.ErrVMMUnavailable)
}

// transport wraps a failed request as ErrVMMUnavailable.
func transport(what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%s: %v: %w", what, err, sledagent.ErrVMMUnavailable)
}

// dialConsole attaches to the serial console WebSocket of the VMM server
// version at base (http://host:port/v<N>): the same in every version.
func dialConsole(ctx context.Context, hc *http.Client, base, token string) (io.ReadWriteCloser, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + "/instance/serial"
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: httpkit.BearerHeader(token)})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			}
			return nil, answer(resp.StatusCode, body, "console")
		}
		return nil, transport("console", err)
	}
	c.SetReadLimit(4 << 20)
	// The connection outlives the request that opened it: it ends when
	// either side closes it.
	return websocket.NetConn(context.Background(), c, websocket.MessageBinary), nil
}
