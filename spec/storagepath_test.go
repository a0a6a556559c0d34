package spec

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckStoragePath(t *testing.T) {
	for _, p := range []string{
		"disk.img", "a", "_", "-x", "vm1/disk0.img", "a/b/c/d.e.f", "x..y", "a/b..", "A-Z_0.9", "z", "Z", "9", "azAZ09",
		strings.Repeat("a", MaxStorageSegmentLen),
		strings.Repeat(strings.Repeat("a", MaxStorageSegmentLen)+"/", 16)[:MaxStoragePathLen],
	} {
		require.NoError(t, CheckStoragePath(p), "%q", p)
	}
	for _, tc := range []struct{ path, want string }{
		{"", "empty"},
		{"/etc/shadow", "absolute"},
		{"/", "absolute"},
		{"..", "'..'"},
		{"a/../b", "'..'"},
		{"a/..", "'..'"},
		{".", "starting with '.'"},
		{"./a", "starting with '.'"},
		{"a/.hidden", "starting with '.'"},
		{"a//b", "empty segment"},
		{"a/", "empty segment"},
		{"a b", "byte"},
		{"a{", "byte"},
		{"a`", "byte"},
		{"a[", "byte"},
		{"a@", "byte"},
		{"a:", "byte"},
		{"a\x00b", "byte"},
		{"a\\b", "byte"},
		{"proc/self/root:x", "byte"},
		{"d\u00e9j\u00e0", "byte"},
		{strings.Repeat("a", MaxStoragePathLen+1), "at most 4095"},
		{strings.Repeat("a", MaxStorageSegmentLen+1), "of 256 bytes, at most 255"},
		{"vm/" + strings.Repeat("a", MaxStorageSegmentLen+1) + "/disk.img", "of 256 bytes, at most 255"},
	} {
		err := CheckStoragePath(tc.path)
		require.Error(t, err, "%q", tc.path)
		require.ErrorContains(t, err, tc.want, "%q", tc.path)
	}
}

// FuzzCheckStoragePath: CheckStoragePath agrees with StoragePathPattern, the
// regular expression the contracts publish, and an accepted path has no
// segment that could leave a directory.
func FuzzCheckStoragePath(f *testing.F) {
	for _, s := range []string{"disk.img", "a/b", "/a", "a/../b", ".x", "a//b", "a/", "a\x00", "..", "a/.b", "-/_"} {
		f.Add(s)
	}
	re := regexp.MustCompile(StoragePathPattern)
	f.Fuzz(func(t *testing.T, p string) {
		err := CheckStoragePath(p)
		want := re.MatchString(p) && len(p) <= MaxStoragePathLen
		require.Equal(t, want, err == nil, "%q: %v", p, err)
		if err == nil {
			for _, seg := range strings.Split(p, "/") {
				require.NotEqual(t, "..", seg)
				require.NotEqual(t, ".", seg)
				require.NotEmpty(t, seg)
			}
		}
	})
}
