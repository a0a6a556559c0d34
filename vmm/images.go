package vmm

import "github.com/wagglevm/waggle/vmm/guest"

// defaultImage looks a boot image up by name among the images of package
// guest.
func defaultImage(name string) ([]byte, error) { return guest.Image(name) }
