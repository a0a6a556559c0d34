package migration

// Hello opens the conversation: the target says which migration it wants,
// what it speaks and accepts, and brings a fresh nonce for the proofs of
// the migration secret (see Prove).
type Hello struct {
	MigrationID [16]byte
	// Nonce is the target's fresh random challenge: the source's proof in
	// Welcome covers it, so that a proof cannot be replayed.
	Nonce [NonceSize]byte
	// Protocols the target speaks.
	Protocols []uint32
	// SpecVersions the target accepts, e.g. "vmm-server/v1".
	SpecVersions []string
	// Devices lists, per device state kind, the versions the target imports.
	Devices []DeviceVersions
}

// DeviceVersions is what a target imports of one kind of device state.
type DeviceVersions struct {
	Kind     string
	Versions []uint32
}

// Limits of a Hello.
const (
	maxListLen = 64
	maxNameLen = 128
)

// Encode returns the payload: the migration id (16 bytes), the nonce
// (NonceSize bytes), then the protocols, spec versions and device versions
// as counted lists.
func (h Hello) Encode() []byte {
	var e enc
	e.b = append(e.b, h.MigrationID[:]...)
	e.b = append(e.b, h.Nonce[:]...)
	e.u32(uint32(len(h.Protocols)))
	for _, p := range h.Protocols {
		e.u32(p)
	}
	e.u32(uint32(len(h.SpecVersions)))
	for _, s := range h.SpecVersions {
		e.str(s)
	}
	e.u32(uint32(len(h.Devices)))
	for _, d := range h.Devices {
		e.str(d.Kind)
		e.u32(uint32(len(d.Versions)))
		for _, v := range d.Versions {
			e.u32(v)
		}
	}
	return e.b
}

// DecodeHello parses a Hello payload.
func DecodeHello(p []byte) (Hello, error) {
	d := dec{b: p, msg: TypeHello}
	var h Hello
	copy(h.MigrationID[:], d.take(16, "migration id"))
	copy(h.Nonce[:], d.take(NonceSize, "nonce"))
	for range d.count("protocols", 4, maxListLen) {
		h.Protocols = append(h.Protocols, d.u32("protocol"))
	}
	for range d.count("spec versions", 4, maxListLen) {
		h.SpecVersions = append(h.SpecVersions, d.str("spec version", maxNameLen))
	}
	for range d.count("devices", 8, maxListLen) {
		dv := DeviceVersions{Kind: d.str("device kind", maxNameLen)}
		for range d.count("device versions", 4, maxListLen) {
			dv.Versions = append(dv.Versions, d.u32("device version"))
		}
		h.Devices = append(h.Devices, dv)
	}
	return h, d.done()
}
