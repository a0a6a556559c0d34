// Package controlplane is the control plane's runtime: it keeps the
// fleet's truth (sleds, instances, their VMMs and migrations) in a Store,
// learns of every change of a VMM through the doorbell its sled agent
// rings (then pulls the VMM's state from the agent itself), checks every
// VMM now and then in case a ring was lost (the instance watcher), and
// retires terminal VMMs on their sleds once their final state is stored.
// It also carries out what users ask (Operations, ops_*.go): instances are
// created in one write, and started, stopped, rebooted, migrated and
// deleted by sagas (package controlplane/saga), whose steps each have an
// undo, whose progress is stored after each step, and of which one at a
// time holds an instance (its updater lock).
//
// It speaks only domain types (controlplane/model). The database is package
// controlplane/db; sled agents are reached through the SledClient interface
// (package controlplane/sledclient adapts the generated clients of the
// sled-agent API's versions); the HTTP side of the internal API lives in
// controlplane/internalapi and its version packages.
package controlplane
