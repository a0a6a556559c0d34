// Package gate is the compatibility gate's machinery: the checks that
// `make compat` (go run ./cmd/compat) runs to prove that no released
// client, spec, device payload or server is broken.
//
// The phases, each timed and reported (Run):
//
//	lock       released contracts unchanged, LOCK lines only added (internal/apicheck)
//	contract   each contract in development diffed against the newest release of its API
//	           with oasdiff; every breaking change declared in CHANGES.md, one declaration
//	           per change (rule, operation and what changed), no stale declaration
//	           (contract.go, changes.go)
//	manifest   corpus/MANIFEST: no file changed, missing or unlisted; after-files differ
//	           and carry a reason (package corpus)
//	history    the corpus of a released version has exactly the MANIFEST lines it was
//	           released with, after-files aside, and each after-file's line is as first
//	           committed; every RELEASES line ever committed is kept, releases follow git
//	           history; captured files name a commit of HEAD's history (history.go)
//	fresh      every contract has a corpus and every corpus folder a contract; the corpus
//	           of versions in development is what the generator writes; captured files
//	           carry their provenance (corpus/CAPTURED)
//	replay     every corpus file decodes, converts and re-encodes with today's code
//	releases   corpus/RELEASES parses; each release's waggle builds from its commit, and
//	           HEAD's from the work tree; without a VM, each release's server is driven by
//	           HEAD's CLI and HEAD's by the release's (crossdrive.go); on KVM a running
//	           ticker migrates from each release into HEAD by HEAD's CLI and back by the
//	           release's, its guest counting on (migrate.go); without KVM that is
//	           skipped, saying so (releases.go); for each release that serves
//	           control-plane/v1, its control plane runs with HEAD's sled agents and
//	           HEAD's with its sled agents, each over its own embedded PostgreSQL,
//	           driven through the external API: without a VM the sleds register and
//	           are listed, the watcher reaches them, the doorbell answers, a bad spec,
//	           a name in use and wrong tokens are refused, a start the sleds cannot
//	           run unwinds leaving nothing; on KVM an instance is started, migrated
//	           between the sleds, stopped and deleted, nothing left (fleet.go)
//
// Every check has a test that breaks it on purpose and sees it fail.
package gate
