package v1

import (
	"encoding/json"
	"testing"

	api "github.com/wagglevm/waggle/gen/sled-agent/v1"
)

type apiEnsure = api.VmmEnsureRequest

// FuzzEnsureFromV1: any registration body that decodes converts or fails
// with an error; it never panics, and a success is a well-formed request
// (exactly one of spec and migrate, a fingerprint, the resources to
// reserve).
func FuzzEnsureFromV1(f *testing.F) {
	f.Add([]byte(fromSpec(`{"cpus":1,"memory_mb":64,"chipset":"i440fx"}`)))
	f.Add([]byte(target("3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")))
	f.Add([]byte(`{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"x"},"spec":{"spec_version":"vmm-server/v1","spec":{"board":{"cpus":1,"memory_mb":64,"chipset":"i440fx"},"components":{"d":{"type":"virtio_disk","backend":"b","slot":0},"b":{"type":"file_storage_backend","path":"a.img"}}}}}`))
	f.Add([]byte(`{"instance":{"id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","name":"x"},"migrate":{"src_addr":"h:1","migration_id":"0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10","secret":"x","resources":{"cpus":1,"memory_mib":16},"replace_components":{"b":{"type":"file_storage_backend","path":"x"}}}}`))
	f.Add([]byte(`{"spec":{"spec_version":"nope","spec":{}},"migrate":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		body := ensureBody2(data)
		if body == nil {
			return
		}
		r, err := EnsureFromV1(*body)
		if err != nil {
			return
		}
		if (r.Spec == nil) == (r.Migrate == nil) {
			t.Fatalf("converted with spec %v and migrate %v", r.Spec != nil, r.Migrate != nil)
		}
		if r.Fingerprint == "" {
			t.Fatal("no fingerprint")
		}
		if r.Spec != nil && (r.Resources.CPUs == 0 || r.Resources.MemoryMiB == 0) {
			t.Fatalf("a spec that reserves nothing: %+v", r.Resources)
		}
	})
}

func ensureBody2(data []byte) *apiEnsure {
	var b apiEnsure
	if json.Unmarshal(data, &b) != nil {
		return nil
	}
	return &b
}
