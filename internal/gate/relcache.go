package gate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ReleaseCacheEnv names the environment variable that, when set, is a
// directory where BuildRelease keeps each release's built waggle, keyed by
// its commit, the Go toolchain's version and the platform: a release's
// source never changes, so the same toolchain builds the same binary. It
// is for runs where building is slow (the gate under nested emulation,
// where the binaries are built on the host first); the gate still checks
// that the commit is in the clone before it takes a cached binary.
const ReleaseCacheEnv = "WAGGLE_GATE_CACHE"

// cachedRelease returns the cached binary of commit ("" if there is none)
// and the path where one would be kept ("" when no cache is set).
func cachedRelease(ctx context.Context, commit string) (bin, key string) {
	dir := os.Getenv(ReleaseCacheEnv)
	if dir == "" {
		return "", ""
	}
	v, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return "", ""
	}
	key = filepath.Join(dir, fmt.Sprintf("%s-%s-%s_%s", commit, strings.TrimSpace(string(v)), runtime.GOOS, runtime.GOARCH), "waggle")
	if fi, err := os.Stat(key); err == nil && fi.Mode().IsRegular() {
		return key, key
	}
	return "", key
}

// keepRelease copies a built binary to the cache path key ("" keeps
// nothing). A cache that cannot be written (a read-only mount) is only
// logged: the build itself succeeded.
func keepRelease(key, bin string) {
	if key == "" {
		return
	}
	tmp := key + ".tmp"
	err := os.MkdirAll(filepath.Dir(key), 0o755)
	if err == nil {
		err = copyFile(bin, tmp)
	}
	if err == nil {
		err = os.Rename(tmp, key)
	}
	if err != nil {
		os.Remove(tmp)
		slog.Warn("gate: could not keep the release's binary in the cache", "path", key, "err", err)
	}
}

// copyFile copies the executable src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}
