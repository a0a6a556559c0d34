package vmm

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
)

// type1Strings returns the strings the SMBIOS type 1 structure of tables
// names at offsets 4, 5, 6, 7, 0x19 and 0x1a (manufacturer, product,
// version, serial number, SKU, family), "" for string number 0.
func type1Strings(t *testing.T, table []byte) [6]string {
	t.Helper()
	for len(table) >= 4 {
		n := int(table[1])
		require.GreaterOrEqual(t, len(table), n)
		end := bytes.Index(table[n:], []byte{0, 0})
		require.GreaterOrEqual(t, end, 0, "unterminated strings")
		if table[0] != 1 {
			table = table[n+end+2:]
			continue
		}
		var strs []string
		if end > 0 {
			for _, s := range bytes.Split(table[n:n+end], []byte{0}) {
				strs = append(strs, string(s))
			}
		}
		var got [6]string
		for i, off := range []int{4, 5, 6, 7, 0x19, 0x1a} {
			if k := int(table[off]); k != 0 {
				require.LessOrEqual(t, k, len(strs))
				got[i] = strs[k-1]
			}
		}
		return got
	}
	t.Fatal("no type 1 structure")
	return [6]string{}
}

// smbiosMachine is a machine with only its SMBIOS tables built (no KVM).
func smbiosMachine(t *testing.T, s spec.Spec, props Properties, version string) (*Machine, error) {
	t.Helper()
	m := &Machine{cfg: Config{Spec: s, Properties: props, Version: version}}
	return m, m.buildSMBIOS()
}

func smbiosSpec(t *testing.T, table *spec.SMBIOS) spec.Spec {
	t.Helper()
	b := spec.NewBuilder().SetBoard(spec.Board{CPUs: 1, MemoryMiB: 16, Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: "smbios"})
	if table != nil {
		b.SetSMBIOS(*table)
	}
	s, err := b.Build()
	require.NoError(t, err)
	return s
}

// TestExplicitSMBIOS: a spec's table is the type 1 structure, string for
// string, empty ones as string number 0; without one, the derived table.
func TestExplicitSMBIOS(t *testing.T) {
	props := Properties{ID: [16]byte{1, 2, 3}, Name: "vm-1"}
	explicit := spec.SMBIOS{Manufacturer: "Acme", Product: "Rocket", Version: "", SerialNumber: "abc 123",
		SKU: "sku-9", Family: ""}
	m, err := smbiosMachine(t, smbiosSpec(t, &explicit), props, "0.2.0")
	require.NoError(t, err)
	require.Equal(t, [6]string{"Acme", "Rocket", "", "abc 123", "sku-9", ""}, type1Strings(t, m.smbios.Table))

	m, err = smbiosMachine(t, smbiosSpec(t, &spec.SMBIOS{}), props, "0.2.0")
	require.NoError(t, err)
	require.Equal(t, [6]string{}, type1Strings(t, m.smbios.Table), "an all-empty table names no string")

	m, err = smbiosMachine(t, smbiosSpec(t, nil), props, "0.2.0")
	require.NoError(t, err)
	require.Equal(t, [6]string{"waggle", "waggle VM", "0.2.0", "vm-1", "", ""}, type1Strings(t, m.smbios.Table))
}

// TestDerivedSMBIOS: the derived table is what a spec without a table
// shows, so an explicit table equal to it builds the very same bytes; one
// that differs in any string does not.
func TestDerivedSMBIOS(t *testing.T) {
	props := Properties{ID: [16]byte{0xa1, 0xb2, 0xc3, 0xd4, 0, 0, 0x40, 0, 0x80}, Name: "guest-vm-1"}
	d := DerivedSMBIOS(props, "1.2.3")
	require.Equal(t, spec.SMBIOS{Manufacturer: "waggle", Product: "waggle VM", Version: "1.2.3",
		SerialNumber: "guest-vm-1"}, d)
	require.Equal(t, uuidString(props.ID), DerivedSMBIOS(Properties{ID: props.ID}, "1.2.3").SerialNumber,
		"a nameless instance's serial number is its id")

	derived, err := smbiosMachine(t, smbiosSpec(t, nil), props, "1.2.3")
	require.NoError(t, err)
	same, err := smbiosMachine(t, smbiosSpec(t, &d), props, "1.2.3")
	require.NoError(t, err)
	require.Equal(t, derived.smbios, same.smbios)

	for i, change := range []func(*spec.SMBIOS){
		func(s *spec.SMBIOS) { s.Manufacturer = "Waggle" }, func(s *spec.SMBIOS) { s.Product = "" },
		func(s *spec.SMBIOS) { s.Version = "1.2.4" }, func(s *spec.SMBIOS) { s.SerialNumber = "x" },
		func(s *spec.SMBIOS) { s.SKU = "s" }, func(s *spec.SMBIOS) { s.Family = "f" },
	} {
		other := d
		change(&other)
		m, err := smbiosMachine(t, smbiosSpec(t, &other), props, "1.2.3")
		require.NoError(t, err)
		require.NotEqual(t, derived.smbios.Table, m.smbios.Table, "change %d", i)
	}
}

// TestSMBIOSErrorsNameTheirPart: a derived table the VMM cannot build (a
// version no SMBIOS string can hold) names the properties.
func TestSMBIOSErrorsNameTheirPart(t *testing.T) {
	_, err := smbiosMachine(t, smbiosSpec(t, nil), Properties{Name: "ok"}, string(bytes.Repeat([]byte("v"), 65)))
	var ce *ComponentError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "properties", ce.Component)
}
