package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wagglevm/waggle/internal/httpkit"
)

// defaultPort is the port of a -server given as a bare host.
const defaultPort = "12400"

// endpoint is a VMM server as the CLI reaches it.
type endpoint struct {
	scheme string // "http" or "https"
	host   string // host:port, the port always present
	api    string // the API version the address's path names ("v1" for http://h:p/v1), or ""
}

// parseServer reads a server address as users write it: host:port,
// http://host:port (https too), or a bare host, which means port 12400.
// IPv6 addresses are written in brackets, with or without a port.
func parseServer(s string) (endpoint, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return endpoint{}, errors.New("empty server address")
	}
	ep := endpoint{scheme: "http"}
	if i := strings.Index(s, "://"); i >= 0 {
		u, err := url.Parse(s)
		if err != nil {
			return endpoint{}, fmt.Errorf("server address %q: %w", s, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return endpoint{}, fmt.Errorf("server address %q: want http:// or https://, or host:port", s)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return endpoint{}, fmt.Errorf("server address %q: want only a scheme, a host and a port", s)
		}
		p := strings.TrimSuffix(u.Path, "/")
		if p != "" && !knownPrefix(p) {
			return endpoint{}, fmt.Errorf("server address %q: the CLI adds the API path itself; give only the host and port", s)
		}
		ep.api = strings.TrimPrefix(p, "/")
		ep.scheme, s = u.Scheme, u.Host
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a bare host, or a bracketed IPv6 address.
		if strings.HasPrefix(s, "[") != strings.HasSuffix(s, "]") {
			return endpoint{}, fmt.Errorf("server address %q: unbalanced brackets", s)
		}
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), defaultPort
		if strings.ContainsAny(host, "[]/ ") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
			return endpoint{}, fmt.Errorf("server address %q: want host:port, http://host:port or a host", s)
		}
	}
	if host == "" {
		return endpoint{}, fmt.Errorf("server address %q: no host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return endpoint{}, fmt.Errorf("server address %q: port %q is not a number from 1 to 65535", s, port)
	}
	ep.host = net.JoinHostPort(host, port)
	return ep, nil
}

// knownPrefix says whether path is an API version's path ("/v2"), which a
// -server URL may carry: the CLI then speaks that version, as -api would
// have it (-api, when given, wins).
func knownPrefix(path string) bool {
	for _, v := range apiVersions {
		if path == "/"+v.name {
			return true
		}
	}
	return false
}

// String is the address as messages show it: host:port.
func (e endpoint) String() string { return e.host }

// baseURL is the server's URL, without an API version's path.
func (e endpoint) baseURL() string { return e.scheme + "://" + e.host }

// wsURL is the WebSocket URL of a path on the server.
func (e endpoint) wsURL(path string) string {
	scheme := "ws"
	if e.scheme == "https" {
		scheme = "wss"
	}
	return scheme + "://" + e.host + path
}

// sameServer says whether two endpoints reach the same server: the same
// port and the same host, or hosts that resolve to a common address
// (localhost and 127.0.0.1). It asks the resolver, never the servers.
func sameServer(ctx context.Context, a, b endpoint) bool {
	ah, ap, _ := net.SplitHostPort(a.host)
	bh, bp, _ := net.SplitHostPort(b.host)
	if ap != bp {
		return false
	}
	if strings.EqualFold(ah, bh) {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	as, bs := resolve(ctx, ah), resolve(ctx, bh)
	for _, x := range as {
		if slices.ContainsFunc(bs, x.Equal) {
			return true
		}
	}
	return false
}

// resolve returns host's addresses (one, when host is an address itself),
// or none when it cannot be resolved.
func resolve(ctx context.Context, host string) []net.IP {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips
}

// readToken returns the bearer token in the file at path. A path of ""
// means no token; so does a default path (explicit false) where no file
// exists, for a server that was given its token another way.
func readToken(path string, explicit bool) (string, error) {
	if path == "" {
		return "", nil
	}
	tok, err := httpkit.ReadTokenFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("the server's token: %w", err)
	}
	return tok, nil
}

// explainNetErr turns a failure to reach a server into a sentence that says
// what to do; other errors come back as they are.
func explainNetErr(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	addr := ue.URL
	if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
		addr = u.Host
	}
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no waggle server at %s (start one with `waggle server`, or point -server elsewhere)", addr)
	case errors.As(err, &dns):
		return fmt.Errorf("cannot find the host of the waggle server %s: %s", addr, dns.Err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("cannot reach the waggle server at %s: no route to it", addr)
	case ue.Timeout():
		return fmt.Errorf("the waggle server at %s did not answer in time", addr)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("the waggle server at %s closed the connection (is it a waggle server? is it shutting down?)", addr)
	}
	return err
}

// serverToken returns the bearer token for the server at ep: the one in
// file when given, else the one the server wrote where the CLI finds it
// (none when there is no such file).
func serverToken(ep endpoint, file string) (string, error) {
	if file != "" {
		return readToken(file, true)
	}
	return readToken(defaultTokenPath(ep), false)
}

// defaultTokenPath is where a server listening at ep writes the token it
// makes, when it was given none; "" when there is no such place.
func defaultTokenPath(ep endpoint) string {
	p, err := httpkit.DefaultTokenPath(ep.host)
	if err != nil {
		return ""
	}
	return p
}
