// Package corpus is the frozen record of what every version of waggle's
// APIs wrote, and the replay that proves today's code still reads it.
//
// Layout, under the repository's corpus/ directory:
//
//	corpus/<api>/v<N>/<kind>/<name>.json   one wire object as version N wrote it
//	corpus/<api>/v<N>/<kind>/<name>.after.json
//	                                       an accepted difference: what today's code
//	                                       writes instead, with its reason in MANIFEST
//	corpus/MANIFEST                        the SHA-256 of every file (manifest.go)
//	corpus/RELEASES                        every release and its commit (releases.go)
//	corpus/CAPTURED                        the provenance of captured files: the commit and
//	                                       command that captured each (capture.go)
//
// Files come in two sorts. Synthesized files are written by Generate
// (`go run ./cmd/corpusgen`): deterministic, so the same commit writes the
// same bytes, with every optional field filled, every enum value, every
// component kind and edge values. Captured files come from running servers
// (a ticker, a disk guest with data, a migrated VM's payloads); capturing
// needs KVM and goes through the CaptureHook (capture.go); only the capture
// command writes them, their MANIFEST lines and their provenance.
//
// Kinds: JSON wire objects (spec, ensure-request, state-change-request,
// migrate-expect-request, and one kind per response body, named after its
// schema; synth_v1.go), migration envelopes, the binary state the migration
// stream carries (device payloads, machine state, stream frames, and what
// the build reads), each stored as JSON with its bytes in base64 (binary.go
// says the shapes), and crossings between versions of an API (cross.go).
//
// A new version of an API adds a Generator (generate.go) and its replay
// handlers (NewReplayer); CheckCoverage fails until it has both.
//
// The release rule. A version of an API is released when its contract
// (openapi/<api>/v<N>.yaml) is listed in openapi/LOCK. The corpus of a
// version in development may be regenerated at will: Generate rewrites its
// files and its MANIFEST lines. Once the version is released its files
// never change: Generate refuses to touch them, and CheckManifest fails on
// a changed, missing or unlisted file. The only way to accept a difference
// is a reviewed <name>.after.json sibling whose reason is in MANIFEST.
//
// Releasing version N of an API, in one reviewed commit:
//
//  1. make sure `go run ./cmd/corpusgen` leaves the tree unchanged and
//     `go run ./cmd/compat` passes (the corpus is fresh and replays);
//  2. add the contract's line to openapi/LOCK: its SHA-256 and path
//     (sha256sum openapi/<api>/v<N>.yaml);
//  3. add a line to corpus/RELEASES naming the release, the commit whose
//     code serves it (the parent of this commit, whose tree is the same but
//     for these index lines) and the API versions it serves;
//  4. commit LOCK, RELEASES and the corpus together; `make compat` then
//     shows the version frozen.
//
// From then on the gate guarantees: the contract never changes (LOCK); the
// corpus never changes and gains no files but after-files, each fixed once
// committed (MANIFEST and its history); the RELEASES line stays as it was
// (its history); today's code still decodes, converts and re-encodes every
// file of it; and each release's waggle still builds from its commit, and
// its server and CLI still work with HEAD's on the endpoints that need no
// VM (and, on KVM, it migrates both ways).
//
// Replay (replay.go, replay_v1.go, replay_state.go) decodes every file with today's code of its version:
// specs and requests decode, convert to spec.Spec and re-encode to the same
// bytes; specs cross into every other registered version both ways; response
// bodies decode strictly with the generated client types; device payloads
// import into today's devices and export again to the same bytes; machine
// state and frames decode and re-encode byte for byte; envelopes are
// accepted by the migration target's decoder.
package corpus
