package migration

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestProofs: a proof holds only for the same secret, role, migration id
// and nonces; the source's proof is not the target's.
func TestProofs(t *testing.T) {
	secret := NewSecret()
	id := [16]byte{7}
	tn, sn := NewNonce(), NewNonce()
	require.NotEqual(t, tn, sn, "nonces are fresh")
	src := Prove(secret, RoleSource, id, tn, sn)
	tgt := Prove(secret, RoleTarget, id, tn, sn)
	require.True(t, CheckProof(secret, RoleSource, id, tn, sn, src))
	require.True(t, CheckProof(secret, RoleTarget, id, tn, sn, tgt))
	require.NotEqual(t, src, tgt)
	require.False(t, CheckProof(secret, RoleTarget, id, tn, sn, src), "the source's proof replayed as the target's")
	require.False(t, CheckProof(secret, RoleSource, id, tn, sn, tgt), "the target's proof replayed as the source's")
	require.False(t, CheckProof(NewSecret(), RoleSource, id, tn, sn, src), "another secret")
	require.False(t, CheckProof(secret, RoleSource, [16]byte{8}, tn, sn, src), "another migration")
	require.False(t, CheckProof(secret, RoleSource, id, NewNonce(), sn, src), "another target nonce")
	require.False(t, CheckProof(secret, RoleSource, id, tn, NewNonce(), src), "another source nonce")
	require.False(t, CheckProof(secret, RoleSource, id, sn, tn, src), "nonces swapped")
	for i := range ProofSize {
		bad := src
		bad[i] ^= 1
		require.False(t, CheckProof(secret, RoleSource, id, tn, sn, bad), "bit flipped in byte %d", i)
	}
	// Deterministic for the same inputs: the two sides compute the same.
	require.Equal(t, src, Prove(secret, RoleSource, id, tn, sn))
}

// TestProofIsNotTheSecret: nothing in the handshake frames carries the
// secret's text or bytes.
func TestProofIsNotTheSecret(t *testing.T) {
	secret := NewSecret()
	id := [16]byte{1}
	tn, sn := NewNonce(), NewNonce()
	frames := [][]byte{
		Hello{MigrationID: id, Nonce: tn, Protocols: Supported}.Encode(),
		Welcome{Protocol: 1, Nonce: sn, Proof: Prove(secret, RoleSource, id, tn, sn)}.Encode(),
		Proof{Proof: Prove(secret, RoleTarget, id, tn, sn)}.Encode(),
	}
	for _, f := range frames {
		require.False(t, bytes.Contains(f, []byte(secret)))
		require.False(t, bytes.Contains(f, []byte(secret[:16])))
	}
}

func TestSecrets(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	require.Len(t, a, 43)
	require.NotEqual(t, a, b)
	require.NoError(t, CheckSecret(a))
	good := []string{strings.Repeat("A", 43), strings.Repeat("_-09azAZ", 16), strings.Repeat("x", 128)}
	for _, s := range good {
		require.NoError(t, CheckSecret(s), s)
	}
	bad := []string{"", strings.Repeat("A", 42), strings.Repeat("A", 129), strings.Repeat("A", 42) + "=",
		strings.Repeat("A", 42) + "+", strings.Repeat("A", 42) + "/", strings.Repeat("A", 42) + " ",
		strings.Repeat("A", 42) + "\x00", strings.Repeat("A", 41) + "é"}
	for _, s := range bad {
		err := CheckSecret(s)
		require.ErrorIs(t, err, ErrBadSecret, "%q", s)
		if len(s) > 0 {
			require.NotContains(t, err.Error(), s, "the error never repeats the secret")
		}
	}
}

func TestHandshakeFramesRoundTrip(t *testing.T) {
	h := Hello{MigrationID: [16]byte{9}, Nonce: NewNonce(), Protocols: []uint32{1, 2}, SpecVersions: []string{"vmm-server/v1"},
		Devices: []DeviceVersions{{Kind: "uart16550a", Versions: []uint32{1, 2}}}}
	h2, err := DecodeHello(h.Encode())
	require.NoError(t, err)
	require.Equal(t, h, h2)
	w := Welcome{Protocol: 1, Nonce: NewNonce(), Proof: [ProofSize]byte{1, 2, 3}}
	w2, err := DecodeWelcome(w.Encode())
	require.NoError(t, err)
	require.Equal(t, w, w2)
	p := Proof{Proof: [ProofSize]byte{4, 5}}
	p2, err := DecodeProof(p.Encode())
	require.NoError(t, err)
	require.Equal(t, p, p2)
	for _, a := range []Abort{{Code: AbortFailed, Reason: "disk full"}, {Code: AbortSecretRefused}, {Code: 200, Reason: "newer"}} {
		a2, err := DecodeAbort(a.Encode())
		require.NoError(t, err)
		require.Equal(t, a, a2)
	}
	long := Abort{Code: AbortFailed, Reason: strings.Repeat("x", MaxReason+10)}
	a2, err := DecodeAbort(long.Encode())
	require.NoError(t, err)
	require.Len(t, a2.Reason, MaxReason)
}

func TestBadHandshakeFrames(t *testing.T) {
	w := Welcome{Protocol: 1}.Encode()
	p := Proof{}.Encode()
	cases := map[string]func() error{
		"welcome short":    func() error { _, err := DecodeWelcome(w[:len(w)-1]); return err },
		"welcome trailing": func() error { _, err := DecodeWelcome(append(w, 0)); return err },
		"welcome old form": func() error { _, err := DecodeWelcome([]byte{0, 0, 0, 1}); return err },
		"proof short":      func() error { _, err := DecodeProof(p[:ProofSize-1]); return err },
		"proof trailing":   func() error { _, err := DecodeProof(append(p, 0)); return err },
		"proof empty":      func() error { _, err := DecodeProof(nil); return err },
		"abort code 0":     func() error { _, err := DecodeAbort(Abort{Code: 0}.Encode()); return err },
		"abort empty":      func() error { _, err := DecodeAbort(nil); return err },
		"abort long reason": func() error {
			_, err := DecodeAbort(append([]byte{1, 0, 0, 0x10, 1}, make([]byte, 4097)...))
			return err
		},
		"hello no nonce": func() error { _, err := DecodeHello(make([]byte, 16)); return err },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) { require.ErrorIs(t, f(), ErrFrame) })
	}
}

// Fuzz targets for each handshake decoder on its own: no input panics or
// allocates beyond its limits, and whatever decodes re-encodes to the same
// bytes.

func FuzzDecodeHello(f *testing.F) {
	f.Add(Hello{Nonce: [NonceSize]byte{1}, Protocols: []uint32{1}, SpecVersions: []string{"vmm-server/v1"},
		Devices: []DeviceVersions{{Kind: "uart16550a", Versions: []uint32{1, 2}}}}.Encode())
	f.Add(Hello{}.Encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if h, err := DecodeHello(p); err == nil {
			require.Equal(t, p, h.Encode())
		}
	})
}

func FuzzDecodeWelcome(f *testing.F) {
	f.Add(Welcome{Protocol: 1, Nonce: [NonceSize]byte{1}, Proof: [ProofSize]byte{2}}.Encode())
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		if w, err := DecodeWelcome(p); err == nil {
			require.Equal(t, p, w.Encode())
		}
	})
}

func FuzzDecodeProof(f *testing.F) {
	f.Add(Proof{Proof: [ProofSize]byte{9}}.Encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if v, err := DecodeProof(p); err == nil {
			require.Equal(t, p, v.Encode())
		}
	})
}

func FuzzDecodeAbort(f *testing.F) {
	f.Add(Abort{Code: AbortSecretRefused}.Encode())
	f.Add(Abort{Code: AbortFailed, Reason: "the guest ended"}.Encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if a, err := DecodeAbort(p); err == nil {
			require.Equal(t, p, a.Encode())
		}
	})
}
