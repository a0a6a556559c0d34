package v2

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/spec"
)

// The converters handle exactly these fields. When the contract or the hub
// gains a field, this test fails until the converters (and this list) handle
// it: no field is dropped silently.
var handledFields = map[reflect.Type][]string{
	reflect.TypeFor[api.InstanceSpec]():                {"Board", "Boot", "Components", "Smbios"},
	reflect.TypeFor[api.Board]():                       {"Chipset", "Cpus", "MemoryMb"},
	reflect.TypeFor[api.Boot]():                        {"Cmdline", "Image"},
	reflect.TypeFor[api.Smbios]():                      {"Family", "Manufacturer", "Product", "SerialNumber", "Sku", "Version"},
	reflect.TypeFor[api.SerialPortComponent]():         {"Num", "Type"},
	reflect.TypeFor[api.VirtioDiskComponent]():         {"Backend", "Slot", "Type"},
	reflect.TypeFor[api.FileStorageBackendComponent](): {"BlockSize", "Path", "Readonly", "Type"},
	reflect.TypeFor[api.PVPanicComponent]():            {"Type"},
	reflect.TypeFor[spec.Board]():                      {"CPUs", "Chipset", "MemoryMiB"},
	reflect.TypeFor[spec.Boot]():                       {"Cmdline", "Image"},
	reflect.TypeFor[spec.SMBIOS]():                     {"Family", "Manufacturer", "Product", "SKU", "SerialNumber", "Version"},
	reflect.TypeFor[spec.SerialPort]():                 {"Num"},
	reflect.TypeFor[spec.VirtioDisk]():                 {"Backend", "Slot"},
	reflect.TypeFor[spec.FileStorageBackend]():         {"BlockSize", "Path", "ReadOnly"},
	reflect.TypeFor[spec.PVPanic]():                    nil,
}

func TestEveryFieldIsConverted(t *testing.T) {
	for typ, want := range handledFields {
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name)
		}
		sort.Strings(got)
		require.Equal(t, want, got, "%s changed: teach ToSpec/FromSpec the new field, then update handledFields", typ)
	}
}

// TestEveryComponentKindIsConverted fails when the hub gains a component kind
// that FromSpec does not know.
func TestEveryComponentKindIsConverted(t *testing.T) {
	for k := spec.Kind(1); !strings.HasPrefix(k.String(), "Kind("); k++ {
		require.Contains(t, []spec.Kind{spec.KindSerialPort, spec.KindVirtioDisk, spec.KindFileStorageBackend, spec.KindPVPanic}, k,
			"hub kind %s has no version 2 conversion", k)
	}
}

// TestEveryBlockSizeIsExpressible: version 2 has a value for every block
// size the hub allows, and for no other.
func TestEveryBlockSizeIsExpressible(t *testing.T) {
	var want []api.BlockSize
	for bs := uint32(spec.MinBlockSize); bs <= spec.MaxBlockSize; bs *= 2 {
		want = append(want, api.BlockSize(bs))
		require.True(t, api.BlockSize(bs).Valid(), "block size %d", bs)
	}
	all, err := schemas()
	require.NoError(t, err)
	var got []api.BlockSize
	for _, v := range all["BlockSize"].Value.Enum {
		got = append(got, api.BlockSize(v.(float64)))
	}
	require.ElementsMatch(t, want, got)
}

// TestSMBIOSRuleIsTheHubs: the contract bounds each SMBIOS string as the hub does.
func TestSMBIOSRuleIsTheHubs(t *testing.T) {
	all, err := schemas()
	require.NoError(t, err)
	props := all["Smbios"].Value.Properties
	require.Len(t, props, 6)
	for name, p := range props {
		require.Equal(t, uint64(spec.MaxSMBIOSStringLen), *p.Value.MaxLength, name)
		require.Equal(t, "^[ -~]*$", p.Value.Pattern, name)
	}
}
