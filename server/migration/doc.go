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
//	T->S Hello         protocols offered, spec versions and device state versions accepted, migration id
//	S->T Welcome       the protocol chosen (the highest both speak)
//	S->T Preamble      the spec, in a versioned envelope
//	T->S Ready         the target built its VM from that spec
//	S->T RAM*, Zero*, RoundEnd   a pre-copy round while the VM runs
//	T->S RoundAck      the target applied the round (the source waits, so that the pause
//	                   never queues behind pages in flight); more rounds, then the source pauses
//	S->T RAM*, Zero*, RoundEnd   the final dirty pages
//	S->T Device*       each device's state, tagged (kind, version)
//	S->T Machine       vCPUs, irqchip, PIT and clock
//	S->T StateDone
//	T->S Imported      the target holds the whole VM, paused
//	S->T Commit        the hand-off: from here the source never runs the VM again; the target resumes it.
//	                   It carries how long the VM has been paused, for the target's downtime figure.
//
// Either side may send Abort with a reason at any point before Commit; the
// source then resumes its VM. Protocol versions and what each added:
//
//	1 (2026-11-21): the conversation above.
package migration

// Protocol versions this package speaks, oldest first.
const (
	ProtocolV1 uint32 = 1
)

// Supported lists the protocol versions this build speaks.
var Supported = []uint32{ProtocolV1}

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
