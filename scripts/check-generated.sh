#!/usr/bin/env bash
# Fails when gen/ differs from what `make generate` makes of openapi/ now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r gen "$tmp/gen.before"
go generate ./gen/... >/dev/null
if ! diff -r "$tmp/gen.before" gen >"$tmp/diff"; then
	cp -r "$tmp/gen.before/." gen/
	echo "generated code in gen/ is stale; run 'make generate' and commit:" >&2
	head -40 "$tmp/diff" >&2
	exit 1
fi
echo "generated code fresh"
