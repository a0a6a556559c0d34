#!/usr/bin/env bash
# Runs every fuzz target in the module for a budget each (default 20000x: twenty thousand inputs).
# New inputs that fail are kept by go test under testdata/fuzz and must be committed.
#
# The budget is a count of inputs, not a duration, on purpose. Go 1.26's fuzz coordinator can report a
# bare "context deadline exceeded" failure when a duration -fuzztime expires while a worker is mid-input
# (golang/go#75804, fixed in Go 1.27). A count has no deadline to race, so a failure here is a finding.
# A duration (for example `make fuzz FUZZTIME=60s`) still works for longer runs by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-20000x}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
count=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' || true)
	for t in $targets; do
		echo "fuzz $pkg $t ($budget)"
		log="$logs/$(echo "$pkg" | tr / _)-$t.log"
		if ! go test -run "^$" -fuzz "^$t\$" -fuzztime "$budget" -fuzzminimizetime=100x "$pkg" >"$log" 2>&1; then
			# A duration budget can end in the coordinator's own deadline error (see above): that is
			# not a finding unless go test wrote a failing input.
			if [[ $budget != *x ]] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
				echo "  (ended by the fuzz coordinator's deadline, golang/go#75804; no failing input)"
			else
				cat "$log"
				exit 1
			fi
		fi
		grep -E '^fuzz: elapsed' "$log" | tail -1 | sed 's/^/  /' || true
		count=$((count + 1))
	done
done
echo "fuzz: $count targets ran for $budget each"
