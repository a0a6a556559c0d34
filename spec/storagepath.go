package spec

import (
	"fmt"
	"strings"
)

// MaxStoragePathLen bounds FileStorageBackend.Path, in bytes: the longest
// path Linux opens (PATH_MAX, 4096, counts the terminating NUL).
const MaxStoragePathLen = 4095

// MaxStorageSegmentLen bounds each '/'-separated segment of a
// FileStorageBackend.Path, in bytes: the longest file name Linux accepts
// (NAME_MAX).
const MaxStorageSegmentLen = 255

// StoragePathPattern is the regular expression a FileStorageBackend.Path
// matches (besides being at most MaxStoragePathLen bytes long), as the
// contracts write it. CheckStoragePath checks the same rule.
const StoragePathPattern = `^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,254})*$`

// CheckStoragePath checks that p names a file beneath a storage root: one
// or more segments of letters, digits, '.', '_' and '-', none starting with
// '.' (so none is "." or ".."), none longer than MaxStorageSegmentLen,
// separated by single '/', with no leading or trailing '/'. Such a path cannot leave the root by its spelling; the VMM
// also refuses symbolic links that lead out of it. The error says which
// part of the rule p breaks, quoting at most the start of p.
func CheckStoragePath(p string) error {
	if p == "" {
		return fmt.Errorf("path is empty")
	}
	if len(p) > MaxStoragePathLen {
		return fmt.Errorf("path %.40q... is %d bytes long, at most %d", p, len(p), MaxStoragePathLen)
	}
	const rule = "want a path beneath the storage root: segments of [A-Za-z0-9._-], none starting with '.', joined by single '/'"
	if p[0] == '/' {
		return fmt.Errorf("path %.100q is absolute; %s", p, rule)
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("path %.100q has an empty segment (a doubled or trailing '/'); %s", p, rule)
		case seg == "..":
			return fmt.Errorf("path %.100q has a '..' segment; %s", p, rule)
		case seg[0] == '.':
			return fmt.Errorf("path %.100q has segment %.40q starting with '.'; %s", p, seg, rule)
		case len(seg) > MaxStorageSegmentLen:
			return fmt.Errorf("path %.100q has segment %.40q... of %d bytes, at most %d", p, seg, len(seg), MaxStorageSegmentLen)
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !isStoragePathByte(c) {
				return fmt.Errorf("path %.100q has byte %q; %s", p, c, rule)
			}
		}
	}
	return nil
}

func isStoragePathByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}
