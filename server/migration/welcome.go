package migration

// Welcome is the source's answer to Hello: the protocol it chose, its own
// fresh nonce, and its proof that it holds the migration secret (Prove with
// RoleSource over the Hello's nonce and this one). The target checks the
// proof before it answers with its own (Proof).
type Welcome struct {
	Protocol uint32
	Nonce    [NonceSize]byte
	Proof    [ProofSize]byte
}

// Encode returns the payload: the protocol (u32), the nonce and the proof.
func (w Welcome) Encode() []byte {
	var e enc
	e.u32(w.Protocol)
	e.b = append(e.b, w.Nonce[:]...)
	e.b = append(e.b, w.Proof[:]...)
	return e.b
}

// DecodeWelcome parses a Welcome payload.
func DecodeWelcome(p []byte) (Welcome, error) {
	d := dec{b: p, msg: TypeWelcome}
	w := Welcome{Protocol: d.u32("protocol")}
	copy(w.Nonce[:], d.take(NonceSize, "nonce"))
	copy(w.Proof[:], d.take(ProofSize, "proof"))
	return w, d.done()
}
