// Package v1 is the spoke between version 1 of the vmm-server contract
// (gen/vmm-server/v1) and the spec hub: ToSpec and FromSpec convert an
// InstanceSpec both ways without losing anything, and Canonical writes a wire
// value in the one form a server sends (documented defaults written out).
//
// The laws (tested over random values and by fuzzing):
//  1. FromSpec(ToSpec(x)) equals Canonical(x) for every x that ToSpec accepts;
//  2. ToSpec(FromSpec(s)) equals s whenever FromSpec(s) succeeds;
//  3. FromSpec fails, naming the component and field, for a spec that uses
//     what version 1 cannot say.
package v1

// Version names this spoke in errors and in the migration envelope.
const Version = "vmm-server/v1"
