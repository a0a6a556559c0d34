package migration

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// A migration is a capability: arming a source binds a one-time secret to
// the migration's id, and each side of the stream proves that it holds the
// secret, without sending it, before a byte of spec or RAM moves.
//
// Each proof is HMAC-SHA256, keyed with the secret's text, over
//
//	ProofLabel, 0, role, 0, migration id (16 bytes), target nonce, source nonce
//
// The nonces are fresh random bytes from each side (Hello, Welcome), so a
// proof answers one conversation only; the role (RoleSource, RoleTarget)
// differs, so the source's proof cannot be sent back as the target's.

// Sizes of the handshake's values.
const (
	NonceSize = 32
	ProofSize = sha256.Size
)

// ProofLabel separates the proofs of this protocol from any other use of
// the secret.
const ProofLabel = "waggle migration proof v1"

// Role is which side of the stream a proof speaks for.
type Role string

// The roles.
const (
	RoleSource Role = "source"
	RoleTarget Role = "target"
)

// Prove returns the proof, for role, that the sender holds secret, in the
// conversation of migration id with the two nonces.
func Prove(secret string, role Role, id [16]byte, targetNonce, sourceNonce [NonceSize]byte) [ProofSize]byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ProofLabel))
	m.Write([]byte{0})
	m.Write([]byte(role))
	m.Write([]byte{0})
	m.Write(id[:])
	m.Write(targetNonce[:])
	m.Write(sourceNonce[:])
	var out [ProofSize]byte
	m.Sum(out[:0])
	return out
}

// CheckProof reports whether proof is role's proof of secret in this
// conversation, comparing in constant time.
func CheckProof(secret string, role Role, id [16]byte, targetNonce, sourceNonce [NonceSize]byte, proof [ProofSize]byte) bool {
	want := Prove(secret, role, id, targetNonce, sourceNonce)
	return hmac.Equal(want[:], proof[:])
}

// NewNonce returns NonceSize fresh random bytes.
func NewNonce() [NonceSize]byte {
	var n [NonceSize]byte
	_, _ = rand.Read(n[:]) // crypto/rand.Read never fails
	return n
}

// Limits of a migration secret's text.
const (
	MinSecretLen = 43 // 32 bytes in base64url without padding
	MaxSecretLen = 128
)

// NewSecret returns a fresh secret: 32 random bytes from crypto/rand in
// base64url without padding (43 characters). A secret must be made so, or
// as randomly: a proof is an offline guessing oracle for a weak one (see
// the package's doc).
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ErrBadSecret marks a secret that is not of the secrets' form.
var ErrBadSecret = errors.New("bad migration secret")

// CheckSecret checks the form of a secret: base64url without padding,
// MinSecretLen to MaxSecretLen characters of [A-Za-z0-9_-]. Its error
// never contains the secret.
func CheckSecret(s string) error {
	if len(s) < MinSecretLen || len(s) > MaxSecretLen {
		return fmt.Errorf("%w: want %d to %d characters of [A-Za-z0-9_-], got %d characters", ErrBadSecret, MinSecretLen, MaxSecretLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: character %d is not one of [A-Za-z0-9_-] (base64url without padding)", ErrBadSecret, i+1)
		}
	}
	return nil
}
