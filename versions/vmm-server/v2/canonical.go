package v2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/spec"
)

// Canonical returns w with every documented default written out: a missing
// boot becomes the ticker with an empty command line, a missing cmdline
// becomes empty, a backend's missing readonly becomes false and its missing
// block_size 512, and an smbios table's missing strings become empty (a
// missing table stays missing: the server derives one). It works on the
// wire form alone, without the hub, so that law 1 compares two independent
// paths. Components that do not decode are left as they are.
func Canonical(w api.InstanceSpec) api.InstanceSpec {
	out := w
	if out.Boot == nil {
		out.Boot = &api.Boot{Image: DefaultImage}
	} else {
		b := *out.Boot
		out.Boot = &b
	}
	if out.Boot.Cmdline == nil {
		out.Boot.Cmdline = ptr("")
	}
	if out.Smbios != nil {
		t := *out.Smbios
		for _, f := range []**string{&t.Manufacturer, &t.Product, &t.Version, &t.SerialNumber, &t.Sku, &t.Family} {
			if *f == nil {
				*f = ptr("")
			}
		}
		out.Smbios = &t
	}
	out.Components = make(map[string]api.Component, len(w.Components))
	// Sorted: where two names are one key (a UUID in two letter cases),
	// the same one wins every time.
	for _, name := range slices.Sorted(maps.Keys(w.Components)) {
		out.Components[canonicalKey(name)] = canonicalComponent(w.Components[name])
	}
	return out
}

// canonicalKey writes a UUID key in lower case; a name stays as it is.
func canonicalKey(s string) string {
	if k, err := spec.ParseKey(s); err == nil {
		return k.String()
	}
	return s
}

func canonicalComponent(c api.Component) api.Component {
	typ, err := c.Discriminator()
	if err != nil {
		return c
	}
	var out api.Component
	switch typ {
	case string(api.VirtioDiskComponentTypeVirtioDisk):
		d, err := c.AsVirtioDiskComponent()
		if err != nil {
			return c
		}
		d.Backend = canonicalKey(d.Backend)
		err = out.FromVirtioDiskComponent(d)
		if err != nil {
			return c
		}
	case string(api.FileStorageBackendComponentTypeFileStorageBackend):
		fb, err := c.AsFileStorageBackendComponent()
		if err != nil {
			return c
		}
		if fb.Readonly == nil {
			fb.Readonly = ptr(false)
		}
		if fb.BlockSize == nil {
			fb.BlockSize = ptr(DefaultBlockSize)
		}
		if out.FromFileStorageBackendComponent(fb) != nil {
			return c
		}
	default:
		return c
	}
	return out
}

// CanonicalJSON encodes v as JSON with object keys sorted and no insignificant
// white space, so that two encodings of the same value compare byte for byte.
func CanonicalJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("canonical json: %w", err)
	}
	// encoding/json writes map keys sorted.
	return json.Marshal(generic)
}
