// Package serialhistory is the codec of the serial console's history as a
// live migration carries it: a device state payload of kind
// "serial_history", although no device of the VMM holds it (the server's
// console log does). The server encodes and decodes it with this package
// alone, and so does the compatibility corpus (package corpus), so that
// the bytes the corpus freezes are those the server writes.
//
// Version 1 is the end offset (u64: how many bytes the guest had ever
// printed), the length of the bytes that follow (u32), then those bytes,
// the last ones printed before the end offset; little-endian, as the
// devices' payloads are. A migration sends it twice, under the Device
// frame keys HeadKey and TailKey (package server says when).
package serialhistory
