// Package spec holds the one true description of a virtual machine: the hub
// that every versioned wire type converts through.
//
// A Spec is made only by a Builder, which checks every rule (unique keys,
// every backend used by exactly one device, every reference resolved, unique
// serial ports and device slots, sane sizes) and reports each broken rule as a
// Problem that names the component and the rule. A Spec is immutable once
// built, so holding one means holding a valid VM description.
//
// The package knows nothing of JSON or HTTP and imports only the standard
// library.
package spec
