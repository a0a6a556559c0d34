#!/usr/bin/env bash
# Follows the README's documented flow with nothing but curl (and coreutils),
# as a user of another language would: create, run, watch, read the console,
# stop. Every request carries the server's bearer token: from $2, else
# $WAGGLE_TOKEN_FILE, else the file a server on this host writes at start
# (waggle/tokens/localhost_PORT under $XDG_STATE_HOME or ~/.local/state).
# Usage: curl-flow.sh host:port [token-file]
set -euo pipefail
cd "$(dirname "$0")/.."
base=http://$1/v1
port=${1##*:}
token_file=${2:-${WAGGLE_TOKEN_FILE:-${XDG_STATE_HOME:-$HOME/.local/state}/waggle/tokens/localhost_$port}}
json='Content-Type: application/json'
fail() { echo "curl flow FAILED: $*" >&2; exit 1; }
[ -r "$token_file" ] || fail "no token file at $token_file (give it as the second argument)"
auth="Authorization: Bearer $(cat "$token_file")"
curl() { command curl -H "$auth" "$@"; }

code=$(command curl -sS -o /dev/null -w '%{http_code}' "$base/instance")
[ "$code" = 401 ] || fail "a request without the token answered $code, not 401"

created=$(curl -sS -X PUT "$base/instance" -H "$json" -d '{
  "properties": {"id": "0c6a4a04-6a2f-4d6e-9f53-2b8b2f6a9a10", "name": "ticker"},
  "spec": '"$(cat examples/ticker.json)"'}')
echo "$created" | grep -q '"state":"creating"' || fail "create: $created"

code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$base/instance/state" -H "$json" -d '{"requested": "run"}')
[ "$code" = 204 ] || fail "run answered $code"

gen=1
for _ in $(seq 20); do
	state=$(curl -sS "$base/instance/state-monitor?gen=$gen&timeout_ms=5000")
	gen=$(echo "$state" | grep -o '"gen":[0-9]*' | cut -d: -f2 | sort -n | tail -n 1) # the newest: history entries carry theirs too
	echo "$state" | grep -q '"state":"running"' && break
done
echo "$state" | grep -q '"state":"running"' || fail "never running: $state"

for _ in $(seq 100); do
	hist=$(curl -sS "$base/instance/serial/history?most_recent=200")
	text=$(echo "$hist" | sed -E 's/.*"data":"([^"]*)".*/\1/' | base64 -d)
	case "$text" in *"tick 2"*) break ;; esac
	sleep 0.1
done
case "$text" in *"tick 2"*) ;; *) fail "no ticks on the console: $text" ;; esac

bad=$(curl -sS -X PUT "$base/instance/state" -H "$json" -d '{"requested": "fly"}')
echo "$bad" | grep -q '"error_code":"invalid_request"' || fail "bad request not refused: $bad"

code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$base/instance/state" -H "$json" -d '{"requested": "stop"}')
[ "$code" = 204 ] || fail "stop answered $code"
for _ in $(seq 20); do
	state=$(curl -sS "$base/instance/state-monitor?gen=$gen&timeout_ms=5000")
	gen=$(echo "$state" | grep -o '"gen":[0-9]*' | cut -d: -f2 | sort -n | tail -n 1) # the newest: history entries carry theirs too
	echo "$state" | grep -q '"state":"destroyed"' && break
done
echo "$state" | grep -q '"state":"destroyed"' || fail "never destroyed: $state"
echo "curl flow ok"
