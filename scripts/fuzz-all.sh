#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time (default 5s) each.
# New inputs that fail are kept by go test under testdata/fuzz and must be committed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-5s}
count=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' || true)
	for t in $targets; do
		echo "fuzz $pkg $t ($fuzztime)"
		go test -run "^$" -fuzz "^$t\$" -fuzztime "$fuzztime" -fuzzminimizetime=100x "$pkg" >/tmp/fuzz-$t.log 2>&1 || { cat /tmp/fuzz-$t.log; exit 1; }
		count=$((count + 1))
	done
done
echo "fuzz: $count targets ran for $fuzztime each"
