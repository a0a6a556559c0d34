package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultMigrationPeers are the networks a migration target dials unless
// told otherwise: loopback, and the network of each of the host's own
// interface addresses.
func DefaultMigrationPeers() []netip.Prefix {
	peers := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return peers
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ones, _ := ipn.Mask.Size()
		ip = ip.Unmap()
		if ip.Is4() && ones > 32 {
			ones -= 96
		}
		if p, err := ip.Prefix(ones); err == nil && !containsPrefix(peers, p) {
			peers = append(peers, p)
		}
	}
	return peers
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// ParseMigrationPeers parses a comma-separated list of networks (CIDR) or
// single addresses, as `--migration-peers` takes it. An empty list is an
// error: a server that may dial no one should not say so by accident.
func ParseMigrationPeers(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("migration peers: %q is not a network in CIDR form", f)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("migration peers: %q is neither a network in CIDR form nor an address", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("migration peers: the list is empty")
	}
	return out, nil
}

// mayDial reports whether a target may dial a: a unicast address inside
// one of the peers.
func (c *migrationConfig) mayDial(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	for _, p := range c.peers {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// resolveSource turns a target's src_addr into the one address it will
// dial: a literal address, or the first address of a host name that the
// server may dial, looked up once (the stream then dials that address, so
// a second lookup cannot point it elsewhere). A refusal is a *FieldError
// on migrate.src_addr.
func (c *migrationConfig) resolveSource(ctx context.Context, addr string) (netip.AddrPort, error) {
	bad := func(format string, args ...any) (netip.AddrPort, error) {
		return netip.AddrPort{}, &FieldError{"migrate.src_addr", fmt.Sprintf(format, args...)}
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return bad("want host:port")
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return bad("the port is not a number from 1 to 65535")
	}
	var candidates []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		candidates = []netip.Addr{a}
	} else {
		if !validHostName(host) {
			return bad("the host is neither an IP address nor a host name")
		}
		ctx, cancel := context.WithTimeout(ctx, ResolveTimeout)
		defer cancel()
		if candidates, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
			return bad("cannot resolve the host name")
		}
	}
	for _, a := range candidates {
		if c.mayDial(a) {
			return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
		}
	}
	return bad("not among the peers this server may dial (its --migration-peers; by default loopback and its own networks)")
}

// validHostName reports whether s is a DNS name: labels of letters, digits
// and hyphens.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
