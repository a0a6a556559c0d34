#!/bin/sh
# build.sh OUTDIR - assemble every waggle guest image into OUTDIR/<name>.bin.
#
# Each <name>.asm in this directory is one guest (GNU as, AT&T syntax; not .s,
# which the go tool would take for Go assembly); common.inc is the shared boot
# path and runtime it includes, guest.ld the fixed layout. Only GNU binutils
# (as, ld, objcopy) are needed. The output is byte-reproducible: no
# timestamps or build ids reach the flat binary, and the layout is fixed by
# the linker script, so `make check` can rebuild and cmp against the
# committed images.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
out=$1
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# Silence "has a LOAD segment with RWX permissions" where ld knows the option
# (binutils >= 2.39); the single RWX region is intended.
ldflags="-nostdlib -static --build-id=none -z noexecstack"
if ld --help 2>/dev/null | grep -q -- --no-warn-rwx-segments; then
	ldflags="$ldflags --no-warn-rwx-segments"
fi

export LC_ALL=C
for s in "$src"/*.asm; do
	name=$(basename "$s" .asm)
	as --64 --fatal-warnings -I "$src" -o "$tmp/$name.o" "$s"
	# shellcheck disable=SC2086
	ld $ldflags -T "$src/guest.ld" -o "$tmp/$name.elf" "$tmp/$name.o"
	objcopy -O binary "$tmp/$name.elf" "$tmp/$name.bin"
	mv "$tmp/$name.bin" "$out/$name.bin"
done
