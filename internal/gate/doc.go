// Package gate is the compatibility gate's machinery: the checks that
// `make compat` (go run ./cmd/compat) runs to prove that no released
// client, spec, device payload or server is broken.
//
// The phases, each timed and reported (Run):
//
//	lock       released contracts unchanged, LOCK lines only added (internal/apicheck)
//	contract   each contract in development diffed against the newest release of its API
//	           with oasdiff; every breaking change declared in CHANGES.md, no stale
//	           declaration (contract.go, changes.go)
//	manifest   corpus/MANIFEST: no file changed, missing or unlisted; after-files differ
//	           and carry a reason (package corpus)
//	history    the corpus of a released version has the MANIFEST lines it was released
//	           with (history.go)
//	fresh      the corpus of versions in development is what the generator writes
//	replay     every corpus file decodes, converts and re-encodes with today's code
//	releases   corpus/RELEASES parses; each release's waggle builds from its commit;
//	           migrating both ways and cross-driving the CLIs need KVM (releases.go)
//
// Every check has a test that breaks it on purpose and sees it fail.
package gate
