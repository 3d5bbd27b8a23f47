#!/usr/bin/env bash
# Runs every userbpf test: unit tests, the conformance suite (interpreter and
# JIT), differential tests and the end-to-end tests with real bpftrace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo test --workspace --release "$@"
