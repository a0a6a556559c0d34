package server

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseMigrationPeers(t *testing.T) {
	got, err := ParseMigrationPeers(" 10.1.2.3/16, 192.168.7.9 ,fd00::/8,::ffff:10.0.0.1")
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.7.9/32"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("10.0.0.1/32"),
	}, got)
	for _, bad := range []string{"", " , ", "10.0.0.0/33", "example.com", "10.0.0.0/8,nope"} {
		_, err := ParseMigrationPeers(bad)
		require.Error(t, err, "%q", bad)
	}
}

func TestDefaultMigrationPeersHoldLoopback(t *testing.T) {
	c := newMigrationConfig(nil)
	require.True(t, c.mayDial(netip.MustParseAddr("127.0.0.1")))
	require.True(t, c.mayDial(netip.MustParseAddr("127.3.2.1")))
	require.True(t, c.mayDial(netip.MustParseAddr("::1")))
	require.True(t, c.mayDial(netip.MustParseAddr("::ffff:127.0.0.1")))
	require.False(t, c.mayDial(netip.MustParseAddr("0.0.0.0")))
	require.False(t, c.mayDial(netip.MustParseAddr("::")))
}

// TestResolveSource: a source address is refused unless it is (or names)
// an address the server may dial; the answer is that address, so the
// stream dials what was checked.
func TestResolveSource(t *testing.T) {
	c := newMigrationConfig([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.7.0.0/16")})
	ok := map[string]string{
		"127.0.0.1:12400":          "127.0.0.1:12400",
		"10.7.200.1:1":             "10.7.200.1:1",
		"[::ffff:10.7.0.9]:80":     "10.7.0.9:80",
		"localhost:65535":          "127.0.0.1:65535",
		"[::ffff:127.0.0.1]:12400": "127.0.0.1:12400",
	}
	for in, want := range ok {
		got, err := c.resolveSource(context.Background(), in)
		if in == "localhost:65535" && err != nil {
			t.Logf("localhost does not resolve here: %v", err)
			continue
		}
		require.NoError(t, err, in)
		if in == "localhost:65535" && got.Addr().Is6() {
			continue // localhost may be ::1 only, which the peers do not hold
		}
		require.Equal(t, want, got.String(), in)
	}
	refused := []string{"10.8.0.1:80", "192.168.1.1:80", "[::1]:80", "0.0.0.0:80", "[::]:80", "224.0.0.1:80",
		"255.255.255.255:80", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1", "127.0.0.1:x", ":80", "a b:80",
		"exa$mple.com:80", "-bad-.com:80"}
	for _, in := range refused {
		_, err := c.resolveSource(context.Background(), in)
		var fe *FieldError
		require.ErrorAs(t, err, &fe, in)
		require.Equal(t, "migrate.src_addr", fe.Field)
	}
	all := newMigrationConfig([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")})
	for _, in := range []string{"0.0.0.0:80", "[::]:80", "224.0.0.1:80", "255.255.255.255:80"} {
		_, err := all.resolveSource(context.Background(), in)
		require.Error(t, err, "%s is never a source, whatever the peers", in)
	}
}
