#!/usr/bin/env bash
# The main job: trace a sample app with stock bpftrace as an ordinary user.
#
# Builds the release cdylibs, compiles crates/tests/apps/sample.c, copies
# everything to a world-readable temp dir, then runs stock /usr/bin/bpftrace
# with libsyscall_server.so preloaded on a count() + printf script; bpftrace
# starts the app (-c) and the app gets libagent.so. When run as root, both
# run as uid/gid 65534 (nobody) through setpriv; otherwise as you.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "userbpf demo: building (release)…" >&2
cargo build --release -q -p agent -p syscall-server
target_dir="${CARGO_TARGET_DIR:-target}"
lib_dir="$target_dir/release"

demo_dir="$(mktemp -d /tmp/userbpf-demo.XXXXXX)"
trap 'rm -rf "$demo_dir"' EXIT
chmod 755 "$demo_dir"
cp "$lib_dir/libagent.so" "$lib_dir/libsyscall_server.so" "$demo_dir/"
gcc -O1 -g -fPIC -shared -o "$demo_dir/libsample.so" crates/tests/apps/libsample.c
gcc -O1 -g -o "$demo_dir/sample" crates/tests/apps/sample.c -L"$demo_dir" -lsample -Wl,-rpath,'$ORIGIN'
chmod -R a+rX "$demo_dir"
mkdir -m 700 "$demo_dir/registry"

as_user=()
if [ "$(id -u)" = 0 ]; then
  chown 65534:65534 "$demo_dir/registry"
  as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
  who="uid 65534 (nobody)"
else
  who="uid $(id -u)"
fi

script='uprobe:'"$demo_dir"'/sample:add2 { @calls = count(); @sum = sum(arg0 + arg1); }
uprobe:'"$demo_dir"'/sample:six_args /arg0 < 3/ { printf("six_args(%d, %d, %d, %d, %d, %d)\n", arg0, arg1, arg2, arg3, arg4, arg5); }'

echo "userbpf demo: running stock $(bpftrace --version) as $who:" >&2
echo "  bpftrace -e '$script' -c '$demo_dir/sample 10'" >&2
echo >&2
cd "$demo_dir"
"${as_user[@]}" env USERBPF_DIR="$demo_dir/registry" LD_PRELOAD="$demo_dir/libsyscall_server.so" \
  bpftrace -e "$script" -c "$demo_dir/sample 10"
