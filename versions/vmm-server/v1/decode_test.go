package v1

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	"github.com/wagglevm/waggle/spec"
)

const goodSpec = `{"board":{"cpus":2,"memory_mb":256,"chipset":"i440fx"},
 "boot":{"image":"disk","cmdline":"slot=0"},
 "components":{"com1":{"type":"serial_port","num":"com1"},
  "disk0":{"type":"virtio_disk","backend":"disk0-be","slot":0},
  "disk0-be":{"type":"file_storage_backend","path":"tmp/d.img","readonly":false,"block_size":512}}}`

func TestDecodeAndConvertGood(t *testing.T) {
	w, err := DecodeInstanceSpec([]byte(goodSpec))
	require.NoError(t, err)
	s, err := ToSpec(w)
	require.NoError(t, err)
	require.Equal(t, 3, s.Len())
	require.Equal(t, "disk", s.Boot().Image)
}

// TestBadInput: each bad spec is refused with a message naming the field.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name, json, field string
	}{
		{"malformed json", `{"board":`, "unexpected end of JSON"},
		{"unknown top-level field", `{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{},"extra":1}`, "extra"},
		{"missing board", `{"components":{}}`, "board"},
		{"cpus above maximum", `{"board":{"CPUS":999,"cpus":999,"memory_mb":16,"chipset":"i440fx"},"components":{}}`, "board.cpus"},
		{"cpus zero", `{"board":{"cpus":0,"memory_mb":16,"chipset":"i440fx"},"components":{}}`, "board.cpus"},
		{"memory too small", `{"board":{"cpus":1,"memory_mb":1,"chipset":"i440fx"},"components":{}}`, "board.memory_mb"},
		{"unknown chipset", `{"board":{"cpus":1,"memory_mb":16,"chipset":"q35"},"components":{}}`, "board.chipset"},
		{"unknown component type", `{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{"x":{"type":"floppy"}}}`, "components.x"},
		{"unknown component field", `{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{"c":{"type":"serial_port","num":"com1","baud":9600}}}`, "components.c"},
		{"missing slot", `{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{"d":{"type":"virtio_disk","backend":"b"},"b":{"type":"file_storage_backend","path":"b"}}}`, "components.d"},
		{"bad com port", `{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{"c":{"type":"serial_port","num":"com9"}}}`, "components.c"},
		{"bad block size", `{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"components":{"d":{"type":"virtio_disk","backend":"b","slot":0},"b":{"type":"file_storage_backend","path":"b","block_size":8192}}}`, "components.b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeInstanceSpec([]byte(c.json))
			require.Error(t, err)
			require.Contains(t, err.Error(), c.field)
		})
	}
}

// TestRuleViolations: schema-valid specs that break a hub rule fail ToSpec
// with the component and rule named.
func TestRuleViolations(t *testing.T) {
	board := `"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"}`
	cases := []struct {
		name, components, path string
		rule                   spec.Rule
	}{
		{"dangling backend", `"d":{"type":"virtio_disk","backend":"nope","slot":0}`, "components.d.backend", spec.RuleDanglingRef},
		{"unused backend", `"b":{"type":"file_storage_backend","path":"b"}`, "components.b", spec.RuleUnusedBackend},
		{"two devices on one backend", `"d1":{"type":"virtio_disk","backend":"b","slot":0},"d2":{"type":"virtio_disk","backend":"b","slot":1},"b":{"type":"file_storage_backend","path":"b"}`, "components.b", spec.RuleSharedBackend},
		{"two serial ports on com1", `"a":{"type":"serial_port","num":"com1"},"b":{"type":"serial_port","num":"com1"}`, "components.b.num", spec.RuleSerialConflict},
		{"bad key", `"-x":{"type":"serial_port","num":"com1"}`, "components.-x", spec.RuleInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := DecodeInstanceSpec([]byte(`{` + board + `,"components":{` + c.components + `}}`))
			require.NoError(t, err)
			_, err = ToSpec(w)
			var ve *spec.ValidationError
			require.True(t, errors.As(err, &ve), "got %v", err)
			require.True(t, ve.Has(c.path, c.rule), "want %s at %s, got %v", c.rule, c.path, err)
		})
	}
}

func TestReplacementsToSpec(t *testing.T) {
	var backend, serial, badPath api.Component
	require.NoError(t, backend.FromFileStorageBackendComponent(api.FileStorageBackendComponent{Path: "other/disk.img"}))
	require.NoError(t, serial.FromSerialPortComponent(api.SerialPortComponent{Num: api.SerialPortNumberCom1}))
	require.NoError(t, badPath.FromFileStorageBackendComponent(api.FileStorageBackendComponent{Path: "/etc/shadow"}))

	got, err := ReplacementsToSpec(map[string]api.Component{"disk0-be": backend})
	require.NoError(t, err)
	require.Equal(t, spec.FileStorageBackend{Path: "other/disk.img", BlockSize: 512}, got[spec.MustKey("disk0-be")])

	cases := []struct {
		name string
		in   map[string]api.Component
		path string
		rule spec.Rule
	}{
		{"a device", map[string]api.Component{"com1": serial}, "migrate.replace_components.com1", spec.RuleWrongKind},
		{"a bad path", map[string]api.Component{"be": badPath}, "migrate.replace_components.be.path", spec.RuleInvalid},
		{"a bad key", map[string]api.Component{"-be": backend}, "migrate.replace_components.-be", spec.RuleInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReplacementsToSpec(c.in)
			var ve *spec.ValidationError
			require.True(t, errors.As(err, &ve), "got %v", err)
			require.True(t, ve.Has(c.path, c.rule), "want %s at %s, got %v", c.rule, c.path, err)
		})
	}
}
