#!/usr/bin/env bash
# The README's main job: start a VMM server on loopback, create a VM from
# examples/, run it, show its serial output live, stop it and clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin/waggle
port=${WAGGLE_DEMO_PORT:-12400}
export WAGGLE_SERVER=127.0.0.1:$port
log=$(mktemp)
$bin server -listen "$WAGGLE_SERVER" 2>"$log" &
server=$!
cleanup() {
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 50); do
	$bin vm get >/dev/null 2>&1 && break
	# `vm get` answers 404 no_instance once the server is up.
	$bin vm get 2>&1 | grep -q no_instance && break
	sleep 0.1
done

echo "== waggle server on $WAGGLE_SERVER; creating a VM from examples/ticker.toml"
$bin vm create -config examples/ticker.toml
echo "== run"
$bin vm run
echo "== serial console (until tick 10)"
$bin vm serial -until "tick 10" -timeout 30s </dev/null
echo
echo "== stop"
$bin vm stop
$bin vm get
echo "== demo done"
