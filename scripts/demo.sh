#!/usr/bin/env bash
# The README's main job: start a VMM server of the demo's own on a free loopback port, create a VM from
# examples/, run it, show its serial output live, stop it and clean up. It never drives a server that
# was running before: its server listens on a port the kernel picks, and the demo reads that address
# from the server's log. When anything fails, the server's log is kept, and its path printed.
#
# Environment: WAGGLE_BIN (default bin/waggle), WAGGLE_DEMO_LISTEN (default 127.0.0.1:0, a free port).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${WAGGLE_BIN:-bin/waggle}
listen=${WAGGLE_DEMO_LISTEN:-127.0.0.1:0}
[ -x "$bin" ] || { echo "demo: $bin is missing; build it with \`make build\` (\`make demo\` does)" >&2; exit 1; }

logdir=$(mktemp -d "${TMPDIR:-/tmp}/waggle-demo.XXXXXX")
log=$logdir/server.log
server=
done_ok=0
cleanup() {
	if [ -n "$server" ]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	if [ "$done_ok" = 1 ]; then
		rm -rf "$logdir"
	else
		echo "demo FAILED; the server's log is kept in $log" >&2
	fi
}
trap cleanup EXIT
fail() {
	echo "demo: $*" >&2
	if [ -s "$log" ]; then
		echo "-- the last lines of the server's log ($log):" >&2
		tail -n 20 "$log" >&2
	fi
	exit 1
}

"$bin" server -listen "$listen" 2>"$log" &
server=$!
# The server logs `msg="waggle server listening" addr=HOST:PORT` once it accepts requests.
addr=
for _ in $(seq 100); do
	addr=$(sed -n 's/.*waggle server listening.* addr=\([^ ]*\).*/\1/p' "$log" | head -n 1)
	[ -n "$addr" ] && break
	kill -0 "$server" 2>/dev/null || { wait "$server" || true; server=; fail "the server did not start"; }
	sleep 0.1
done
[ -n "$addr" ] || fail "the server did not say where it listens within 10 s"
export WAGGLE_SERVER=$addr
# The CLI finds the token the server wrote for this address; a token file named for another server
# would not do.
unset WAGGLE_TOKEN_FILE

if [ ! -e /dev/kvm ]; then
	fail "this machine has no /dev/kvm: waggle runs its VMs on KVM (enable virtualization, or nested virtualization in a VM)"
fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	fail "/dev/kvm is not readable and writable by $(id -un): add yourself to its group ($(stat -c %G /dev/kvm)) and log in again"
fi

echo "== waggle server on $addr (its own, on a free port); creating a VM from examples/ticker.toml"
"$bin" vm create -config examples/ticker.toml || fail "vm create failed"
echo "== run"
"$bin" vm run || fail "vm run failed"
echo "== serial console (until tick 10)"
"$bin" vm serial -until "tick 10" -timeout 30s </dev/null || fail "the console did not show tick 10"
echo
echo "== stop"
"$bin" vm stop || fail "vm stop failed"
"$bin" vm get
done_ok=1
echo "== demo done"
