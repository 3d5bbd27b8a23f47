#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test userbpf:
# the Debian packages the end-to-end tests drive (bpftrace, bcc and libbpf
# tools), a C toolchain for the sample apps, and zlib for the rewriter's
# real-library tests. Safe to run again: it installs only what is missing.
set -euo pipefail
pkgs=(bpftrace bpfcc-tools libbpf-tools bpftool clang llvm libbpf-dev libelf-dev systemtap-sdt-dev linux-headers-amd64 strace gdb curl zlib1g-dev gcc g++ make util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "userbpf setup: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "userbpf setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Prometheus (the server `userbpf export` is tested against) without its
# recommended exporters and tools.
if ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
  if [ "$(id -u)" != 0 ]; then
    echo "userbpf setup: missing Debian package: prometheus (sudo apt-get install --no-install-recommends prometheus)" >&2
    exit 1
  fi
  echo "userbpf setup: installing prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
command -v cargo >/dev/null || { echo "userbpf setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
# bpftrace 0.23 and 0.27 (Debian 13 and sid) for the end-to-end tests,
# each in a chroot under .cache/chroots, made once; `scripts/test.sh` mounts
# them for its run only (`scripts/chroots.sh` alone mounts them to stay).
if [ "$(id -u)" = 0 ]; then
  bash "$(dirname "$0")/chroots.sh" --make-only
else
  echo "userbpf setup: not root, so the bpftrace 0.23/0.27 chroots are not made or mounted (their tests will fail; run scripts/chroots.sh as root)" >&2
fi
