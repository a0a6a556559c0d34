#!/usr/bin/env bash
# The README's main job, the whole stack from nothing: a control plane on its own embedded PostgreSQL,
# two sled agents on loopback, and an instance created, started, shown ticking, live-migrated from one
# sled to the other while it ticks, stopped and deleted, through `waggle instance`. Every process is the
# demo's own, on ports the kernel picks (read from their logs); nothing running before is touched. Each
# step is printed; on failure the logs are kept and their directory printed.
#
# Environment: WAGGLE_BIN (default bin/waggle).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${WAGGLE_BIN:-bin/waggle}
[ -x "$bin" ] || { echo "demo: $bin is missing; build it with \`make build\` (\`make demo\` does)" >&2; exit 1; }
bin=$(realpath "$bin")
start_ns=$(date +%s%N)

# The embedded PostgreSQL runs as its own account when the demo runs as root: the directory must let it in.
dir=$(mktemp -d "${TMPDIR:-/tmp}/waggle-demo.XXXXXX")
chmod 0711 "$dir"
pids=()
done_ok=0
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "$done_ok" = 1 ]; then
		rm -rf "$dir"
	else
		echo "demo FAILED; the logs are kept in $dir (*.log)" >&2
	fi
}
trap cleanup EXIT
fail() {
	echo "demo: $*" >&2
	for l in "$dir"/*.log; do
		[ -s "$l" ] || continue
		echo "-- the last lines of $l:" >&2
		tail -n 8 "$l" >&2
	done
	exit 1
}
step() {
	local ms=$((($(date +%s%N) - start_ns) / 1000000))
	printf '== [%3d.%ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"
}
# listening LOG WHAT: waits for a process's `msg="WHAT listening" addr=HOST:PORT` and prints the address.
listening() {
	local a
	for _ in $(seq 1200); do
		a=$(sed -n "s/.*$2 listening.* addr=\([^ ]*\).*/\1/p" "$1" | head -n 1)
		[ -n "$a" ] && { echo "$a"; return; }
		sleep 0.1
	done
	fail "$2 did not say where it listens within 120 s (the first start of the control plane makes its PostgreSQL cluster)"
}
[ -e /dev/kvm ] || fail "this machine has no /dev/kvm: waggle runs its VMs on KVM (enable virtualization, or nested virtualization in a VM)"

# Three tokens: the sled agents' to the control plane, the control plane's to the agents, and users'.
for t in cp sled api; do head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$dir/$t.token"; chmod 600 "$dir/$t.token"; done

step "control plane: its own PostgreSQL in $dir/cp, the internal API and the external API on free ports"
"$bin" control-plane -listen 127.0.0.1:0 -api-listen 127.0.0.1:0 -auth-token-file "$dir/cp.token" \
	-api-token-file "$dir/api.token" -sled-agent-token-file "$dir/sled.token" -data-dir "$dir/cp" \
	-watch-interval 5s -sled-lost-after 1m 2>"$dir/control-plane.log" &
pids+=($!)
cp_addr=$(listening "$dir/control-plane.log" "waggle control-plane")
api_addr=$(listening "$dir/control-plane.log" "external API")
export WAGGLE_CONTROL_PLANE=$api_addr WAGGLE_CONTROL_PLANE_TOKEN_FILE=$dir/api.token

for n in 1 2; do
	lo=$((12500 + n * 50)); hi=$((lo + 49))
	step "sled agent $n: VMM servers on ports $lo-$hi, registering with the control plane"
	"$bin" sled-agent -listen 127.0.0.1:0 -auth-token-file "$dir/sled.token" -root "$dir/sled$n" \
		-cpus 2 -memory-mib 1024 -vmm-ports "$lo-$hi" \
		-control-plane "http://$cp_addr" -control-plane-token-file "$dir/cp.token" 2>"$dir/sled$n.log" &
	pids+=($!)
	listening "$dir/sled$n.log" "waggle sled-agent" >/dev/null
done
for _ in $(seq 100); do
	[ "$("$bin" sled list -o json 2>/dev/null | grep -o '"state": *"active"' | wc -l)" = 2 ] && break
	sleep 0.1
done
"$bin" sled list || fail "sled list failed"

step "create and start the instance demo from examples/ticker.json"
"$bin" instance create -name demo -spec examples/ticker.json -start || fail "create -start failed"
"$bin" instance get demo
step "its console, until tick 5"
"$bin" instance serial -until "tick 5" -timeout 30s demo </dev/null || fail "the console did not show tick 5"
echo
step "live-migrate it to the other sled, ticking on"
"$bin" instance migrate demo || fail "migrate failed"
"$bin" instance get demo
step "its console on the new sled: what the guest printed before the migration came with it, and it ticks on"
"$bin" instance serial -until "tick" -timeout 30s demo </dev/null || fail "the console showed no tick after the migration"
echo
step "stop"
"$bin" instance stop demo || fail "stop failed"
step "delete"
"$bin" instance delete demo || fail "delete failed"
"$bin" instance list
done_ok=1
step "demo done"
