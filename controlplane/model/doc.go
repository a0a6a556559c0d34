// Package model holds the control plane's domain types: the states of
// VMMs, migrations and instances, their generations, and the rules that tie
// them together. An instance is apart from the VMMs that incarnate it and
// may have none; a VMM's Failed state carries the reason it failed; every
// change of a protected field bumps its record's generation, and only then.
//
// Nothing here knows SQL or HTTP. The database (controlplane/db) and the
// sled agent's wire types (controlplane/sledclient) convert to and from
// these types at their boundaries.
package model
