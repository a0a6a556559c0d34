// Package sledagent is the sled agent's runtime: it runs one `waggle server`
// process per VMM on this host (each on its own port, with its own token and
// storage root), watches each through its state monitor, keeps every VMM's
// SledVmmState (bumping its generation at each change it observes), rings
// the control plane's doorbell when anything changes, keeps its registry on
// disk so that a restarted agent adopts the VMMs still running, and accounts
// the sled's CPUs and memory.
//
// It speaks only domain types. The VMM servers are reached through the
// VMMClient interface (package sledagent/vmmclient adapts the generated
// clients of the VMM server's versions); the control plane through the Bell
// interface (package sledagent/cpclient); the HTTP API of the agent lives in
// sledagent/api and its version packages, which convert wire types to these.
package sledagent
