// Package sledclient is the control plane's client of its sled agents: it
// implements controlplane.SledClient over the generated clients of the
// sled-agent API's versions, in the newest version that both the agent
// (as it registered) and this package speak, and converts the agent's wire
// types to the control plane's domain types at this boundary.
//
// Every call is bounded in time, carries the agent's bearer token (never
// logged, never in an error), and tells an agent that did not answer
// (controlplane.ErrSledUnreachable) from one that answered something this
// package cannot accept (ErrBadAnswer) and from a VMM the agent does not
// know (controlplane.ErrVmmGone).
package sledclient

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/wagglevm/waggle/controlplane"
	"github.com/wagglevm/waggle/controlplane/model"
)

// DefaultTimeout bounds each call to an agent, from its request to the end
// of its answer, unless WithTimeout says otherwise; a registration is bounded
// by its caller's context alone, since it waits for a VMM server to start.
const DefaultTimeout = 10 * time.Second

// maxAnswer bounds an agent's answer body; a larger one is a bad answer.
const maxAnswer = 1 << 20

// ErrBadAnswer wraps the error of a call that the agent answered with
// something outside its contract: a body that is not JSON, a state this
// control plane does not know, a failed state without its reason, an
// unexpected status (errors.Is).
var ErrBadAnswer = errors.New("the sled agent's answer is not one the control plane accepts")

// TokenFunc returns the bearer token of the sled agent at addr (its
// host:port). It is asked at every call, so that a rotated token is picked
// up. Its error must not hold the token.
type TokenFunc func(addr string) (string, error)

// version is one version of the sled-agent API that this package speaks.
type version struct {
	name string // the path prefix without its slash, as sleds register it
	dial func(c conn) (controlplane.SledClient, error)
}

// supported lists the sled-agent API versions this package speaks, newest
// first. A new version is a line here and a file beside v1.go.
var supported = []version{
	{"v1", newV1},
}

// Versions lists the sled-agent API versions this package speaks, newest
// first.
func Versions() []string {
	out := make([]string, len(supported))
	for i, v := range supported {
		out[i] = v.name
	}
	return out
}

// Negotiate returns the newest version that both registered (a sled's
// API versions, in any order) and this package speak, or an error naming
// both lists when they share none.
func Negotiate(registered []string) (string, error) {
	v, err := pick(supported, registered)
	if err != nil {
		return "", err
	}
	return v.name, nil
}

func pick(table []version, registered []string) (version, error) {
	for _, v := range table {
		if slices.Contains(registered, v.name) {
			return v, nil
		}
	}
	names := make([]string, len(table))
	for i, v := range table {
		names[i] = v.name
	}
	return version{}, fmt.Errorf("the sled agent speaks sled-agent API versions %q, the control plane %q: none in common", registered, names)
}

// Option changes what New builds.
type Option func(*options)

type options struct {
	timeout   time.Duration
	transport http.RoundTripper
}

// WithTimeout bounds each call to an agent (DefaultTimeout when d is not
// positive). The caller's context bounds it too.
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithTransport sends the requests through rt (a clone of
// http.DefaultTransport by default).
func WithTransport(rt http.RoundTripper) Option {
	return func(o *options) {
		if rt != nil {
			o.transport = rt
		}
	}
}

// New returns the dialer of sled agents: given a sled, the client of its
// agent in the newest API version both speak, or an error when they share
// none or the sled's address is not host:port. Its clients share one
// http.Client (and its connections).
func New(token TokenFunc, opts ...Option) controlplane.SledDialer {
	o := options{timeout: DefaultTimeout}
	for _, f := range opts {
		f(&o)
	}
	if o.transport == nil {
		o.transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	hc := &http.Client{
		Transport: o.transport, // no Timeout: each call is bounded by its context (conn.do)
		// An agent never redirects; a redirect is answered as it is, a
		// status this package refuses.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(s model.Sled) (controlplane.SledClient, error) {
		v, err := pick(supported, s.APIVersions)
		if err != nil {
			return nil, fmt.Errorf("dial sled %s: %w", s.ID, err)
		}
		if err := checkAddr(s.Address); err != nil {
			return nil, fmt.Errorf("dial sled %s: its address: %w", s.ID, err)
		}
		if token == nil {
			return nil, fmt.Errorf("dial sled %s: no token source", s.ID)
		}
		c, err := v.dial(conn{sled: s.ID, addr: s.Address, hc: hc, token: token, timeout: o.timeout})
		if err != nil {
			return nil, fmt.Errorf("dial sled %s in sled-agent API %s: %w", s.ID, v.name, err)
		}
		return c, nil
	}
}

// checkAddr says why addr is not a host:port, or nil.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: the port is not from 1 to 65535", addr)
	}
	if u, err := url.Parse("http://" + addr); err != nil || u.Host != addr || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not a URL's host:port", addr)
	}
	return nil
}
