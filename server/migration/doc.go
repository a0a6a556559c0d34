// Package migration is the wire protocol of live migration between two VMM
// servers: a stream of length-prefixed frames over the connection that
// `GET /v1/instance/migrate/{id}/start` upgrades.
//
// Every frame is an 8-byte header (type u8, three zero bytes, payload
// length u32, big-endian) and a payload of at most MaxPayload bytes. Each
// message type has its own file with its encoder and decoder; decoders
// treat their input as untrusted and are fuzzed.
//
// The conversation (T = target, S = source):
//
//	T->S Hello         migration id, a fresh nonce, protocols offered, spec versions and
//	                   device state versions accepted
//	S->T Welcome       the protocol chosen (the highest both speak), the source's nonce and
//	                   its proof that it holds the migration secret
//	T->S Proof         the target's proof, sent only if the source's proof holds
//	S->T Preamble      the spec, in a versioned envelope, sent only if the target's proof holds
//	T->S Ready         the target built its VM from that spec
//	S->T Device        the serial console's history so far, if the target lists its kind
//	S->T Plan*         (protocol 2) the ranges of RAM the first round will send
//	S->T RAM*, Zero*, RoundEnd   a pre-copy round while the VM runs
//	T->S RoundAck      the target applied the round (the source waits, so that the pause
//	                   never queues behind pages in flight); more rounds, then the source pauses
//	S->T RAM*, Zero*, RoundEnd   the final dirty pages
//	S->T Device*       each device's state, tagged (kind, version); last, what the guest
//	                   printed on its console since, if the target lists its kind
//	S->T Machine       vCPUs, irqchip, PIT and clock
//	S->T StateDone
//	T->S Imported      the target holds the whole VM, paused
//	S->T Commit        the hand-off: from here the source never runs the VM again; the target resumes it.
//	                   It carries how long the VM has been paused, for the target's downtime figure.
//
// Hello, Welcome and Proof are the handshake (secret.go says what the
// proofs are). A migration is a capability: the source was armed with a
// one-time secret for the migration's id, the target was given the same
// secret, and neither sends it; each proves it holds it before a byte of
// spec or RAM moves. A successful proof uses the arm up. Either side may
// send Abort, with a code and a reason, at any point before Commit; the
// source then resumes its VM. A peer that has not proved itself learns only
// the code; its own reason is not shown.
//
// The secret must be random: 32 bytes from a cryptographically secure
// generator (NewSecret makes such a one, and the server makes one when the
// caller brings none). CheckSecret checks only its form, not how it was
// made. Each proof is a keyed hash of public values (the id, the nonces),
// so anyone who sees a proof, or makes a side send one, can test guesses
// of the secret offline, as fast as it can hash: the source's proof goes
// to any caller who knows the id, before that caller proved anything. A
// secret from a small space (a word, a counter, a timestamp, a hash of
// either) is found so; 256 random bits are not. The order of the proofs is
// not the place to fix that: the target must check the source before it
// sends its own proof, or a fake source would get the target's proof.
//
// A device state kind need not be a VMM device's: serial_history is the
// serial console's history, which the server keeps (its last MiB). A
// target lists it in its Hello as it lists the devices' kinds; a source
// sends it only to a target that lists it in a version the source writes.
// Builds from before it (v0.1.0) neither list nor send it: across them the
// target's history starts empty, as it did. So it is negotiated through
// the device lists, with no new protocol version. It comes in two pieces,
// so that its bulk costs the pause nothing: the head, the history up to
// the start of the pre-copy, sent after Ready while the VM runs, under the
// key "@console"; and the tail, what the guest printed after the head,
// sent in the pause after the devices' payloads and before Machine, under
// the key "@console-tail". No spec component can have either key. Version
// 1 of a piece is the end offset (u64: how many bytes the guest had ever
// printed), a length (u32) and that many bytes, the last printed before
// the end offset; little-endian, as the devices' payloads are. The length
// is at most MaxDeviceState less the 12 bytes of the two fields, and at
// most the end offset. The target joins the pieces (a tail that begins
// past the head's end replaces it) and its history goes on from the tail's
// end offset: a reader's from_start offsets name the same bytes on either
// side. A piece that is malformed, over the bounds, under another key or
// sent twice, a head after the tail and a tail that ends before the head
// end the migration (the source runs on); a target that gets none starts
// its history empty.
//
// A target that loses the Commit opens a new stream for the same migration
// and goes through the handshake again: a source that handed the migration
// off answers, after the proofs, with Commit where the Preamble would be;
// one whose migration failed before the hand-off answers with an Abort,
// and runs the VM. The source keeps either answer for a while (a minute),
// and the target asks, with backoff, until that while is over; a refusal
// of the upgrade is no answer (it comes before any proof, and says the
// same for every cause). A target that gets no answer keeps its VM paused:
// it may be the only copy.
//
// Protocol versions and what each added:
//
//	1 (2026-11-27): the conversation above, without Plan. (A draft of
//	2026-11-21, never released, had no nonces and no proofs; it is not
//	spoken.)
//	2 (2026-11-27, not yet released): Plan. Before its first round the
//	source sends the ranges of RAM that round will carry, in at most
//	MaxPlanFrames frames, and the target populates that memory in the
//	background while the pages stream in. A Plan in protocol 1, after a
//	RAM, Zero or RoundEnd frame, beyond MaxPlanFrames or naming memory
//	outside the guest's RAM ends the migration (the source runs on).
//	Pages outside the plan may still come. Between a build that speaks 2
//	and one that speaks only 1 the handshake chooses 1, and the stream is
//	exactly protocol 1's.
package migration

// Protocol versions this package speaks, oldest first.
const (
	ProtocolV1 uint32 = 1
	ProtocolV2 uint32 = 2
)

// Supported lists the protocol versions this build speaks.
var Supported = []uint32{ProtocolV1, ProtocolV2}

// Choose returns the highest protocol in both offered and Supported.
func Choose(offered []uint32) (uint32, bool) {
	var best uint32
	for _, o := range offered {
		for _, s := range Supported {
			if o == s && o > best {
				best = o
			}
		}
	}
	return best, best != 0
}
