package httpkit

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefaultTokenPath(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	local := filepath.Join(state, "waggle", "tokens", "localhost_12400")
	for _, addr := range []string{"127.0.0.1:12400", "localhost:12400", "[::1]:12400", "0.0.0.0:12400", "[::]:12400", ":12400", "LOCALHOST:12400"} {
		p, err := DefaultTokenPath(addr)
		require.NoError(t, err, addr)
		require.Equal(t, local, p, "%s is this host", addr)
	}
	for addr, base := range map[string]string{
		"127.0.0.2:12400":          "127.0.0.2_12400",
		"127.1.2.3:12400":          "127.1.2.3_12400",
		"[::ffff:127.0.0.2]:12400": "127.0.0.2_12400",
		"[::ffff:127.0.0.1]:12400": "localhost_12400",
	} {
		p, err := DefaultTokenPath(addr)
		require.NoError(t, err, addr)
		require.Equal(t, base, filepath.Base(p), "%s has its own token file", addr)
	}
	p, err := DefaultTokenPath("10.1.2.3:80")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(state, "waggle", "tokens", "10.1.2.3_80"), p)
	p, err = DefaultTokenPath("[fd00::1]:80")
	require.NoError(t, err)
	require.Equal(t, "fd00--1_80", filepath.Base(p))
	p, err = DefaultTokenPath("../../etc:80")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(state, "waggle", "tokens"), filepath.Dir(p), "a host name cannot leave the directory")
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:0", "host:", "a:b:c"} {
		_, err := DefaultTokenPath(bad)
		require.Error(t, err, bad)
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", state)
	p, err = DefaultTokenPath("127.0.0.1:1")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(state, ".local", "state", "waggle", "tokens", "localhost_1"), p)
}

func TestWriteAndReadTokenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "tok")
	token, err := GenerateToken()
	require.NoError(t, err)
	require.Len(t, token, 43, "32 bytes in base64url without padding")
	require.NotContains(t, token, "=")
	other, err := GenerateToken()
	require.NoError(t, err)
	require.NotEqual(t, token, other)

	require.NoError(t, WriteTokenFile(path, token))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	got, err := ReadTokenFile(path)
	require.NoError(t, err)
	require.Equal(t, token, got)

	// Rewriting replaces it whole.
	require.NoError(t, WriteTokenFile(path, other))
	got, err = ReadTokenFile(path)
	require.NoError(t, err)
	require.Equal(t, other, got)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left")
}

func TestReadTokenFileRefuses(t *testing.T) {
	dir := t.TempDir()
	good := strings.Repeat("a", MinTokenLen)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	got, err := ReadTokenFile(write("trimmed", "  \n"+good+"\r\n\n", 0o600))
	require.NoError(t, err)
	require.Equal(t, good, got)
	got, err = ReadTokenFile(write("padded", good+"==", 0o400))
	require.NoError(t, err)
	require.Equal(t, good+"==", got)

	secret := strings.Repeat("s", 40)
	for _, c := range []struct {
		name, content string
		mode          os.FileMode
		msg           string
	}{
		{"group-readable", secret, 0o640, "chmod 600"},
		{"world-readable", secret, 0o604, "chmod 600"},
		{"group-writable", secret, 0o620, "chmod 600"},
		{"short", strings.Repeat("s", MinTokenLen-1), 0o600, "at least 32"},
		{"empty", "\n", 0o600, "at least 32"},
		{"inner space", strings.Repeat("s", 20) + " " + strings.Repeat("s", 20), 0o600, "only letters"},
		{"control", strings.Repeat("s", 40) + "\x00", 0o600, "only letters"},
		{"huge", strings.Repeat("s", 5000), 0o600, "longer than 4 KiB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadTokenFile(write(c.name, c.content, c.mode))
			require.ErrorContains(t, err, c.msg)
			require.NotContains(t, err.Error(), "ssssssss", "the file's content is never shown")
		})
	}
	_, err = ReadTokenFile(dir)
	require.ErrorContains(t, err, "not a regular file")
	_, err = ReadTokenFile(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1": true, "127.8.9.1:1": true, "[::1]:1": true, "[::ffff:127.0.0.1]:1": true,
		"0.0.0.0:1": false, "[::]:1": false, "10.0.0.1:1": false, "[fd00::1]:1": false,
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		require.NoError(t, err)
		require.Equal(t, want, IsLoopback(a), addr)
	}
}
