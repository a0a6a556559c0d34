#!/usr/bin/env bash
# Installs the Debian packages the tests use and a fresh machine may lack
# (curl, binutils, postgresql).
# Each is installed only when its command is missing; without root (or apt)
# it says what is missing and the tests that need it skip with the reason.
set -euo pipefail
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v as >/dev/null || missing+=(binutils)
# PostgreSQL's server programs (the control plane's embedded database and its
# tests): Debian keeps them off PATH, under /usr/lib/postgresql/<major>/bin.
if ! command -v initdb >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "deps: installing ${missing[*]}"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
	echo "deps: missing ${missing[*]} (not root, or no apt-get); the tests that need them will skip"
fi
