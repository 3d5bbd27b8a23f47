//! Requests userbpf cannot serve fail loudly: bpftrace exits non-zero and
//! the server's one-line message names the missing feature. Nothing is
//! passed to the kernel (the loader runs as an ordinary user, so a request
//! reaching the kernel would fail differently, with EPERM/EACCES).

use std::time::Duration;

use tests::World;

const TIMEOUT: Duration = Duration::from_secs(30);

fn refused(script: &str, message: &str) {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let out = world.bpftrace_c(script, "", TIMEOUT);
    assert_ne!(
        out.status,
        Some(0),
        "bpftrace should fail for {script}\nstderr:\n{}",
        out.stderr
    );
    assert!(!out.timed_out, "bpftrace hung on {script}");
    assert!(
        out.stderr.contains(message),
        "stderr of {script} lacks {message:?}:\n{}",
        out.stderr
    );
}

#[test]
fn kprobes_are_refused_by_name() {
    refused(
        "kprobe:do_nanosleep { @c = count(); }",
        "userbpf: kernel probes (kprobe:/kretprobe:) is not supported",
    );
}

#[test]
fn kretprobes_are_refused_by_name() {
    refused(
        "kretprobe:do_nanosleep { @c = count(); }",
        "userbpf: kernel probes (kprobe:/kretprobe:) is not supported",
    );
}

#[test]
fn tracepoints_are_refused_by_name() {
    refused(
        "tracepoint:syscalls:sys_enter_openat { @c = count(); }",
        "userbpf: kernel tracepoints (tracepoint:) is not supported",
    );
}

#[test]
fn hardware_events_are_refused_by_name() {
    refused(
        "hardware:cache-misses:1000 { @c = count(); }",
        "userbpf: hardware perf events (hardware:) is not supported",
    );
}

/// `bpftrace --info` probes every feature, many of them kernel-only: the
/// answers must be the quiet ones of a kernel without them (no `userbpf:`
/// line in the middle of its report), under every bpftrace release.
#[test]
fn feature_probes_of_bpftrace_info_are_quiet() {
    for bpftrace in tests::Bpftrace::all() {
        let bpftrace = bpftrace.unwrap_or_else(|e| panic!("e2e setup: {e}"));
        let version = bpftrace.version;
        let world = World::with(bpftrace).unwrap_or_else(|e| panic!("e2e setup: {e}"));
        let out = world
            .spawn_bpftrace_args(&["--info"])
            .expect("spawn bpftrace --info")
            .wait_timeout(TIMEOUT);
        assert_eq!(out.status, Some(0), "bpftrace {version} --info failed:\n{}", out.stderr);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains("Kernel features"), "bpftrace {version} --info printed no report:\n{text}");
        assert!(!text.contains("userbpf:"), "bpftrace {version} --info:\n{text}");
    }
}
