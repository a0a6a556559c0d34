package vmm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wagglevm/waggle/spec"
)

// Errors of OpenStorageFile, for errors.Is. Their messages say nothing about
// what lies outside the storage root: not whether a file exists there, nor
// its kind or size.
var (
	// ErrStorageEscape: the path leads out of the storage root (through a
	// symbolic link that is absolute, climbs above the root or is a "magic"
	// link of /proc), or through a symbolic link loop.
	ErrStorageEscape = errors.New("path escapes the storage root")
	// ErrNotRegularFile: the path names a directory, FIFO, socket or device.
	ErrNotRegularFile = errors.New("is not a regular file beneath the storage root")
	// ErrNoStorageRoot: the spec has a file backend but the VMM was given no
	// usable storage root.
	ErrNoStorageRoot = errors.New("no storage root")
)

// openat2 is unix.Openat2, replaceable in tests to exercise the fallback
// for kernels without it (before Linux 5.6).
var openat2 = unix.Openat2

// OpenStorageFile opens the file that a spec.FileStorageBackend's path
// names beneath the directory root (an absolute path), read-write or
// read-only. Only a regular file beneath root is opened:
//
//   - the path must pass spec.CheckStoragePath (relative, no "..");
//   - it is resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS),
//     so no symbolic link, absolute or relative, leads out of root; on a
//     kernel without openat2 each component is opened in turn with
//     O_NOFOLLOW, and any symbolic link is refused;
//   - it is opened with O_NONBLOCK (a FIFO cannot block the caller) and
//     O_NOCTTY, checked with fstat to be a regular file, and only then put
//     back into blocking mode.
//
// Errors wrap ErrStorageEscape, ErrNotRegularFile, ErrDiskMissing,
// fs.ErrPermission or ErrNoStorageRoot; they name path, never root. The
// returned file is named by path.
func OpenStorageFile(root, path string, readOnly bool) (*os.File, error) {
	if err := spec.CheckStoragePath(path); err != nil {
		return nil, err
	}
	rootFD, err := openRoot(root)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rootFD)
	flags := unix.O_RDWR
	if readOnly {
		flags = unix.O_RDONLY
	}
	flags |= unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY
	fd, err := openBeneath(rootFD, path, flags)
	if err != nil {
		return nil, storageError(path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%q: stat: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%q %w", path, ErrNotRegularFile)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%q: clear O_NONBLOCK: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openRoot opens the storage root directory as an O_PATH descriptor.
func openRoot(root string) (int, error) {
	if root == "" {
		return -1, fmt.Errorf("%w: the VMM was given no storage root for file backends", ErrNoStorageRoot)
	}
	if !filepath.IsAbs(root) {
		return -1, fmt.Errorf("%w: the storage root is not an absolute path", ErrNoStorageRoot)
	}
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		// The root is the server's own configuration, not the client's:
		// say what is wrong with it, not where it is.
		return -1, fmt.Errorf("%w: the storage root cannot be opened: %w", ErrNoStorageRoot, err)
	}
	return fd, nil
}

// openBeneath opens path beneath the directory rootFD with flags.
func openBeneath(rootFD int, path string, flags int) (int, error) {
	how := &unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 8 {
		fd, err := retryEINTR(func() (int, error) { return openat2(rootFD, path, how) })
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			return openNoFollow(rootFD, path, flags)
		case errors.Is(err, unix.EAGAIN):
			// A rename or mount raced with the lookup; the kernel asks
			// for another try.
			continue
		default:
			return -1, err
		}
	}
	return -1, unix.EAGAIN
}

// openNoFollow opens path beneath rootFD one component at a time, refusing
// every symbolic link: the fallback for kernels without openat2. The path
// has passed spec.CheckStoragePath, so it has no "." or ".." component.
func openNoFollow(rootFD int, path string, flags int) (int, error) {
	segs := strings.Split(path, "/")
	dir := rootFD
	defer func() {
		if dir != rootFD {
			unix.Close(dir)
		}
	}()
	for _, seg := range segs[:len(segs)-1] {
		fd, err := retryEINTR(func() (int, error) {
			return unix.Openat(dir, seg, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		})
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
		case unix.S_IFLNK:
			unix.Close(fd)
			return -1, unix.ELOOP
		default:
			unix.Close(fd)
			return -1, unix.ENOTDIR
		}
		if dir != rootFD {
			unix.Close(dir)
		}
		dir = fd
	}
	// O_NOFOLLOW makes a final symbolic link fail with ELOOP.
	return retryEINTR(func() (int, error) {
		return unix.Openat(dir, segs[len(segs)-1], flags|unix.O_NOFOLLOW, 0)
	})
}

// storageError turns an errno of opening path beneath the root into an
// error that tells nothing of what lies outside it.
func storageError(path string, err error) error {
	switch {
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP):
		// EXDEV: the lookup would have left the root; ELOOP: a magic link,
		// a symbolic link loop, or (in the fallback) any symbolic link.
		return fmt.Errorf("%q: %w", path, ErrStorageEscape)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%w: %q", ErrDiskMissing, path)
	case errors.Is(err, unix.EISDIR), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
		// A directory opened for writing, a socket, a device without a
		// driver.
		return fmt.Errorf("%q %w", path, ErrNotRegularFile)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.EROFS):
		return fmt.Errorf("%q: %w", path, fs.ErrPermission)
	}
	return fmt.Errorf("open %q: %w", path, err)
}

// retryEINTR calls f again while it fails with EINTR.
func retryEINTR(f func() (int, error)) (int, error) {
	for {
		fd, err := f()
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}
