package vmm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HostCapacity says how much this host can give a VM now: cpus is the
// number of CPUs this process may run on (sched_getaffinity), and
// memAvailableBytes how much memory it can still commit without pushing
// other work out: MemAvailable of /proc/meminfo, lowered to what the
// process's memory cgroup (v2 memory.max, or v1 memory.limit_in_bytes, at
// every level up to the root) still leaves unused. Guest RAM is committed
// as the guest touches it, so a VM asking for more than memAvailableBytes
// can only be backed by swapping or killing something; callers refuse it
// up front.
func HostCapacity() (cpus int, memAvailableBytes uint64, err error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, 0, fmt.Errorf("host capacity: sched_getaffinity: %w", err)
	}
	mem, err := memAvailable(os.DirFS("/"))
	if err != nil {
		return 0, 0, fmt.Errorf("host capacity: %w", err)
	}
	return set.Count(), mem, nil
}

// memAvailable reads the memory available to this process from fsys, a
// view of the root file system.
func memAvailable(fsys fs.FS) (uint64, error) {
	data, err := fs.ReadFile(fsys, "proc/meminfo")
	if err != nil {
		return 0, err
	}
	avail, err := parseMemAvailable(data)
	if err != nil {
		return 0, err
	}
	if left, ok := cgroupMemoryLeft(fsys); ok {
		avail = min(avail, left)
	}
	return avail, nil
}

// parseMemAvailable returns MemAvailable of a /proc/meminfo, in bytes.
func parseMemAvailable(meminfo []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc/meminfo: MemAvailable line %q is not '<n> kB'", sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || kb > 1<<54 {
			return 0, fmt.Errorf("/proc/meminfo: MemAvailable %q is not a number of kB", f[0])
		}
		return kb << 10, nil
	}
	return 0, errors.New("/proc/meminfo has no MemAvailable (Linux 3.14 or later is needed)")
}

// cgroupMemoryLeft returns how much memory the memory cgroups of this
// process still allow it (the smallest limit minus usage, over the
// process's cgroup and its ancestors), and false when no limit is known.
// Unreadable files are taken as no limit: this narrows MemAvailable, it is
// never the only check.
func cgroupMemoryLeft(fsys fs.FS) (uint64, bool) {
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	var left uint64
	found := false
	take := func(limit, usage uint64) {
		l := uint64(0)
		if limit > usage {
			l = limit - usage
		}
		if !found || l < left {
			left, found = l, true
		}
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			// cgroup v2: memory.max is "max" or bytes.
			walkCgroup(fsys, "sys/fs/cgroup", parts[2], "memory.max", "memory.current", take)
		case hasController(parts[1], "memory"):
			// cgroup v1: an unlimited group has a huge limit, which
			// MemAvailable then undercuts.
			walkCgroup(fsys, "sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes", "memory.usage_in_bytes", take)
		}
	}
	return left, found
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// walkCgroup calls take with the limit and usage of the cgroup at group
// beneath mount and of each of its ancestors that has both files and a
// numeric limit below unlimitedBytes. The usage of a group without such a
// limit is not read: it could not narrow anything, and an ensure waits for
// each file read here.
func walkCgroup(fsys fs.FS, mount, group, limitFile, usageFile string, take func(limit, usage uint64)) {
	dir := path.Clean("/" + group)
	for {
		base := mount + strings.TrimSuffix(dir, "/")
		if limit, ok := readCgroupNumber(fsys, base+"/"+limitFile); ok && limit < unlimitedBytes {
			if usage, ok := readCgroupNumber(fsys, base+"/"+usageFile); ok {
				take(limit, usage)
			}
		}
		if dir == "/" {
			return
		}
		dir = path.Dir(dir)
	}
}

// unlimitedBytes is where a cgroup memory limit means "none": cgroup v1
// shows an unlimited group's limit as the largest page count in bytes,
// 2^63 less a page, and no host has 4 EiB.
const unlimitedBytes = 1 << 62

// readCgroupNumber reads a file holding one decimal number; "max" and
// anything else is no number.
func readCgroupNumber(fsys fs.FS, name string) (uint64, bool) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	return n, err == nil
}
