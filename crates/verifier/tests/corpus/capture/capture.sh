#!/bin/bash
# Re-capture the verifier's acceptance corpus from the real loaders, as root,
# with kernel eBPF available: every BPF_PROG_LOAD of bpftrace running the
# end-to-end scripts (crates/tests/src/cases.rs) and of Debian's libbpf-tools
# bashreadline, funclatency (uprobe mode) and gethostlatency, with the kernel's
# own verdict. Output: crates/verifier/tests/corpus/accept/*.prog
# (format: capture_shim.c).
#
# Usage: sudo crates/verifier/tests/corpus/capture/capture.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../../.." && pwd)"
out="$here/../accept"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

[ "$(id -u)" = 0 ] || { echo "capture.sh: must run as root (it loads programs into the kernel)" >&2; exit 1; }
gcc -O1 -fPIC -shared -o "$work/shim.so" "$here/capture_shim.c" -ldl
gcc -O1 -g -fPIC -shared -o "$work/libsample.so" "$root/crates/tests/apps/libsample.c"
gcc -O1 -g -o "$work/sample" "$root/crates/tests/apps/sample.c" -L"$work" -lsample -Wl,-rpath,'$ORIGIN'
APP="$work/sample"; LIB="$work/libsample.so"
mkdir -p "$out"
rm -f "$out"/*.prog

capture() { # name, command...
    local name="$1"; shift
    USERBPF_CAPTURE_DIR="$out" USERBPF_CAPTURE_PREFIX="$name" LD_PRELOAD="$work/shim.so" "$@" >/dev/null 2>&1 || true
}

# The end-to-end scripts, as in crates/tests/src/cases.rs ({APP}/{LIB} substituted).
bt() { # name, script, command
    local script="${2//\{APP\}/$APP}"; script="${script//\{LIB\}/$LIB}"
    local cmd="${3//\{APP\}/$APP}"
    capture "bpftrace-$1" timeout 20 bpftrace -e "$script" -c "$cmd"
}
bt count 'uprobe:{APP}:add2 { @c = count(); }' '{APP} 10'
bt printf_args 'uprobe:{APP}:six_args { printf("%d %d %d %d %d %d\n", arg0, arg1, arg2, arg3, arg4, arg5); }' '{APP} 3'
bt uretprobe_retval 'uretprobe:{APP}:add2 { printf("ret %d\n", retval); }' '{APP} 3'
bt shared_library 'uprobe:{LIB}:lib_mul { @[arg0] = count(); } uretprobe:{LIB}:lib_mul { @r = sum(retval); }' '{APP} 4'
bt wildcard_probe 'uprobe:{APP}:work_* { @p[probe] = count(); }' '{APP} 5'
bt begin_end_exit 'BEGIN { printf("begin\n"); } uprobe:{APP}:add2 /arg0 == 4/ { printf("hit %d\n", arg0); exit(); } END { printf("end\n"); }' '{APP} 10'
bt builtins 'uprobe:{APP}:add2 /arg0 == 1/ { printf("pid=%d tid=%d comm=%s nsecs=%d elapsed=%d cpu=%d\n", pid == cpid, tid == cpid, comm, nsecs > 0, elapsed > 0, cpu < 4096); printf("func=%s probe=%s\n", func, probe); printf("uid=%d\n", uid); exit(); }' '{APP} 3'
bt str_args 'uprobe:{APP}:greet { printf("%s %d\n", str(arg0), arg1); } uretprobe:{LIB}:lib_name { @[str(retval)] = count(); }' '{APP} 5'
bt aggregations 'uprobe:{APP}:six_args { @c = count(); @s = sum(arg0); @a = avg(arg0); @mn = min(arg1); @mx = max(arg2); @st = stats(arg0); @h = hist(arg0); @l = lhist(arg0, 0, 20, 5); }' '{APP} 20'
bt map_keys_delete_clear_zero 'uprobe:{APP}:greet { @names[str(arg0)] = count(); @pair[arg1, str(arg0)] = sum(arg1); @gone[arg1] = count(); @zeroed[arg1] = count(); @cleared[arg1] = count(); }
uprobe:{APP}:add2 /arg0 == 11/ { delete(@gone[2]); }
END { clear(@cleared); zero(@zeroed); }' '{APP} 12'
bt control_flow 'uprobe:{APP}:add2 { $big = arg0 > 4 ? 1 : 0; if (arg0 % 2 == 0) { @even = count(); } else { @odd = count(); } @big = sum($big); $i = 0; while ($i < 3) { @loops = count(); $i++; } unroll(2) { @unrolled = count(); } }' '{APP} 9'
bt print_time 'uprobe:{LIB}:lib_mul /arg0 == 2/ { @m[arg0] = count(); print(@m); time("time without conversions\n"); printf("%s\n", "done"); }' '{APP} 4'
bt interval 'interval:ms:50 { @ticks = count(); @n++; if (@n == 3) { printf("three ticks\n"); exit(); } }' '{APP} 0 0 0 1'
# A few more shapes bpftrace users write: stacks, strings into maps, ustack, kstack-free tracepoint-free.
bt ustack 'uprobe:{APP}:add2 { @[ustack] = count(); }' '{APP} 3'
bt strcmp 'uprobe:{APP}:greet /str(arg0) == "alpha"/ { @hit = count(); }' '{APP} 3'
bt join_buf 'uretprobe:{LIB}:lib_name { printf("%s\n", str(retval, 8)); @len = hist(arg0); }' '{APP} 3'

# More one-liner shapes (not run end to end, but they must verify).
bt lat 'uprobe:{APP}:add2 { @start[tid] = nsecs; } uretprobe:{APP}:add2 /@start[tid]/ { @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }' '{APP} 5'
bt strings 'uprobe:{APP}:greet { @s[str(arg0, 16)] = count(); printf("%s %s\n", str(arg0), comm); }' '{APP} 3'
bt ternary_math 'uprobe:{APP}:six_args { $x = arg0 * 3 + arg1 / (arg2 + 1) - (arg3 % 7); @m = max($x > 0 ? $x : -$x); @a[arg0 & 3, arg1 >> 2] = sum(arg4 << 1); }' '{APP} 4'
bt kstack_tp 'tracepoint:syscalls:sys_enter_openat { @[str(args->filename)] = count(); }' '/bin/true'
bt profile 'profile:hz:99 { @[ustack(3)] = count(); }' '/bin/sleep 0.1'
bt buf_join 'uretprobe:{LIB}:lib_name { printf("%r\n", buf(retval, 4)); }' '{APP} 2'
bt if_else_chain 'uprobe:{APP}:add2 { if (arg0 < 2) { @lo = count(); } else if (arg0 < 5) { @mid = count(); } else { @hi = count(); } @c[cpu] = count(); @u = lhist(arg0, 0, 10, 1); }' '{APP} 8'

# libbpf-tools: each loads its whole BPF object (uprobe programs included) at start-up.
capture libbpf-bashreadline timeout 3 bashreadline
capture libbpf-funclatency timeout 3 funclatency "$LIB:lib_mul"
capture libbpf-gethostlatency timeout 3 gethostlatency

sed -i '1i # captured by capture.sh at the BPF_PROG_LOAD call (kernel '"$(uname -r)"')' "$out"/*.prog
ls "$out" | wc -l
