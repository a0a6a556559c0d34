package spec

import "fmt"

// MaxSMBIOSStringLen bounds each string of an SMBIOS table, in bytes.
const MaxSMBIOSStringLen = 64

// SMBIOS is the SMBIOS type 1 (System Information) table a VM shows its
// guest, when the spec sets one. A spec without one gets the table the VMM
// derives from the instance (its id and name, the VMM's version); an
// explicit table travels with the VM through migrations like the rest of
// the spec. An empty string is a string the table does not give.
type SMBIOS struct {
	Manufacturer string
	Product      string
	Version      string
	SerialNumber string
	SKU          string
	Family       string
}

// fields returns the table's strings with their paths, in table order.
func (t SMBIOS) fields() [6]struct{ path, value string } {
	return [6]struct{ path, value string }{
		{"smbios.manufacturer", t.Manufacturer}, {"smbios.product", t.Product}, {"smbios.version", t.Version},
		{"smbios.serial_number", t.SerialNumber}, {"smbios.sku", t.SKU}, {"smbios.family", t.Family},
	}
}

// checkSMBIOS checks each string: at most MaxSMBIOSStringLen bytes of
// printable ASCII (the table is a list of NUL-terminated strings).
func checkSMBIOS(t SMBIOS, add addFunc) {
	for _, f := range t.fields() {
		if len(f.value) > MaxSMBIOSStringLen {
			add(f.path, RuleRange, "is %d bytes, at most %d", len(f.value), MaxSMBIOSStringLen)
			continue
		}
		for i := 0; i < len(f.value); i++ {
			if c := f.value[i]; c < 0x20 || c > 0x7e {
				add(f.path, RuleInvalid, "byte %d is %#x; only printable ASCII is allowed", i, c)
				break
			}
		}
	}
}

// String shows the table for messages.
func (t SMBIOS) String() string {
	return fmt.Sprintf("manufacturer=%q product=%q version=%q serial_number=%q sku=%q family=%q",
		t.Manufacturer, t.Product, t.Version, t.SerialNumber, t.SKU, t.Family)
}
