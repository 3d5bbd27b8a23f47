#!/usr/bin/env bash
# The main job: trace a sample app with stock bpftrace as an ordinary user.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "userbpf demo: the end-to-end path (agent + syscall server) is not implemented yet (issue 5)." >&2
exit 1
