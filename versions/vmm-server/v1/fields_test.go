package v1

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/spec"
)

// The converters handle exactly these fields. When the contract or the hub
// gains a field, this test fails until the converters (and this list) handle
// it: no field is dropped silently.
var handledFields = map[reflect.Type][]string{
	reflect.TypeFor[api.InstanceSpec]():                {"Board", "Boot", "Components"},
	reflect.TypeFor[api.Board]():                       {"Chipset", "Cpus", "MemoryMb"},
	reflect.TypeFor[api.Boot]():                        {"Cmdline", "Image"},
	reflect.TypeFor[api.SerialPortComponent]():         {"Num", "Type"},
	reflect.TypeFor[api.VirtioDiskComponent]():         {"Backend", "Slot", "Type"},
	reflect.TypeFor[api.FileStorageBackendComponent](): {"BlockSize", "Path", "Readonly", "Type"},
	reflect.TypeFor[spec.Board]():                      {"CPUs", "Chipset", "MemoryMiB"},
	reflect.TypeFor[spec.Boot]():                       {"Cmdline", "Image"},
	reflect.TypeFor[spec.SerialPort]():                 {"Num"},
	reflect.TypeFor[spec.VirtioDisk]():                 {"Backend", "Slot"},
	reflect.TypeFor[spec.FileStorageBackend]():         {"BlockSize", "Path", "ReadOnly"},
	// Refused whole by FromSpec (version 1 has neither).
	reflect.TypeFor[spec.SMBIOS]():  {"Family", "Manufacturer", "Product", "SKU", "SerialNumber", "Version"},
	reflect.TypeFor[spec.PVPanic](): nil,
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
// that FromSpec does not know: each is converted, or refused by name
// (version 1 cannot express it; TestLaw3NamesEveryUnsupportedField).
func TestEveryComponentKindIsConverted(t *testing.T) {
	for k := spec.Kind(1); !strings.HasPrefix(k.String(), "Kind("); k++ {
		require.Contains(t, []spec.Kind{spec.KindSerialPort, spec.KindVirtioDisk, spec.KindFileStorageBackend, spec.KindPVPanic}, k,
			"hub kind %s has no version 1 conversion", k)
	}
}
