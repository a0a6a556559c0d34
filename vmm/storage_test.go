package vmm

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// storageRoot makes a storage root holding:
//
//	real.img            a regular file of 4 KiB
//	dir/nested.img      a regular file in a subdirectory
//	dir/sub/            an empty directory
//	fifo                a FIFO
//	sock                a listening Unix socket
//	abs-link            -> /etc/passwd (exists outside)
//	abs-missing         -> /nonexistent/file (does not exist outside)
//	up-link             -> ../../../../../../etc/passwd
//	up-missing          -> ../../../../../../nonexistent
//	devnull             -> /dev/null
//	chain-out-1         -> chain-out-2 -> /etc/passwd
//	chain-in-1          -> chain-in-2  -> real.img
//	loop-1              -> loop-2 -> loop-1
//	proc                -> /proc/self/root
//
// and beside it (outside) a file "outside.img" that up-links can reach by
// their spelling.
func storageRoot(t *testing.T) string {
	t.Helper()
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "dir", "sub"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(root, "real.img"), make([]byte, 4096), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(root, "dir", "nested.img"), []byte("nested data"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(parent, "outside.img"), make([]byte, 8192), 0o600))
	require.NoError(t, unix.Mkfifo(filepath.Join(root, "fifo"), 0o600))
	l, err := net.Listen("unix", filepath.Join(root, "sock"))
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	for name, target := range map[string]string{
		"abs-link":    "/etc/passwd",
		"abs-missing": "/nonexistent/file",
		"up-link":     "../../../../../../etc/passwd",
		"up-missing":  "../../../../../../nonexistent",
		"up-outside":  "../outside.img",
		"devnull":     "/dev/null",
		"chain-out-1": "chain-out-2",
		"chain-out-2": "/etc/passwd",
		"chain-in-1":  "chain-in-2",
		"chain-in-2":  "real.img",
		"loop-1":      "loop-2",
		"loop-2":      "loop-1",
		"proc":        "/proc/self/root",
	} {
		require.NoError(t, os.Symlink(target, filepath.Join(root, name)))
	}
	return root
}

// withoutOpenat2 makes OpenStorageFile behave as on a kernel without
// openat2 for the rest of the test.
func withoutOpenat2(t *testing.T) {
	saved := openat2
	openat2 = func(int, string, *unix.OpenHow) (int, error) { return -1, unix.ENOSYS }
	t.Cleanup(func() { openat2 = saved })
}

// openWithin calls OpenStorageFile and fails the test if it does not return
// within a generous bound: opening must never block (a FIFO).
func openWithin(t *testing.T, root, path string, readOnly bool) (*os.File, error) {
	t.Helper()
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := OpenStorageFile(root, path, readOnly)
		done <- result{f, err}
	}()
	select {
	case r := <-done:
		if r.f != nil {
			t.Cleanup(func() { r.f.Close() })
		}
		return r.f, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("opening %q blocked", path)
		return nil, nil
	}
}

func TestOpenStorageFile(t *testing.T) {
	for _, mode := range []string{"openat2", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "fallback" {
				withoutOpenat2(t)
			}
			testOpenStorageFile(t, mode == "fallback")
		})
	}
}

func testOpenStorageFile(t *testing.T, fallback bool) {
	root := storageRoot(t)

	t.Run("read-write", func(t *testing.T) {
		f, err := openWithin(t, root, "real.img", false)
		require.NoError(t, err)
		require.Equal(t, "real.img", f.Name(), "named by its storage path, not the root")
		_, err = f.WriteAt([]byte("hello"), 100)
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(root, "real.img"))
		require.NoError(t, err)
		require.Equal(t, "hello", string(got[100:105]))
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		require.NoError(t, err)
		require.Zero(t, fl&unix.O_NONBLOCK, "O_NONBLOCK is cleared once the file is known to be regular")
		require.Equal(t, unix.O_RDWR, fl&unix.O_ACCMODE)
		fd, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		require.NoError(t, err)
		require.NotZero(t, fd&unix.FD_CLOEXEC)
	})
	t.Run("read-only", func(t *testing.T) {
		f, err := openWithin(t, root, "dir/nested.img", true)
		require.NoError(t, err)
		buf := make([]byte, 11)
		_, err = f.ReadAt(buf, 0)
		require.NoError(t, err)
		require.Equal(t, "nested data", string(buf))
		_, err = f.WriteAt([]byte("x"), 0)
		require.Error(t, err, "a read-only backend cannot be written")
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		require.NoError(t, err)
		require.Equal(t, unix.O_RDONLY, fl&unix.O_ACCMODE)
	})
	t.Run("symlink chain inside the root", func(t *testing.T) {
		f, err := openWithin(t, root, "chain-in-1", true)
		if fallback {
			// Without openat2 no symbolic link is followed at all.
			require.ErrorIs(t, err, ErrStorageEscape)
			return
		}
		require.NoError(t, err)
		st, err := f.Stat()
		require.NoError(t, err)
		require.Equal(t, int64(4096), st.Size())
	})

	// Paths refused by their spelling, before any system call.
	for _, path := range []string{"..", "../outside.img", "dir/../../outside.img", "/etc/passwd", root + "/real.img",
		"/proc/self/root/etc/passwd", "./real.img", "dir//nested.img", ""} {
		t.Run("spelling "+path, func(t *testing.T) {
			for _, ro := range []bool{false, true} {
				f, err := openWithin(t, root, path, ro)
				require.Error(t, err)
				require.Nil(t, f)
				require.False(t, errors.Is(err, ErrDiskMissing), "%v", err)
			}
		})
	}

	// Escapes: each says only that the path escapes, the same for a target
	// that exists outside and one that does not.
	escapes := []string{"abs-link", "abs-missing", "up-link", "up-missing", "up-outside", "devnull",
		"chain-out-1", "loop-1", "proc/etc/passwd", "proc/proc/self/root/etc/passwd"}
	for _, path := range escapes {
		t.Run("escape "+path, func(t *testing.T) {
			for _, ro := range []bool{false, true} {
				f, err := openWithin(t, root, path, ro)
				require.ErrorIs(t, err, ErrStorageEscape)
				require.Nil(t, f)
				require.Equal(t, `"`+path+`": path escapes the storage root`, err.Error())
				requireTellsNothing(t, err, root, path)
			}
		})
	}

	// Not regular files: refused, and a FIFO does not block.
	for _, path := range []string{"fifo", "sock", "dir", "dir/sub"} {
		t.Run("not regular "+path, func(t *testing.T) {
			for _, ro := range []bool{false, true} {
				f, err := openWithin(t, root, path, ro)
				require.ErrorIs(t, err, ErrNotRegularFile, "read-only %v", ro)
				require.Nil(t, f)
				requireTellsNothing(t, err, root, path)
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		for _, path := range []string{"nope.img", "dir/nope.img", "nodir/x.img", "real.img/x"} {
			_, err := openWithin(t, root, path, false)
			require.ErrorIs(t, err, ErrDiskMissing, path)
			requireTellsNothing(t, err, root, path)
		}
	})

	t.Run("device node", func(t *testing.T) {
		dev := filepath.Join(root, "null")
		if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			t.Skipf("cannot make a device node here (%v); the symlink to /dev/null above is an escape", err)
		}
		defer os.Remove(dev)
		for _, ro := range []bool{false, true} {
			_, err := openWithin(t, root, "null", ro)
			require.ErrorIs(t, err, ErrNotRegularFile)
		}
	})

	t.Run("permission", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores file modes")
		}
		p := filepath.Join(root, "locked.img")
		require.NoError(t, os.WriteFile(p, make([]byte, 512), 0o400))
		_, err := openWithin(t, root, "locked.img", false)
		require.ErrorIs(t, err, fs.ErrPermission)
	})
}

// requireTellsNothing checks that an error about path shows neither the
// storage root nor anything of the files outside it that the test's links
// point to (what the client wrote, the quoted path, aside).
func requireTellsNothing(t *testing.T, err error, root, path string) {
	t.Helper()
	msg := strings.Replace(err.Error(), `"`+path+`"`, "", 1)
	require.NotContains(t, msg, filepath.Dir(root))
	for _, leak := range []string{"/etc", "passwd", "8192", "/dev", "nonexistent", "no such file", "outside"} {
		require.NotContains(t, msg, leak)
	}
}

// TestOpenStorageFileMagicLinks uses /proc/self as the root: its entries
// "root", "cwd" and "exe" are magic links, which lead anywhere and are
// never followed.
func TestOpenStorageFileMagicLinks(t *testing.T) {
	if _, err := os.Stat("/proc/self/root"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, mode := range []string{"openat2", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "fallback" {
				withoutOpenat2(t)
			}
			for _, path := range []string{"root/etc/passwd", "cwd/storage_test.go", "exe", "fd/0"} {
				_, err := openWithin(t, "/proc/self", path, true)
				require.ErrorIs(t, err, ErrStorageEscape, path)
			}
		})
	}
}

func TestOpenStorageFileRoot(t *testing.T) {
	_, err := OpenStorageFile("", "real.img", false)
	require.ErrorIs(t, err, ErrNoStorageRoot)
	_, err = OpenStorageFile("relative/root", "real.img", false)
	require.ErrorIs(t, err, ErrNoStorageRoot)
	missing := filepath.Join(t.TempDir(), "no-such-root")
	_, err = OpenStorageFile(missing, "real.img", false)
	require.ErrorIs(t, err, ErrNoStorageRoot)
	require.NotContains(t, err.Error(), missing, "the server's root is not shown to clients")
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = OpenStorageFile(file, "real.img", false)
	require.ErrorIs(t, err, ErrNoStorageRoot)
}
