#!/usr/bin/env bash
# Runs every userbpf test: unit tests, the conformance suite (interpreter and
# JIT), differential tests and the end-to-end tests with real bpftrace.
#
# As root, the run happens in a private mount namespace of its own, where
# the chroots that setup made for bpftrace 0.23 and 0.27 get their /proc,
# /sys and /dev mounts (scripts/chroots.sh): the mounts vanish with the run,
# whether it passes, fails or is killed, so nothing stays mounted inside the
# checkout for whoever removes it next (`scripts/demo.sh` mounts nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && [ -z "${USERBPF_TEST_MOUNT_NS:-}" ] && command -v unshare >/dev/null; then
  export USERBPF_TEST_MOUNT_NS=1
  exec unshare --mount --propagation private bash "$0" "$@"
fi
bash scripts/setup.sh
if [ "$(id -u)" = 0 ]; then
  bash scripts/chroots.sh
fi
exec cargo test --workspace --release "$@"
