package migration

// MaxEnvelope bounds the preamble's envelope.
const MaxEnvelope = 1 << 20

// Preamble carries the VM's spec in a versioned envelope (JSON of
// versions.Envelope); the target decodes it with versions.Unwrap.
type Preamble struct {
	Envelope []byte
}

// Encode returns the payload.
func (p Preamble) Encode() []byte {
	var e enc
	e.bytes(p.Envelope)
	return e.b
}

// DecodePreamble parses a Preamble payload.
func DecodePreamble(p []byte) (Preamble, error) {
	d := dec{b: p, msg: TypePreamble}
	out := Preamble{Envelope: d.bytes("envelope", MaxEnvelope)}
	return out, d.done()
}
