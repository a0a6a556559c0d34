#!/usr/bin/env bash
# Summarises a `go test -v` log: the package lines, every failure, how many
# KVM tests ran (see internal/kvmtest), and a closing "N passed, N failed" line.
# On a machine with /dev/kvm a KVM test that skipped is a failure: there, every
# KVM test must run.
set -euo pipefail
log=$1
grep -E '^(ok|FAIL|---)|^\s+--- FAIL|panic:' "$log" | grep -v -- '--- PASS\|--- SKIP' || true
kvm_ran=$(grep -c 'kvmtest: ran on /dev/kvm' "$log" || true)
kvm_skipped=$(grep -c 'kvmtest: skipped' "$log" || true)
passed=$(grep -cE '^\s*--- PASS' "$log" || true)
failed=$(grep -cE '^\s*--- FAIL' "$log" || true)
skipped=$(grep -cE '^\s*--- SKIP' "$log" || true)
echo "KVM tests: $kvm_ran ran, $kvm_skipped skipped"
if [ -e "${KVM_DEVICE:-/dev/kvm}" ] && [ "$kvm_skipped" -gt 0 ]; then
  echo "FAIL: ${KVM_DEVICE:-/dev/kvm} is present, yet $kvm_skipped KVM tests skipped:"
  grep -B1 'kvmtest: skipped' "$log" | grep -E '^\s*=== RUN|--- SKIP' | head -20 || true
  failed=$((failed + kvm_skipped))
  echo "tests: $passed passed, $failed failed, $skipped skipped"
  exit 1
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
