// Package v2 is the spoke between version 2 of the vmm-server contract
// (gen/vmm-server/v2) and the spec hub: ToSpec and FromSpec convert an
// InstanceSpec both ways without losing anything, and Canonical writes a wire
// value in the one form a server sends (documented defaults written out).
//
// Version 2 expresses everything the hub holds today (an explicit SMBIOS
// table, the pvpanic device, every block size), so FromSpec fails only for
// what the hub may gain later.
//
// The laws (tested over random values and by fuzzing):
//  1. FromSpec(ToSpec(x)) equals Canonical(x) for every x that ToSpec accepts;
//  2. ToSpec(FromSpec(s)) equals s whenever FromSpec(s) succeeds;
//  3. FromSpec fails, naming the component and field, for a spec that uses
//     what version 2 cannot say;
//  4. across versions: every version 1 value goes v1 -> hub -> v2 -> hub -> v1
//     unchanged (version 2 expresses everything version 1 does).
package v2

// Version names this spoke in errors and in the migration envelope.
const Version = "vmm-server/v2"
