#!/usr/bin/env bash
# Summarises a `go test -v` log: the package lines, every failure, how many
# KVM tests ran (see internal/kvmtest), and a closing "N passed, N failed" line.
set -euo pipefail
log=$1
grep -E '^(ok|FAIL|---)|^\s+--- FAIL|panic:' "$log" | grep -v -- '--- PASS\|--- SKIP' || true
kvm_ran=$(grep -c 'kvmtest: ran on /dev/kvm' "$log" || true)
kvm_skipped=$(grep -c 'kvmtest: skipped' "$log" || true)
passed=$(grep -cE '^\s*--- PASS' "$log" || true)
failed=$(grep -cE '^\s*--- FAIL' "$log" || true)
skipped=$(grep -cE '^\s*--- SKIP' "$log" || true)
echo "KVM tests: $kvm_ran ran, $kvm_skipped skipped"
echo "tests: $passed passed, $failed failed, $skipped skipped"
