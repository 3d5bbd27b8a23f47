#!/usr/bin/env bash
# Makes the Debian chroots whose bpftrace the end-to-end tests run besides
# Debian 12's own 0.17: Debian 13 "trixie" (bpftrace 0.23) and sid (0.27),
# from Debian's own packages. Each is made once into the cache directory
# ($USERBPF_CHROOTS, default .cache/chroots of the repository; about 30 s
# and 600 MB each) and reused after that.
#
# Every run also mounts what newer bpftrace needs inside: /proc (its own
# procfs), /sys (bound with its submounts, tracefs included, for the kernel
# oracle) and /dev (bound read-only, without its submounts, so removing a
# chroot can never delete the host's device nodes: run `scripts/chroots.sh
# --unmount` before deleting the cache anyway). `--make-only` makes the
# chroots and mounts nothing (what `scripts/setup.sh` does: the tests mount
# them in a mount namespace of their own, `scripts/test.sh`).
#
# The suites must match `tests::CHROOT_SUITES` (crates/tests/src/lib.rs).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${USERBPF_CHROOTS:-$repo/.cache/chroots}
suites=(trixie sid)
mirror=${USERBPF_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
  echo "userbpf chroots: making and mounting chroots needs root" >&2
  exit 1
fi

unmount() {
  local root=$1
  for m in dev sys proc; do
    if mountpoint -q "$root/$m"; then
      umount -R "$root/$m"
    fi
  done
}

make_only=false
if [ "${1:-}" = --make-only ]; then
  make_only=true
fi

if [ "${1:-}" = --unmount ]; then
  for s in "${suites[@]}"; do
    [ -d "$dir/$s" ] && unmount "$dir/$s"
  done
  exit 0
fi

command -v debootstrap >/dev/null || {
  echo "userbpf chroots: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# The kernel oracle's bpftrace reads tracefs where newer releases look first.
if ! $make_only && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

mkdir -p "$dir"
for s in "${suites[@]}"; do
  root=$dir/$s
  if [ ! -x "$root/usr/bin/bpftrace" ]; then
    echo "userbpf chroots: debootstrap $s (bpftrace from Debian $s) into $root"
    rm -rf "$root.partial"
    debootstrap --variant=minbase --include=bpftrace "$s" "$root.partial" "$mirror" \
      >"$dir/$s.log" 2>&1 || {
      echo "userbpf chroots: debootstrap $s failed; see $dir/$s.log" >&2
      tail -5 "$dir/$s.log" >&2
      exit 1
    }
    mv "$root.partial" "$root"
  fi
  if $make_only; then
    echo "userbpf chroots: $s made (not mounted)"
    continue
  fi
  mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
  if ! mountpoint -q "$root/sys"; then
    mount --rbind /sys "$root/sys"
    mount --make-rslave "$root/sys"
  fi
  if ! mountpoint -q "$root/dev"; then
    mount --bind /dev "$root/dev"
    mount -o remount,bind,ro "$root/dev"
  fi
  echo "userbpf chroots: $s ready: $(chroot "$root" bpftrace --version)"
done
