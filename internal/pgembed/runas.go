package pgembed

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// runAs is the unprivileged account the server programs run as when this
// process is root: PostgreSQL refuses to run as root.
type runAs struct {
	name     string
	uid, gid uint32
}

// unprivilegedNames are the accounts tried, in order, when running as root:
// the one Debian's postgresql package creates, then nobody.
var unprivilegedNames = []string{"postgres", "nobody"}

// pickRunAs returns nil when this process is not root (the programs run as
// this process's user), else the first account of unprivilegedNames that
// exists and is not root.
func pickRunAs() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range unprivilegedNames {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &runAs{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root, and PostgreSQL refuses root: none of the accounts %v exists to run it as", unprivilegedNames)
}

// sysProcAttr returns the attributes that run a program as r (nil for this
// process's own user). Supplementary groups are dropped.
func (r *runAs) sysProcAttr() *syscall.SysProcAttr {
	if r == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: r.uid, Gid: r.gid}}
}

// chownTree gives every file under dir to r (nothing when r is nil).
// Symbolic links are changed themselves, never followed.
func (r *runAs) chownTree(dir string) error {
	if r == nil {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(r.uid), int(r.gid))
	})
}

// canReach checks that r may walk down to dir: every ancestor of dir must
// grant r search (x) permission, as its owner, through its group, or to
// others. A directory of 0700 owned by root (t.TempDir's, os.MkdirTemp's)
// on the way is the usual culprit.
func (r *runAs) canReach(dir string) error {
	if r == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if ok {
			mode := st.Mode().Perm()
			var allowed bool
			switch {
			case sys.Uid == r.uid:
				allowed = mode&0o100 != 0
			case sys.Gid == r.gid:
				allowed = mode&0o010 != 0
			default:
				allowed = mode&0o001 != 0
			}
			if !allowed {
				return fmt.Errorf("PostgreSQL runs as user %s (this process is root), and %s (mode %04o, owner uid %d) does not let it reach %s: make it searchable (chmod o+x) or choose another directory",
					r.name, p, mode, sys.Uid, dir)
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
