package v2

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/spec"
)

const goodSpec = `{"board":{"cpus":2,"memory_mb":256,"chipset":"i440fx"},
 "boot":{"image":"smbios","cmdline":"slot=0"},
 "smbios":{"manufacturer":"Acme","product":"Roadrunner","serial_number":"RR-1"},
 "components":{"com1":{"type":"serial_port","num":"com1"},
  "panic":{"type":"pvpanic"},
  "disk0":{"type":"virtio_disk","backend":"disk0-be","slot":0},
  "disk0-be":{"type":"file_storage_backend","path":"tmp/d.img","readonly":false,"block_size":8192}}}`

func TestDecodeAndConvertGood(t *testing.T) {
	w, err := DecodeInstanceSpec([]byte(goodSpec))
	require.NoError(t, err)
	s, err := ToSpec(w)
	require.NoError(t, err)
	require.Equal(t, 4, s.Len())
	require.Equal(t, "smbios", s.Boot().Image)
	table, ok := s.SMBIOS()
	require.True(t, ok)
	require.Equal(t, spec.SMBIOS{Manufacturer: "Acme", Product: "Roadrunner", SerialNumber: "RR-1"}, table)
	c, ok := s.Component(spec.MustKey("panic"))
	require.True(t, ok)
	require.Equal(t, spec.PVPanic{}, c)
	be, ok := s.Component(spec.MustKey("disk0-be"))
	require.True(t, ok)
	require.Equal(t, uint32(8192), be.(spec.FileStorageBackend).BlockSize)

	// An empty table is a table: the spec says the guest sees no strings,
	// which is not the same as no table (the server derives one).
	w, err = DecodeInstanceSpec([]byte(`{"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"},"smbios":{},"components":{}}`))
	require.NoError(t, err)
	s, err = ToSpec(w)
	require.NoError(t, err)
	table, ok = s.SMBIOS()
	require.True(t, ok)
	require.Equal(t, spec.SMBIOS{}, table)
	back, err := FromSpec(s)
	require.NoError(t, err)
	require.NotNil(t, back.Smbios)
	require.Equal(t, "", *back.Smbios.Family)
}

// TestBadInput: each bad spec is refused with a message naming the field.
func TestBadInput(t *testing.T) {
	board := `"board":{"cpus":1,"memory_mb":16,"chipset":"i440fx"}`
	cases := []struct {
		name, json, field string
	}{
		{"malformed json", `{"board":`, "unexpected end of JSON"},
		{"unknown top-level field", `{` + board + `,"components":{},"extra":1}`, "extra"},
		{"missing board", `{"components":{}}`, "board"},
		{"cpus above maximum", `{"board":{"cpus":999,"memory_mb":16,"chipset":"i440fx"},"components":{}}`, "board.cpus"},
		{"cpus zero", `{"board":{"cpus":0,"memory_mb":16,"chipset":"i440fx"},"components":{}}`, "board.cpus"},
		{"memory too small", `{"board":{"cpus":1,"memory_mb":1,"chipset":"i440fx"},"components":{}}`, "board.memory_mb"},
		{"unknown chipset", `{"board":{"cpus":1,"memory_mb":16,"chipset":"q35"},"components":{}}`, "board.chipset"},
		{"unknown component type", `{` + board + `,"components":{"x":{"type":"floppy"}}}`, "components.x"},
		{"unknown component field", `{` + board + `,"components":{"c":{"type":"serial_port","num":"com1","baud":9600}}}`, "components.c"},
		{"pvpanic with a port", `{` + board + `,"components":{"p":{"type":"pvpanic","port":1285}}}`, "components.p"},
		{"missing slot", `{` + board + `,"components":{"d":{"type":"virtio_disk","backend":"b"},"b":{"type":"file_storage_backend","path":"b"}}}`, "components.d"},
		{"bad com port", `{` + board + `,"components":{"c":{"type":"serial_port","num":"com9"}}}`, "components.c"},
		{"block size not a power of two", `{` + board + `,"components":{"d":{"type":"virtio_disk","backend":"b","slot":0},"b":{"type":"file_storage_backend","path":"b","block_size":1000}}}`, "components.b"},
		{"block size too large", `{` + board + `,"components":{"d":{"type":"virtio_disk","backend":"b","slot":0},"b":{"type":"file_storage_backend","path":"b","block_size":131072}}}`, "components.b"},
		{"smbios string too long", `{` + board + `,"smbios":{"product":"` + strings.Repeat("p", 65) + `"},"components":{}}`, "smbios.product"},
		{"smbios string not printable", `{` + board + `,"smbios":{"sku":"a\tb"},"components":{}}`, "smbios.sku"},
		{"smbios string not ascii", `{` + board + `,"smbios":{"family":"caf\u00e9"},"components":{}}`, "smbios.family"},
		{"smbios unknown field", `{` + board + `,"smbios":{"uuid":"x"},"components":{}}`, "smbios"},
		{"smbios not an object", `{` + board + `,"smbios":"Acme","components":{}}`, "smbios"},
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
		{"two pvpanic devices", `"p1":{"type":"pvpanic"},"p2":{"type":"pvpanic"}`, "components.p2", spec.RulePVPanicConflict},
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

// TestToSpecChecksWhatTheSchemaWouldRefuse: ToSpec does not trust that its
// input passed the schema (a Go caller builds wire values by hand).
func TestToSpecChecksWhatTheSchemaWouldRefuse(t *testing.T) {
	bad := api.BlockSize(1000)
	var be, d api.Component
	require.NoError(t, be.FromFileStorageBackendComponent(api.FileStorageBackendComponent{Path: "b", BlockSize: &bad}))
	require.NoError(t, d.FromVirtioDiskComponent(api.VirtioDiskComponent{Backend: "b", Slot: 0}))
	long := strings.Repeat("m", 65)
	w := api.InstanceSpec{
		Board:      api.Board{Cpus: 1, MemoryMb: 16, Chipset: api.ChipsetI440fx},
		Smbios:     &api.Smbios{Manufacturer: &long, Version: ptr("\x01")},
		Components: map[string]api.Component{"b": be, "d": d},
	}
	_, err := ToSpec(w)
	var ve *spec.ValidationError
	require.ErrorAs(t, err, &ve)
	require.True(t, ve.Has("components.b.block_size", spec.RuleInvalid), "%v", err)
	require.True(t, ve.Has("smbios.manufacturer", spec.RuleRange), "%v", err)
	require.True(t, ve.Has("smbios.version", spec.RuleInvalid), "%v", err)
}

func TestReplacementsToSpec(t *testing.T) {
	var backend, serial, panicDev, badPath api.Component
	require.NoError(t, backend.FromFileStorageBackendComponent(api.FileStorageBackendComponent{Path: "other/disk.img", BlockSize: ptr(api.BlockSizeN4096)}))
	require.NoError(t, serial.FromSerialPortComponent(api.SerialPortComponent{Num: api.SerialPortNumberCom1}))
	require.NoError(t, panicDev.FromPVPanicComponent(api.PVPanicComponent{}))
	require.NoError(t, badPath.FromFileStorageBackendComponent(api.FileStorageBackendComponent{Path: "/etc/shadow"}))

	got, err := ReplacementsToSpec(map[string]api.Component{"disk0-be": backend})
	require.NoError(t, err)
	require.Equal(t, spec.FileStorageBackend{Path: "other/disk.img", BlockSize: 4096}, got[spec.MustKey("disk0-be")])

	cases := []struct {
		name string
		in   map[string]api.Component
		path string
		rule spec.Rule
	}{
		{"a device", map[string]api.Component{"com1": serial}, "init.replace_components.com1", spec.RuleWrongKind},
		{"a pvpanic device", map[string]api.Component{"panic": panicDev}, "init.replace_components.panic", spec.RuleWrongKind},
		{"a bad path", map[string]api.Component{"be": badPath}, "init.replace_components.be.path", spec.RuleInvalid},
		{"a bad key", map[string]api.Component{"-be": backend}, "init.replace_components.-be", spec.RuleInvalid},
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
