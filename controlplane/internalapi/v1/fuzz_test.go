package v1

import (
	"encoding/json"
	"net"
	"net/url"
	"testing"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/control-plane-internal/v1"
)

// FuzzSledFromV1: any registration that decodes converts or fails with an
// error naming a field; it never panics, and a success is a sled the
// control plane can dial and place VMMs on.
func FuzzSledFromV1(f *testing.F) {
	f.Add([]byte(`{"address":"10.0.0.7:12300","api_versions":["v1"],"capacity":{"cpus":16,"memory_mib":65536}}`))
	f.Add([]byte(`{"address":"[::]:1","api_versions":["v1","v1"],"capacity":{"cpus":0,"memory_mib":-1}}`))
	f.Add([]byte(`{"address":"[fd00::1%eth0]:65535","api_versions":["v2","v10"],"capacity":{"cpus":65536,"memory_mib":9007199254740991}}`))
	f.Add([]byte(`{}`))
	id := uuid.MustParse("0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10")
	f.Fuzz(func(t *testing.T, data []byte) {
		var b api.SledRegistration
		if json.Unmarshal(data, &b) != nil {
			return
		}
		s, err := SledFromV1(id, b)
		if err != nil {
			if _, ok := err.(*fieldError); !ok {
				t.Fatalf("not a field error: %v", err)
			}
			return
		}
		host, _, err := net.SplitHostPort(s.Address)
		if err != nil || host == "" {
			t.Fatalf("address %q", s.Address)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			t.Fatalf("wildcard %q", s.Address)
		}
		if u, err := url.Parse("http://" + s.Address); err != nil || u.Host != s.Address {
			t.Fatalf("address %q is no URL's host", s.Address)
		}
		seen := map[string]bool{}
		for _, v := range s.APIVersions {
			if !apiVersion.MatchString(v) || seen[v] {
				t.Fatalf("versions %q", s.APIVersions)
			}
			seen[v] = true
		}
		if len(s.APIVersions) == 0 || s.Capacity.CPUs == 0 || s.Capacity.MemoryMiB == 0 || s.ID != id {
			t.Fatalf("sled %+v", s)
		}
	})
}
