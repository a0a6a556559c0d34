#!/usr/bin/env bash
# Fails when a committed guest image differs from what its source builds to.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
vmm/guest/build.sh "$tmp" >/dev/null
status=0
for img in "$tmp"/*.bin; do
	name=$(basename "$img")
	if ! cmp -s "$img" "vmm/guest/$name"; then
		echo "guest image vmm/guest/$name is stale; run 'make guests' and commit" >&2
		status=1
	fi
done
[ "$status" = 0 ] && echo "guest images fresh"
exit $status
