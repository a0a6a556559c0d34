package v2

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v2"
	"github.com/wagglevm/waggle/spec"
)

// Random generators for the law tests. Each takes its randomness from r, so a
// failing seed reproduces.

func randomName(r *rand.Rand, prefix string) string {
	return fmt.Sprintf("%s%d", prefix, r.IntN(1000))
}

// randomKey returns name, or one time in four a random UUID in lower, upper
// or mixed case (a key is a name or a UUID, and a UUID in any case is the
// same key).
func randomKey(r *rand.Rand, name string) string {
	if r.IntN(4) != 0 {
		return name
	}
	var u [16]byte
	for i := range u {
		u[i] = byte(r.UintN(256))
	}
	return randomCase(r, spec.KeyFromUUID(u).String())
}

// randomCase changes the case of each letter of s at random.
func randomCase(r *rand.Rand, s string) string {
	b := []byte(s)
	for i, c := range b {
		if r.IntN(2) == 0 {
			b[i] = []byte(strings.ToUpper(string(c)))[0]
		}
	}
	return string(b)
}

// randomPrintable returns up to max bytes of printable ASCII, quotes,
// backslashes and spaces included; now and then the empty string.
func randomPrintable(r *rand.Rand, max int) string {
	n := r.IntN(max + 1)
	if r.IntN(5) == 0 {
		n = 0
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(0x20 + r.IntN(0x7f-0x20))
	}
	return string(b)
}

// randomBlockSize returns one of the block sizes the hub allows.
func randomBlockSize(r *rand.Rand) uint32 { return spec.MinBlockSize << r.IntN(8) }

// randomSMBIOSWire returns a table with each string given or left out at random.
func randomSMBIOSWire(r *rand.Rand) *api.Smbios {
	var t api.Smbios
	for _, f := range []**string{&t.Manufacturer, &t.Product, &t.Version, &t.SerialNumber, &t.Sku, &t.Family} {
		if r.IntN(3) > 0 {
			*f = ptr(randomPrintable(r, spec.MaxSMBIOSStringLen))
		}
	}
	return &t
}

// randomWire returns a valid version 2 InstanceSpec, leaving optional fields
// out at random.
func randomWire(r *rand.Rand) api.InstanceSpec {
	w := api.InstanceSpec{
		Board: api.Board{
			Cpus:     int32(1 + r.IntN(spec.MaxCPUs)),
			MemoryMb: int64(spec.MinMemoryMiB + r.IntN(8192)),
			Chipset:  api.ChipsetI440fx,
		},
		Components: map[string]api.Component{},
	}
	if r.IntN(3) > 0 {
		w.Boot = &api.Boot{Image: []string{"ticker", "memcheck", "smbios", "disk", "panic"}[r.IntN(5)]}
		if r.IntN(2) == 0 {
			w.Boot.Cmdline = ptr(fmt.Sprintf("pace_ms=%d dirty_kib=%d", r.IntN(1000), r.IntN(4096)))
		}
	}
	if r.IntN(2) == 0 {
		w.Smbios = randomSMBIOSWire(r)
	}
	if r.IntN(3) == 0 {
		var c api.Component
		must(c.FromPVPanicComponent(api.PVPanicComponent{}))
		w.Components[randomKey(r, randomName(r, "panic"))] = c
	}
	ports := r.Perm(4)[:r.IntN(5)]
	for _, p := range ports {
		var c api.Component
		must(c.FromSerialPortComponent(api.SerialPortComponent{Num: api.SerialPortNumber(fmt.Sprintf("com%d", p+1))}))
		w.Components[randomKey(r, fmt.Sprintf("com%d-%d", p, r.IntN(1000)))] = c
	}
	slots := r.Perm(spec.MaxVirtioSlots)[:r.IntN(4)]
	for i, slot := range slots {
		be := randomKey(r, fmt.Sprintf("be%d-%s", i, randomName(r, "x")))
		var fb api.FileStorageBackendComponent
		fb.Path = fmt.Sprintf("srv/disks/%d.img", r.IntN(1e6))
		if r.IntN(2) == 0 {
			fb.Readonly = ptr(r.IntN(2) == 0)
		}
		if r.IntN(2) == 0 {
			fb.BlockSize = ptr(api.BlockSize(randomBlockSize(r)))
		}
		var bc, dc api.Component
		must(bc.FromFileStorageBackendComponent(fb))
		ref := be
		if _, err := uuid.Parse(be); err == nil {
			ref = randomCase(r, strings.ToLower(be)) // the same UUID key, perhaps spelt otherwise
		}
		must(dc.FromVirtioDiskComponent(api.VirtioDiskComponent{Backend: ref, Slot: int32(slot)}))
		w.Components[be] = bc
		w.Components[fmt.Sprintf("disk%d", slot)] = dc
	}
	return w
}

// randomHub returns a valid hub Spec using everything the hub has: an
// explicit SMBIOS table, a pvpanic device, every block size.
func randomHub(r *rand.Rand) spec.Spec {
	b := spec.NewBuilder().
		SetBoard(spec.Board{CPUs: uint32(1 + r.IntN(spec.MaxCPUs)), MemoryMiB: uint64(spec.MinMemoryMiB + r.IntN(1<<16)), Chipset: spec.ChipsetI440FX}).
		SetBoot(spec.Boot{Image: randomName(r, "img"), Cmdline: strings.Repeat("x ", r.IntN(10))})
	for _, p := range r.Perm(4)[:r.IntN(5)] {
		b.Add(spec.MustKey(fmt.Sprintf("serial%d", p)), spec.SerialPort{Num: spec.SerialPortNumber(p + 1)})
	}
	for i, slot := range r.Perm(spec.MaxVirtioSlots)[:r.IntN(4)] {
		be := spec.MustKey(randomKey(r, randomName(r, fmt.Sprintf("be%d-", i))))
		b.Add(be, spec.FileStorageBackend{Path: fmt.Sprintf("d/%d", i), ReadOnly: r.IntN(2) == 0, BlockSize: randomBlockSize(r)})
		b.Add(spec.MustKey(fmt.Sprintf("disk%d", slot)), spec.VirtioDisk{Backend: be, Slot: uint8(slot)})
	}
	if r.IntN(2) == 0 {
		b.SetSMBIOS(spec.SMBIOS{
			Manufacturer: randomPrintable(r, 64), Product: randomPrintable(r, 64), Version: randomPrintable(r, 64),
			SerialNumber: randomPrintable(r, 64), SKU: randomPrintable(r, 64), Family: randomPrintable(r, 64),
		})
	}
	if r.IntN(3) == 0 {
		b.Add(spec.MustKey(randomKey(r, "panic0")), spec.PVPanic{})
	}
	s, err := b.Build()
	must(err)
	return s
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
