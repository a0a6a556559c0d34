// Package guest holds waggle's guest images: tiny Multiboot v1 programs that
// switch to 64-bit long mode in a few dozen instructions and do all their work
// at CPL3, so that they run at native speed even under nested KVM without
// hardware virtualization (where every CPL0 instruction is emulated).
//
// Each image makes one VMM behaviour observable on the serial port: ticker
// (a steady heartbeat with optional memory dirtying), memcheck (memory
// patterns rewritten every pass), smbios (the SMBIOS type 1 strings the VMM
// provides), disk (a virtio-mmio block device), crash (a triple fault) and
// panic (a panic reported on the pvpanic device). ABI.md in this directory is
// the contract between the images and the VMM; the assembly sources and
// build.sh are here too, and the built .bin files are embedded. `make guests`
// rebuilds them and `make check` verifies the committed images are fresh.
//
// The VMM loads an image with ParseMultiboot: copy
// img[h.LoadOffset:h.LoadOffset+h.LoadSize] to guest-physical h.LoadAddr, zero
// up to h.BSSEndAddr, and enter at h.EntryAddr in the Multiboot machine state.
package guest

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

//go:embed *.bin
var images embed.FS

// Image returns the built image called name (for example "ticker"). The
// returned slice is a fresh copy the caller may modify.
func Image(name string) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, "/\\.") {
		return nil, fmt.Errorf("guest image %q: invalid name (known images: %s)", name, strings.Join(Names(), ", "))
	}
	b, err := images.ReadFile(name + ".bin")
	if err != nil {
		return nil, fmt.Errorf("guest image %q: unknown (known images: %s)", name, strings.Join(Names(), ", "))
	}
	return b, nil
}

// Names lists the embedded images, sorted.
func Names() []string {
	entries, err := fs.ReadDir(images, ".")
	if err != nil {
		// The embedded root always exists; this cannot happen.
		panic(fmt.Sprintf("guest: reading embedded images: %v", err))
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); path.Ext(n) == ".bin" {
			names = append(names, strings.TrimSuffix(n, ".bin"))
		}
	}
	sort.Strings(names)
	return names
}
