#!/usr/bin/env bash
# kvm-emu.sh: run a command where /dev/kvm works, on a machine without KVM.
#
# Boots a Debian kernel in QEMU under pure software emulation (TCG) with a
# CPU model that has AMD SVM and nested paging, loads kvm_amd there (so the
# guest has /dev/kvm), mounts the host's / read-only over virtio 9p, mounts
# the writable directories (default: /work, or the repository root) read-write,
# chroots into the host root and runs the command from the current directory.
# Its exit status is this script's exit status.
#
#   scripts/kvm-emu.sh [--] COMMAND [ARG...]
#   e.g. go test -c -o /tmp/vmm.test ./vmm &&
#        (cd vmm && ../scripts/kvm-emu.sh /tmp/vmm.test -test.v -test.timeout 30m)
#
# Build test binaries on the host (go test -c): compiling under TCG is slow
# (a go build in the guest works, and reuses the host's build cache, but is
# slow). Run a test binary from its package's directory, as go test does.
# The guest boots in 10-30 s (host load). Everything in it, and the nested
# KVM guests, runs under TCG, many times slower than on hardware, so
# timing-sensitive tests can fail here that pass on real KVM.
# The command's stdout and stderr arrive (merged) on this script's stdout.
# Needs root for apt-get on first use; tested on Debian 12 with QEMU 7.2.
#
# Environment:
#   KVM_EMU_MEM      guest RAM (default 8G)
#   KVM_EMU_SMP      guest CPUs (default: host CPUs, at most 4)
#   KVM_EMU_CPU      QEMU CPU model (default max; it has svm and npt under TCG)
#   KVM_EMU_KVER     Debian kernel ABI, e.g. 6.1.0-47-amd64 (default: newest
#                    cached, else what linux-image-amd64 depends on)
#   KVM_EMU_RW       colon-separated host dirs mounted writable (default /work
#                    if the cwd is under it, else the git toplevel or cwd)
#   KVM_EMU_CACHE    cache dir (default $XDG_CACHE_HOME/waggle/kvm-emu or
#                    /var/tmp/waggle-kvm-emu)
#   KVM_EMU_TIMEOUT  kill QEMU after this many seconds (default 0: never)
#   KVM_EMU_APPEND   extra kernel command line, e.g. kvm_amd.npt=0
#   KVM_EMU_TSC      the guest kernel's tsc= option (default reliable: see
#                    below; "unstable" for the guest kernel's own checks)
#   KVM_EMU_THP      guest transparent_hugepage mode (default: the host's, so
#                    that tests see the same THP behaviour as on the host)
#   KVM_EMU_VERBOSE  1: copy the guest console to stderr as well
#   KVM_EMU_KEEP     1: keep the job directory (console log) afterwards
#   KVM_EMU_OVERLAY  colon-separated host dirs made writable in the guest by an
#                    overlay on tmpfs, changes discarded (default: go env GOCACHE)
#   KVM_EMU_ENV      extra "NAME=value" words exported in the guest (space-separated)
set -euo pipefail

die() { echo "kvm-emu: $*" >&2; exit 125; }
log() { echo "kvm-emu: $*" >&2; }

[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || die "usage: $0 [--] COMMAND [ARG...]"

MEM=${KVM_EMU_MEM:-8G}
ncpu=$(nproc)
SMP=${KVM_EMU_SMP:-$(( ncpu > 4 ? 4 : ncpu ))}
CPU=${KVM_EMU_CPU:-max}
TIMEOUT=${KVM_EMU_TIMEOUT:-0}
if [ -n "${KVM_EMU_CACHE:-}" ]; then
	CACHE=$KVM_EMU_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
	CACHE=$XDG_CACHE_HOME/waggle/kvm-emu
else
	CACHE=/var/tmp/waggle-kvm-emu
fi
mkdir -p "$CACHE"

# The kernel: KVM_EMU_KVER, else the newest one in the cache, else the one
# Debian's linux-image-amd64 depends on now (bookworm: 6.1).
KVER=${KVM_EMU_KVER:-}
if [ -z "$KVER" ]; then
	KVER=$( (ls -d "$CACHE"/kernel-*-amd64 2>/dev/null || true) | sed 's|.*/kernel-||' | sort -V | tail -n 1)
fi
if [ -z "$KVER" ]; then
	KVER=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/.*Depends: linux-image-\([0-9].*-amd64\)\(-unsigned\)\{0,1\}$/\1/p' | head -n 1)
	[ -n "$KVER" ] || die "cannot tell which kernel to use: set KVM_EMU_KVER (e.g. 6.1.0-47-amd64)"
fi

# --- host packages -----------------------------------------------------------
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
# /bin/busybox must be the static one (it runs in the initramfs, with no libc).
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need_pkgs+=(kmod)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	apt-get install -y "${need_pkgs[@]}" >&2 || die "apt-get install ${need_pkgs[*]} failed"
fi
PATH=$PATH:/sbin:/usr/sbin

# --- kernel ------------------------------------------------------------------
KDIR=$CACHE/kernel-$KVER
if [ ! -f "$KDIR/boot/vmlinuz-$KVER" ]; then
	log "fetching linux-image-$KVER"
	tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
	(cd "$tmp" && { apt-get download "linux-image-$KVER-unsigned" >&2 ||
		apt-get download "linux-image-$KVER" >&2; }) ||
		die "apt-get download linux-image-$KVER failed (try apt-get update, or set KVM_EMU_KVER)"
	rm -rf "$KDIR.tmp"
	dpkg-deb -x "$tmp"/linux-image-*.deb "$KDIR.tmp"
	depmod -b "$KDIR.tmp" "$KVER"
	rm -rf "$tmp" "$KDIR"
	mv "$KDIR.tmp" "$KDIR"
fi

# --- initramfs ---------------------------------------------------------------
MODULES="virtio_pci virtio_console 9pnet_virtio 9p overlay kvm_amd"
read -r -d '' INIT <<'EOF' || true
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r ko; do insmod "$ko" || echo "kvm-emu-init: insmod $ko failed"; done < /modules.list
ip link set lo up
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n 1; }
fail() { echo "kvm-emu-init: $*"; sync; poweroff -f; }
o=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $o,cache=mmap job /job || fail "cannot mount job share"
mount -t 9p -o $o,ro,cache=loose hostroot /newroot || fail "cannot mount host root"
i=0
for d in $(arg kvmemu.rw | tr ':' ' '); do
	mount -t 9p -o $o,cache=mmap rw$i "/newroot$d" || fail "cannot mount $d"
	i=$((i+1))
done
i=0
for d in $(arg kvmemu.overlay | tr ':' ' '); do
	[ -d "/newroot$d" ] || continue
	mkdir -p /ovl/$i/u /ovl/$i/w
	mount -t overlay overlay -o "lowerdir=/newroot$d,upperdir=/ovl/$i/u,workdir=/ovl/$i/w" "/newroot$d" ||
		echo "kvm-emu-init: cannot overlay $d"
	i=$((i+1))
done
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mkdir -p /newroot/run/kvm-emu
mount --bind /job /newroot/run/kvm-emu
if [ -c /dev/kvm ]; then echo ok > /job/kvm.txt; else echo "no /dev/kvm" > /job/kvm.txt; fi
dmesg > /job/dmesg.boot.txt
# The command's output goes to the host over a virtio serial port (a plain
# file on the host), not over 9p, so it reaches the host even if 9p hangs.
out=/job/output
for p in /sys/class/virtio-ports/*; do
	[ "$(cat "$p/name" 2>/dev/null)" = kvmemu.out ] && out=/dev/${p##*/}
done
/bin/busybox chroot /newroot /bin/sh /run/kvm-emu/cmd.sh > "$out" 2>&1 < /dev/null
echo $? > /job/rc.tmp
dmesg > /job/dmesg.txt
mv /job/rc.tmp /job/rc
sync
sleep 1
poweroff -f
EOF
ihash=$( { echo "$INIT"; echo "$MODULES"; echo "$KVER"; sha256sum /bin/busybox; } | sha256sum | cut -c1-16)
INITRD=$CACHE/initramfs-$KVER-$ihash.cpio.gz
if [ ! -f "$INITRD" ]; then
	log "building $INITRD"
	root=$(mktemp -d "$CACHE/initramfs.XXXXXX")
	mkdir -p "$root"/{bin,proc,sys,dev,job,newroot,tmp,ovl}
	cp /bin/busybox "$root/bin/busybox"
	printf '%s\n' "$INIT" > "$root/init"
	chmod 755 "$root/init"
	: > "$root/modules.list"
	for m in $MODULES; do
		modprobe -d "$KDIR" -S "$KVER" --show-depends "$m" | while read -r kw path _; do
			[ "$kw" = insmod ] || continue
			rel=${path#"$KDIR"}
			grep -qxF "$rel" "$root/modules.list" && continue
			mkdir -p "$root$(dirname "$rel")"
			cp "$path" "$root$rel"
			echo "$rel" >> "$root/modules.list"
		done
	done
	(cd "$root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null) | gzip -1 > "$INITRD.tmp"
	mv "$INITRD.tmp" "$INITRD"
	rm -rf "$root"
fi

# --- job ---------------------------------------------------------------------
cwd=$(pwd -P)
if [ -n "${KVM_EMU_RW:-}" ]; then
	RW=$KVM_EMU_RW
elif [ -d /work ] && [[ $cwd == /work/* || $cwd == /work ]]; then
	RW=/work
else
	RW=$(git -C "$cwd" rev-parse --show-toplevel 2>/dev/null || echo "$cwd")
fi
# Go in the guest: the host's settings, module cache (read-only) and build
# cache (overlaid writable in the guest, changes discarded), so a go build
# there reuses what the host built; there is no network in the guest.
goenv=()
OVERLAY=${KVM_EMU_OVERLAY-}
if command -v go >/dev/null; then
	for v in GOENV GOPATH GOMODCACHE GOCACHE GOFLAGS GOROOT; do
		val=$(go env "$v" 2>/dev/null) || continue
		[ -n "$val" ] && goenv+=("$v=$val")
		[ "$v" = GOCACHE ] && [ -d "$val" ] && [ -z "${KVM_EMU_OVERLAY+x}" ] && OVERLAY=$val
	done
fi
mkdir -p "$CACHE/jobs"
JOB=$(mktemp -d "$CACHE/jobs/job.XXXXXX")
chmod 755 "$JOB"
cleanup() {
	[ -n "${tailpid:-}" ] && kill "$tailpid" 2>/dev/null
	[ -n "${vpid:-}" ] && kill "$vpid" 2>/dev/null
	[ "${KVM_EMU_KEEP:-0}" = 1 ] || rm -rf "$JOB"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
{
	echo "cd $(printf %q "$cwd") || exit 126"
	echo "export PATH=$(printf %q "$PATH")"
	echo "export HOME=/tmp/home TMPDIR=/tmp GOTOOLCHAIN=local GOPROXY=off"
	for kv in "${goenv[@]}"; do echo "export $(printf %q "$kv")"; done
	echo "export USER=$(printf %q "$(id -un)") TERM=dumb KVM_EMU=1"
	for kv in ${KVM_EMU_ENV:-}; do echo "export $(printf %q "$kv")"; done
	echo "mkdir -p \$HOME"
	printf 'exec'
	printf ' %q' "$@"
	echo
} > "$JOB/cmd.sh"
: > "$JOB/output"

# TCG gives every CPU one TSC, but the guest kernel's TSC synchronization
# check, timed under emulation, sees warps and marks the TSC unstable. KVM
# then runs its nested guests in its unstable-TSC mode (offsets moved at each
# vCPU load, catch-up), which real hosts do not, and the test guests pace
# themselves by the TSC. tsc=reliable skips the check.
TSC=${KVM_EMU_TSC:-reliable}
THP=${KVM_EMU_THP:-$(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)}
THP=${THP:-madvise}
qemu=(qemu-system-x86_64
	-accel tcg,thread=multi -cpu "$CPU" -m "$MEM" -smp "$SMP"
	-nodefaults -display none -no-reboot -nic none
	-serial "file:$JOB/console.log" -monitor none
	-kernel "$KDIR/boot/vmlinuz-$KVER" -initrd "$INITRD"
	-device virtio-serial-pci -chardev "file,id=out,path=$JOB/output"
	-device virtserialport,chardev=out,name=kvmemu.out
	-append "console=ttyS0 panic=-1 loglevel=4 kvmemu.rw=$RW kvmemu.overlay=$OVERLAY transparent_hugepage=$THP tsc=$TSC ${KVM_EMU_APPEND:-}"
	-virtfs "local,path=$JOB,mount_tag=job,security_model=none,multidevs=remap"
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
i=0
IFS=: read -r -a rwdirs <<< "$RW"
for d in "${rwdirs[@]}"; do
	[ -d "$d" ] || die "writable dir $d does not exist"
	qemu+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
	i=$((i+1))
done

start=$(date +%s)
tail -n +1 -f "$JOB/output" &
tailpid=$!
if [ "${KVM_EMU_VERBOSE:-0}" = 1 ]; then
	: > "$JOB/console.log"
	tail -n +1 -f "$JOB/console.log" >&2 &
	ctail=$!
fi
if [ "$TIMEOUT" != 0 ]; then
	timeout --foreground "$TIMEOUT" "${qemu[@]}" </dev/null &
else
	"${qemu[@]}" </dev/null &
fi
vpid=$!
set +e
wait "$vpid"
qrc=$?
vpid=
sleep 0.5 # let tail print the last of the output
kill "$tailpid" 2>/dev/null
wait "$tailpid" 2>/dev/null
tailpid=
if [ -n "${ctail:-}" ]; then
	kill "$ctail" 2>/dev/null
	wait "$ctail" 2>/dev/null
fi
log "guest ran $(( $(date +%s) - start ))s"
if [ ! -f "$JOB/rc" ]; then
	log "no exit status from the guest (qemu exit $qrc); console log tail:"
	tail -n 40 "$JOB/console.log" >&2 || true
	KVM_EMU_KEEP=1
	log "job dir kept: $JOB"
	exit 125
fi
if [ "$(cat "$JOB/kvm.txt" 2>/dev/null)" != ok ]; then
	log "warning: the guest had no /dev/kvm; its kernel said:"
	grep -iE 'kvm|svm' "$JOB/dmesg.txt" >&2
fi
rc=$(cat "$JOB/rc")
exit "${rc:-125}"
