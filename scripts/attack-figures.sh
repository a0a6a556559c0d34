#!/usr/bin/env bash
# Plays the attacks of the security issue against a real `waggle server` and prints, for each, what the server
# answers and its open fds, threads and RSS before and after (scripts/attackfigures). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/waggle ./cmd/waggle
go run ./scripts/attackfigures -waggle bin/waggle
