package vmm

import (
	"io/fs"
	"runtime"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

const meminfo = "MemTotal:       25165824 kB\nMemFree:         1000000 kB\nMemAvailable:   23917044 kB\nBuffers:          100 kB\n"

func TestHostCapacityHere(t *testing.T) {
	cpus, mem, err := HostCapacity()
	require.NoError(t, err)
	require.GreaterOrEqual(t, cpus, 1)
	require.LessOrEqual(t, cpus, runtime.NumCPU(), "no more CPUs than the process may use")
	require.Positive(t, mem)
}

func TestParseMemAvailable(t *testing.T) {
	n, err := parseMemAvailable([]byte(meminfo))
	require.NoError(t, err)
	require.Equal(t, uint64(23917044)<<10, n)
	for _, bad := range []string{
		"MemTotal: 1 kB\n",
		"MemAvailable: 12\n",
		"MemAvailable: x kB\n",
		"MemAvailable: -1 kB\n",
		"MemAvailable: 99999999999999999999 kB\n",
		"MemAvailable: 12 MB\n",
		"",
	} {
		_, err := parseMemAvailable([]byte(bad))
		require.Error(t, err, "%q", bad)
	}
}

func TestMemAvailableCgroups(t *testing.T) {
	const gib = uint64(1) << 30
	avail := uint64(23917044) << 10
	for _, tc := range []struct {
		name string
		fs   fstest.MapFS
		want uint64
	}{
		{"no cgroup file", fstest.MapFS{}, avail},
		{"v2 unlimited", fstest.MapFS{
			"proc/self/cgroup":                           {Data: []byte("0::/user.slice/vm\n")},
			"sys/fs/cgroup/user.slice/vm/memory.max":     {Data: []byte("max\n")},
			"sys/fs/cgroup/user.slice/vm/memory.current": {Data: []byte("1000\n")},
		}, avail},
		{"v2 limited", fstest.MapFS{
			"proc/self/cgroup":                           {Data: []byte("0::/user.slice/vm\n")},
			"sys/fs/cgroup/user.slice/vm/memory.max":     {Data: []byte("4294967296\n")},
			"sys/fs/cgroup/user.slice/vm/memory.current": {Data: []byte("1073741824\n")},
		}, 3 * gib},
		{"v2 parent tighter", fstest.MapFS{
			"proc/self/cgroup":                           {Data: []byte("0::/user.slice/vm\n")},
			"sys/fs/cgroup/user.slice/vm/memory.max":     {Data: []byte("max\n")},
			"sys/fs/cgroup/user.slice/vm/memory.current": {Data: []byte("1\n")},
			"sys/fs/cgroup/user.slice/memory.max":        {Data: []byte("2147483648\n")},
			"sys/fs/cgroup/user.slice/memory.current":    {Data: []byte("1073741824\n")},
		}, gib},
		{"v2 over the limit", fstest.MapFS{
			"proc/self/cgroup":             {Data: []byte("0::/\n")},
			"sys/fs/cgroup/memory.max":     {Data: []byte("100\n")},
			"sys/fs/cgroup/memory.current": {Data: []byte("200\n")},
		}, 0},
		{"v1 limited", fstest.MapFS{
			"proc/self/cgroup": {Data: []byte("5:devices:/\n4:cpu,memory:/job\n0::/\n")},
			"sys/fs/cgroup/memory/job/memory.limit_in_bytes": {Data: []byte("8589934592\n")},
			"sys/fs/cgroup/memory/job/memory.usage_in_bytes": {Data: []byte("2147483648\n")},
		}, 6 * gib},
		{"v1 unlimited", fstest.MapFS{
			"proc/self/cgroup": {Data: []byte("4:memory:/job\n")},
			"sys/fs/cgroup/memory/job/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
			"sys/fs/cgroup/memory/job/memory.usage_in_bytes": {Data: []byte("2147483648\n")},
		}, avail},
		{"unreadable limits", fstest.MapFS{
			"proc/self/cgroup": {Data: []byte("0::/gone\n")},
		}, avail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fs["proc/meminfo"] = &fstest.MapFile{Data: []byte(meminfo)}
			got, err := memAvailable(tc.fs)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := memAvailable(fstest.MapFS{})
	require.Error(t, err, "no /proc/meminfo")
}

// openCounter counts the files read through it.
type openCounter struct {
	fs.FS
	reads map[string]int
}

func (c openCounter) Open(name string) (fs.File, error) {
	c.reads[name]++
	return c.FS.Open(name)
}

// TestMemAvailableReadsNoUsageOfUnlimitedGroups: a group without a limit
// costs one file read, not two; a limited one is read whole.
func TestMemAvailableReadsNoUsageOfUnlimitedGroups(t *testing.T) {
	c := openCounter{FS: fstest.MapFS{
		"proc/meminfo":     {Data: []byte(meminfo)},
		"proc/self/cgroup": {Data: []byte("4:memory:/a/b\n")},
		"sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
		"sys/fs/cgroup/memory/a/b/memory.usage_in_bytes": {Data: []byte("1\n")},
		"sys/fs/cgroup/memory/a/memory.limit_in_bytes":   {Data: []byte("4294967296\n")},
		"sys/fs/cgroup/memory/a/memory.usage_in_bytes":   {Data: []byte("1073741824\n")},
		"sys/fs/cgroup/memory/memory.limit_in_bytes":     {Data: []byte("9223372036854771712\n")},
		"sys/fs/cgroup/memory/memory.usage_in_bytes":     {Data: []byte("2\n")},
	}, reads: map[string]int{}}
	got, err := memAvailable(c)
	require.NoError(t, err)
	require.Equal(t, uint64(3)<<30, got)
	require.Zero(t, c.reads["sys/fs/cgroup/memory/a/b/memory.usage_in_bytes"])
	require.Zero(t, c.reads["sys/fs/cgroup/memory/memory.usage_in_bytes"])
	require.Equal(t, 1, c.reads["sys/fs/cgroup/memory/a/memory.usage_in_bytes"])
}
