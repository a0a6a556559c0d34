package migration

// Proof is the target's proof that it holds the migration secret (Prove
// with RoleTarget over both nonces), sent once it has checked the source's
// proof in Welcome. The source answers with the Preamble if the proof
// holds, or with Abort (AbortSecretRefused) if it does not; no spec or RAM
// moves before it.
type Proof struct {
	Proof [ProofSize]byte
}

// Encode returns the payload: the proof's ProofSize bytes.
func (p Proof) Encode() []byte { return append([]byte(nil), p.Proof[:]...) }

// DecodeProof parses a Proof payload.
func DecodeProof(p []byte) (Proof, error) {
	d := dec{b: p, msg: TypeProof}
	var out Proof
	copy(out.Proof[:], d.take(ProofSize, "proof"))
	return out, d.done()
}
