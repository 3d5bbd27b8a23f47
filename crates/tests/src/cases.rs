//! The bpftrace scripts the end-to-end tests run with `-c`, shared by the
//! tests (userbpf) and the opt-in kernel oracle that derives their expected
//! output (`expected/<name>.out`).
//!
//! Scripts are written so the kernel's output is deterministic: no raw pids,
//! timestamps or addresses (they are compared: `pid == cpid`, `nsecs > 0`).
//! `{APP}`/`{LIB}` are the sample executable and library, `{USDT}` the
//! USDT sample (`apps/usdt.c`).

/// One `bpftrace -e SCRIPT -c COMMAND` run (no `-c` when `command` is empty).
pub struct Case {
    pub name: &'static str,
    pub script: &'static str,
    pub command: &'static str,
    /// Set when userbpf's correct answer differs from the kernel's because
    /// of a kernel limitation: the kernel's output is kept in
    /// `expected/<name>.kernel.out`, ours (edited by hand) in `<name>.out`,
    /// and this says why they differ.
    pub kernel_artefact: Option<&'static str>,
}

pub const CASES: &[Case] = &[
    Case {
        name: "usdt_args",
        script: "usdt:{USDT}:sample:tick { @[arg0] = sum(arg1); } usdt:{USDT}:sample:tock { @t = count(); } usdt:{USDT}:sample:guarded { @g[arg0] = count(); }",
        command: "{USDT} 4",
        kernel_artefact: None,
    },
    Case {
        name: "loader_only",
        script: r#"BEGIN { printf("begin %s\n", "loader"); @b[1] = 5; } interval:ms:50 { @n++; if (@n == 3) { printf("ticks %d\n", @n); exit(); } } END { printf("end\n"); delete(@b[1]); }"#,
        command: "",
        kernel_artefact: None,
    },
    Case {
        name: "count",
        script: "uprobe:{APP}:add2 { @c = count(); }",
        command: "{APP} 10",
        kernel_artefact: None,
    },
    Case {
        name: "printf_args",
        script: r#"uprobe:{APP}:six_args { printf("%d %d %d %d %d %d\n", arg0, arg1, arg2, arg3, arg4, arg5); }"#,
        command: "{APP} 3",
        kernel_artefact: None,
    },
    Case {
        name: "uretprobe_retval",
        script: r#"uretprobe:{APP}:add2 { printf("ret %d\n", retval); }"#,
        command: "{APP} 3",
        kernel_artefact: None,
    },
    Case {
        name: "shared_library",
        script: "uprobe:{LIB}:lib_mul { @[arg0] = count(); } uretprobe:{LIB}:lib_mul { @r = sum(retval); }",
        command: "{APP} 4",
        kernel_artefact: None,
    },
    Case {
        name: "wildcard_probe",
        script: "uprobe:{APP}:work_* { @p[probe] = count(); }",
        command: "{APP} 5",
        kernel_artefact: None,
    },
    Case {
        name: "library_wildcard",
        script: "uprobe:{LIB}:lib_* { @calls[probe] = count(); } uretprobe:{APP}:work_* { @rets[probe] = sum(retval); }",
        command: "{APP} 6",
        kernel_artefact: None,
    },
    Case {
        name: "begin_end_exit",
        script: r#"BEGIN { printf("begin\n"); } uprobe:{APP}:add2 /arg0 == 4/ { printf("hit %d\n", arg0); exit(); } END { printf("end\n"); }"#,
        command: "{APP} 10",
        kernel_artefact: None,
    },
    Case {
        name: "builtins",
        script: r#"uprobe:{APP}:add2 /arg0 == 1/ { printf("pid=%d tid=%d comm=%s nsecs=%d elapsed=%d cpu=%d\n", pid == cpid, tid == cpid, comm, nsecs > 0, elapsed > 0, cpu < 4096); printf("func=%s probe=%s\n", func, probe); printf("uid=%d\n", uid); exit(); }"#,
        // Hangs after the loop so `func` can still be symbolized through /proc/PID/maps.
        command: "{APP} 3 0 0 1",
        kernel_artefact: None,
    },
    Case {
        name: "str_args",
        script: r#"uprobe:{APP}:greet { printf("%s %d\n", str(arg0), arg1); } uretprobe:{LIB}:lib_name { @[str(retval)] = count(); }"#,
        command: "{APP} 5",
        kernel_artefact: Some(
            "kernel uprobes read strings with a non-faulting copy: on the first call the string's page \
             of .rodata is not yet mapped in, so the kernel prints an empty string; userbpf runs in the \
             process and reads the true value",
        ),
    },
    Case {
        name: "aggregations",
        script: "uprobe:{APP}:six_args { @c = count(); @s = sum(arg0); @a = avg(arg0); @mn = min(arg1); @mx = max(arg2); @st = stats(arg0); @h = hist(arg0); @l = lhist(arg0, 0, 20, 5); }",
        command: "{APP} 20",
        kernel_artefact: None,
    },
    Case {
        name: "map_keys_delete_clear_zero",
        script: r#"uprobe:{APP}:greet { @names[str(arg0)] = count(); @pair[arg1, str(arg0)] = sum(arg1); @gone[arg1] = count(); @zeroed[arg1] = count(); @cleared[arg1] = count(); }
uprobe:{APP}:add2 /arg0 == 11/ { delete(@gone[2]); }
END { clear(@cleared); zero(@zeroed); }"#,
        command: "{APP} 12",
        kernel_artefact: Some(
            "the first greet() call reads an empty string under kernel uprobes (page not faulted in); \
             userbpf reads \"alpha\"",
        ),
    },
    Case {
        name: "control_flow",
        script: r#"uprobe:{APP}:add2 { $big = arg0 > 4 ? 1 : 0; if (arg0 % 2 == 0) { @even = count(); } else { @odd = count(); } @big = sum($big); $i = 0; while ($i < 3) { @loops = count(); $i++; } unroll(2) { @unrolled = count(); } }"#,
        command: "{APP} 9",
        kernel_artefact: None,
    },
    Case {
        name: "print_time",
        script: r#"uprobe:{LIB}:lib_mul /arg0 == 2/ { @m[arg0] = count(); print(@m); time("time without conversions\n"); printf("%s\n", "done"); }"#,
        command: "{APP} 4",
        kernel_artefact: None,
    },
    Case {
        name: "interval",
        script: r#"interval:ms:50 { @ticks = count(); @n++; if (@n == 3) { printf("three ticks\n"); exit(); } }"#,
        command: "{APP} 0 0 0 1",
        kernel_artefact: None,
    },
];

/// Look a case up by name.
pub fn case(name: &str) -> &'static Case {
    CASES
        .iter()
        .chain(MODERN_CASES)
        .chain(CASES_0_24)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no e2e case named {name}"))
}

/// Cases in a language only bpftrace 0.20 and later speak, run under 0.23
/// and 0.27 only.
pub const MODERN_CASES: &[Case] = &[Case {
    // for-loops over maps (bpf_for_each_map_elem): what the loop sees, in
    // an order-free form (hash iteration order is the table's, not the
    // script's).
    name: "for_loop_over_map",
    script: "uprobe:{APP}:add2 { @m[arg0 % 3] = sum(arg0); } END { for ($kv : @m) { @keys += $kv.0; @vals += (int64)$kv.1; @n = count(); } clear(@m); }",
    command: "{APP} 10",
    kernel_artefact: None,
}];

/// Cases of builtins bpftrace added in 0.24 (`strlen`, `strstr`, and
/// `strcontains` rewritten on them), which it compiles into calls of the
/// kernel's string kfuncs (`bpf_strnlen`, `bpf_strnstr`, Linux 6.17+):
/// run under 0.27 only.
pub const CASES_0_24: &[Case] = &[Case {
    // `arg1 > 1` skips the first call (greet("alpha", 1)), whose string's
    // page the kernel may not have mapped in yet (see `str_args`).
    name: "string_kfuncs",
    // printf, in the app's call order: maps of these values print in hash
    // order, which differs from run to run on the kernel too.
    script: r#"uprobe:{APP}:greet /arg1 > 1/ { $s = str(arg0); printf("%s len=%d ta=%d l=%d\n", $s, strlen($s), strstr($s, "ta"), strcontains($s, "l")); @n = count(); }"#,
    command: "{APP} 8",
    kernel_artefact: None,
}];

/// The cases bpftrace `version` (`"0.17"`, `"0.23"`, …) runs: every case,
/// those of 0.20+ and those of 0.24+ by release.
pub fn cases_for(version: &str) -> impl Iterator<Item = &'static Case> {
    let minor: u32 = version.strip_prefix("0.").and_then(|m| m.parse().ok()).unwrap_or(0);
    let modern = if minor >= 20 { MODERN_CASES } else { &[] };
    let since_0_24 = if minor >= 24 { CASES_0_24 } else { &[] };
    CASES.iter().chain(modern).chain(since_0_24)
}
