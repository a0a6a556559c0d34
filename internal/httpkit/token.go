package httpkit

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// MinTokenLen is the shortest bearer token a server accepts from a file.
const MinTokenLen = 32

// GenerateToken returns a fresh token: 32 random bytes, base64url without
// padding.
func GenerateToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ReadTokenFile reads a bearer token from path: the file's content with
// surrounding white space trimmed. The file must be a regular file that
// neither group nor others may read or write, and the token must be at
// least MinTokenLen characters of the token68 alphabet (letters, digits,
// "-._~+/", then "=" padding). Errors never show the file's content.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("token file %s: mode %04o lets group or others read or write it; chmod 600 it", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(data) > 4096 {
		return "", fmt.Errorf("token file %s: longer than 4 KiB", path)
	}
	token := strings.TrimSpace(string(data))
	if len(token) < MinTokenLen {
		return "", fmt.Errorf("token file %s: the token has %d characters; want at least %d", path, len(token), MinTokenLen)
	}
	if !isToken68(token) {
		return "", fmt.Errorf("token file %s: the token may hold only letters, digits and -._~+/ (then = padding)", path)
	}
	return token, nil
}

// isToken68 reports whether s is a token68 (RFC 7235), what a bearer
// credential is made of.
func isToken68(s string) bool {
	s = strings.TrimRight(s, "=")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// WriteTokenFile writes token to path, mode 0600, creating its directory
// mode 0700. It replaces the file whole (write and rename), so a reader
// never sees half a token.
func WriteTokenFile(path, token string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("token directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("token directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".token-*")
	if err != nil {
		return fmt.Errorf("write token: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write token: %w", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write token: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write token: %w", err)
	}
	return nil
}

// DefaultTokenPath returns where the server listening at addr (host:port)
// writes the token it generates, and where a client on the same host looks
// for it: $XDG_STATE_HOME/waggle/tokens/<host>_<port>, with
// ~/.local/state for an unset XDG_STATE_HOME. Every local name of the
// host (an empty or unspecified host, 127.0.0.1, ::1, "localhost")
// becomes "localhost", so a client that dials 127.0.0.1:12400 finds the
// token of a server listening on 0.0.0.0:12400 or [::1]:12400; any other
// address (127.0.0.2 too) is named as it is.
func DefaultTokenPath(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("token path for %q: %w", addr, err)
	}
	if port == "" || port == "0" || strings.ContainsAny(port, `/\`) {
		return "", fmt.Errorf("token path for %q: want a port number", addr)
	}
	host = tokenHost(host)
	state := os.Getenv("XDG_STATE_HOME")
	if state == "" || !filepath.IsAbs(state) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("token path: %w", err)
		}
		state = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(state, "waggle", "tokens", host+"_"+port), nil
}

// tokenHost names host in a file name.
func tokenHost(host string) string {
	if host == "" || strings.EqualFold(host, "localhost") {
		return "localhost"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		// Only the usual loopback addresses are "localhost": two servers
		// on 127.0.0.1:P and 127.0.0.2:P are different servers, and must
		// not overwrite each other's token.
		if ip == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || ip == netip.IPv6Loopback() || ip.IsUnspecified() {
			return "localhost"
		}
		return strings.ReplaceAll(ip.String(), ":", "-")
	}
	var b strings.Builder
	for _, c := range strings.ToLower(host) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// IsLoopback reports whether addr, a listener's address, is reachable
// only from this host.
func IsLoopback(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
