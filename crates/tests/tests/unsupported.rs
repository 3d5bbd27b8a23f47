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

/// `bpftrace -l` of kernel probes lists nothing under userbpf (and exits
/// 0, as bpftrace does for an empty list): the server says why, once. A
/// listing of user-space probes lists them, with no such line. Every
/// release.
#[test]
fn listing_kernel_probes_says_why_the_list_is_empty() {
    let why = "userbpf: no kernel functions, tracepoints or events are listed: userbpf traces user space only";
    for bpftrace in tests::Bpftrace::all() {
        let bpftrace = bpftrace.unwrap_or_else(|e| panic!("e2e setup: {e}"));
        let version = bpftrace.version;
        let world = World::with(bpftrace).unwrap_or_else(|e| panic!("e2e setup: {e}"));
        let out = world.spawn_bpftrace_args(&["-l", "kprobe:*"]).expect("spawn bpftrace -l").wait_timeout(TIMEOUT);
        assert!(!out.timed_out, "bpftrace {version} -l hung");
        assert_eq!(out.stderr.matches(why).count(), 1, "bpftrace {version} -l 'kprobe:*':\n{}", out.stderr);
        assert!(!out.stdout.contains("kprobe:"), "bpftrace {version} listed kernel functions:\n{}", out.stdout);
        let pattern = world.expand("uprobe:{APP}:add*");
        let out = world.spawn_bpftrace_args(&["-l", &pattern]).expect("spawn bpftrace -l").wait_timeout(TIMEOUT);
        assert!(out.stdout.contains(":add2"), "bpftrace {version} -l {pattern}:\n{}\n{}", out.stdout, out.stderr);
        assert!(!out.stderr.contains(why), "bpftrace {version} -l {pattern}:\n{}", out.stderr);
    }
}

/// `interval:` runs in the loader, as the kernel's does (ticks counted per
/// period), and is not published to the apps; `profile:` is, one link per
/// CPU as bpftrace opens it, and the apps sample themselves
/// (`bpftrace_profile.rs`).
#[test]
fn interval_runs_in_the_loader_and_profile_in_the_apps() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as usize;
    let mut bpftrace = world
        .spawn_bpftrace("profile:hz:99 { @samples = count(); } interval:ms:100 { @ticks = count(); }", &[])
        .expect("spawn bpftrace");
    world.wait_for_links(&mut bpftrace, cpus, TIMEOUT);
    std::thread::sleep(std::time::Duration::from_millis(550));
    let links = std::fs::read_dir(world.registry.join("links")).map(|d| d.count()).unwrap_or(0);
    bpftrace.signal(libc::SIGINT);
    let out = bpftrace.wait_timeout(TIMEOUT);
    assert_eq!(links, cpus, "one profile link per CPU, none for interval: {}", out.stderr);
    let ticks: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("@ticks: "))
        .unwrap_or_else(|| panic!("no ticks: {out:?}"))
        .trim()
        .parse()
        .expect("a count");
    assert!((4..=7).contains(&ticks), "interval:ms:100 ticked {ticks} times in about 0.55 s: {out:?}");
}
