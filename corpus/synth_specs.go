package corpus

import (
	"fmt"
	"strings"

	"github.com/wagglevm/waggle/spec"
)

// namedSpec is one synthesized hub spec.
type namedSpec struct {
	name string
	spec spec.Spec
}

// synthSpecs returns the hub specs the corpus holds, each valid, together
// covering every component kind and enum value, name and UUID keys, and the
// edges of every range the hub and the contract allow.
func synthSpecs() ([]namedSpec, error) {
	board := spec.Board{CPUs: 1, MemoryMiB: spec.MinMemoryMiB, Chipset: spec.ChipsetI440FX}
	type build func(*spec.Builder)
	cases := []struct {
		name string
		f    build
	}{
		{"minimal", func(b *spec.Builder) {}},
		{"board-max", func(b *spec.Builder) {
			b.SetBoard(spec.Board{CPUs: spec.MaxCPUs, MemoryMiB: spec.MaxMemoryMiB, Chipset: spec.ChipsetI440FX})
		}},
		{"serial-every-port", func(b *spec.Builder) {
			for n := spec.COM1; n <= spec.COM4; n++ {
				b.Add(spec.MustKey(n.String()), spec.SerialPort{Num: n})
			}
		}},
		{"disk-512-readwrite", func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: "disk", Cmdline: "slot=0"})
			b.Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1})
			disk(b, "disk0", "disk0-be", 0, spec.FileStorageBackend{Path: "vms/a/disk0.img", BlockSize: 512})
		}},
		{"disk-4096-readonly", func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: "disk", Cmdline: "slot=7 readonly=1"})
			disk(b, "data", "data.backend", 7, spec.FileStorageBackend{Path: "ro/data.img", ReadOnly: true, BlockSize: 4096})
		}},
		{"uuid-keys", func(b *spec.Builder) {
			dev := spec.KeyFromUUID([16]byte{0x0c, 0x6a, 0x4a, 0x04, 0x6a, 0x2f, 0x4d, 0x6e, 0x9f, 0x53, 0x2b, 0x8b, 0x2f, 0x6a, 0x9a, 0x10})
			be := spec.KeyFromUUID([16]byte{0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x49, 0x88, 0xb7, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00})
			ser := spec.KeyFromUUID([16]byte{15: 1})
			b.Add(ser, spec.SerialPort{Num: spec.COM2})
			b.Add(be, spec.FileStorageBackend{Path: "d.img", BlockSize: 512})
			b.Add(dev, spec.VirtioDisk{Backend: be, Slot: 3})
		}},
		{"max-components", func(b *spec.Builder) {
			for n := spec.COM1; n <= spec.COM4; n++ {
				b.Add(spec.MustKey(fmt.Sprintf("serial.%d", n)), spec.SerialPort{Num: n})
			}
			for slot := range uint8(spec.MaxVirtioSlots) {
				bs := uint32(512)
				if slot%2 == 1 {
					bs = 4096
				}
				disk(b, fmt.Sprintf("disk_%d", slot), fmt.Sprintf("disk_%d-be", slot), slot,
					spec.FileStorageBackend{Path: fmt.Sprintf("disks/%d.img", slot), ReadOnly: slot >= 4, BlockSize: bs})
			}
		}},
		{"longest-values", func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: "i" + strings.Repeat("m", 62), Cmdline: printable(spec.MaxCmdlineLen)})
			long := "K" + strings.Repeat("k", spec.MaxKeyNameLen-1)
			beKey := "B" + strings.Repeat("b", spec.MaxKeyNameLen-1)
			disk(b, long, beKey, 1, spec.FileStorageBackend{Path: longPath(spec.MaxStoragePathLen), BlockSize: 512})
		}},
	}
	for _, image := range []string{"ticker", "memcheck", "smbios", "crash"} {
		cases = append(cases, struct {
			name string
			f    build
		}{"image-" + image, func(b *spec.Builder) {
			b.SetBoot(spec.Boot{Image: image, Cmdline: "interval_ms=100"})
			b.Add(spec.MustKey("com1"), spec.SerialPort{Num: spec.COM1})
		}})
	}
	var out []namedSpec
	for _, c := range cases {
		b := spec.NewBuilder().SetBoard(board).SetBoot(spec.Boot{Image: "ticker"})
		c.f(b)
		s, err := b.Build()
		if err != nil {
			return nil, fmt.Errorf("synthesize spec %s: %w", c.name, err)
		}
		out = append(out, namedSpec{c.name, s})
	}
	return out, nil
}

// disk adds a virtio disk and its file backend.
func disk(b *spec.Builder, dev, backend string, slot uint8, fb spec.FileStorageBackend) {
	b.Add(spec.MustKey(backend), fb)
	b.Add(spec.MustKey(dev), spec.VirtioDisk{Backend: spec.MustKey(backend), Slot: slot})
}

// printable returns n bytes cycling through printable ASCII, space to '~'.
func printable(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(' ' + i%95)
	}
	return string(b)
}

// longPath returns a valid storage path of exactly n bytes: segments of
// the longest length a segment may have, joined by '/'.
func longPath(n int) string {
	seg := strings.Repeat("p", spec.MaxStorageSegmentLen)
	s := strings.Repeat(seg+"/", n/(spec.MaxStorageSegmentLen+1)+1)[:n]
	if strings.HasSuffix(s, "/") {
		s = s[:n-1] + "p"
	}
	return s
}
