package server

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/versions"
)

// The handshake (see package migration): the target's Hello brings a
// nonce, the source's Welcome its own nonce and its proof, the target's
// Proof its proof. Each side checks the other's proof before it trusts a
// byte of what follows; the source sends nothing of the VM before the
// target's proof holds, and the target builds nothing before the source's
// does. Until the peer has proved itself, its Abort reasons are not shown
// and ours are not sent.

// sourceHandshake reads the target's Hello, answers with the protocol
// chosen, a fresh nonce and the source's proof, and checks the target's
// proof. From its success on, the target is trusted.
func sourceHandshake(p *peer, id uuid.UUID, secret string) (migration.Hello, error) {
	f, err := p.expect(migration.TypeHello)
	if err != nil {
		return migration.Hello{}, err
	}
	hello, err := migration.DecodeHello(f.Payload)
	if err != nil {
		return hello, err
	}
	if uuid.UUID(hello.MigrationID) != id {
		return hello, refusal(migration.AbortNoSuchMigration, "the target presented migration %s on the stream of %s",
			uuid.UUID(hello.MigrationID), id)
	}
	proto, ok := migration.Choose(hello.Protocols)
	if !ok {
		return hello, refusal(migration.AbortNoCommonProtocol, "no protocol in common: the target speaks %v, we speak %v",
			hello.Protocols, migration.Supported)
	}
	w := migration.Welcome{Protocol: proto, Nonce: migration.NewNonce()}
	w.Proof = migration.Prove(secret, migration.RoleSource, id, hello.Nonce, w.Nonce)
	if err := p.sendNow(migration.TypeWelcome, w.Encode()); err != nil {
		return hello, err
	}
	if f, err = p.expect(migration.TypeProof); err != nil {
		return hello, err
	}
	proof, err := migration.DecodeProof(f.Payload)
	if err != nil {
		return hello, err
	}
	if !migration.CheckProof(secret, migration.RoleTarget, id, hello.Nonce, w.Nonce, proof.Proof) {
		return hello, refusal(migration.AbortSecretRefused, "the target did not prove that it holds the migration secret")
	}
	p.trusted = true
	p.protocol = proto
	return hello, nil
}

// handshake sends the target's Hello on p, checks the source's proof in its
// Welcome and answers with the target's proof. From its success on, the
// source is trusted.
func (t *target) handshake(p *peer, fp FailPoints) error {
	hello := migration.Hello{MigrationID: t.id, Nonce: migration.NewNonce(), Protocols: migration.Supported,
		SpecVersions: versions.Names()}
	if fp[FailOldestSpecVersion] {
		hello.SpecVersions = hello.SpecVersions[len(hello.SpecVersions)-1:]
	}
	t.offered = importableStateVersions()
	for _, kind := range slices.Sorted(maps.Keys(t.offered)) {
		vs := t.offered[kind]
		if fp[FailOldestDeviceVersions] {
			vs = []uint32{slices.Min(vs)}
			t.offered[kind] = vs
		}
		hello.Devices = append(hello.Devices, migration.DeviceVersions{Kind: kind, Versions: vs})
	}
	if err := p.sendNow(migration.TypeHello, hello.Encode()); err != nil {
		return err
	}
	f, err := p.expect(migration.TypeWelcome)
	if err != nil {
		return untrustedFailure(err)
	}
	w, err := migration.DecodeWelcome(f.Payload)
	if err != nil {
		return untrustedFailure(err)
	}
	if !migration.CheckProof(t.secret, migration.RoleSource, t.id, hello.Nonce, w.Nonce, w.Proof) {
		return refusal(migration.AbortSecretRefused, "the source did not prove that it holds the migration secret")
	}
	p.trusted = true
	if _, ok := migration.Choose([]uint32{w.Protocol}); !ok {
		return fmt.Errorf("the source chose protocol %d, which we do not speak", w.Protocol)
	}
	p.protocol = w.Protocol
	proof := migration.Proof{Proof: migration.Prove(t.secret, migration.RoleTarget, t.id, hello.Nonce, w.Nonce)}
	return p.sendNow(migration.TypeProof, proof.Encode())
}

// untrustedFailure says, in our own words only, why a peer that has not
// proved itself failed the handshake: its Abort's code (never its reason),
// a stream that stalled or ended, or bytes that are not the protocol.
func untrustedFailure(err error) error {
	var pa *errPeerAborted
	switch {
	case errors.As(err, &pa):
		return err // its Error shows no untrusted reason
	case errors.Is(err, errSilentPeer):
		return fmt.Errorf("the source did not answer the handshake: %w", err)
	case errors.Is(err, migration.ErrFrame):
		return errors.New("the source did not speak the migration protocol")
	}
	return errors.New("the source ended the stream during the handshake")
}
