//! A libbpf-bootstrap-style tool (`apps/rbtool/`), built here with clang,
//! bpftool's skeleton and Debian's libbpf, loaded through the syscall
//! server as an ordinary user: a BPF ring buffer drained by
//! `ring_buffer__poll`, a `const volatile` threshold in `.rodata`, `.bss`
//! counters read through the skeleton's mmap, a BTF-defined hash map, and a
//! uprobe + uretprobe attached by function name.
//!
//! The expected outputs are what the same tool printed on the kernel, as
//! root, for the same app (`expected/libbpf_rbtool*.out`): every record, and,
//! when the tool never drains its ring buffer, the same count of records
//! that fit and of reservations that failed. These tests need no kernel eBPF.

use std::time::Duration;

use tests::{expected_dir, Proc, World};

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn expected(name: &str) -> String {
    let p = expected_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Start rbtool on `add2` of the sample app and wait until it attached.
fn start_tool(world: &World, min_arg: &str, expected_records: &str) -> Proc {
    let tool = world
        .build_libbpf_tool("rbtool")
        .unwrap_or_else(|e| panic!("build rbtool: {e}"));
    let app = world.app.to_string_lossy().into_owned();
    let mut loader = world
        .spawn_loader(&tool.to_string_lossy(), &[&app, "add2", min_arg, expected_records])
        .unwrap_or_else(|e| panic!("spawn rbtool: {e}"));
    assert!(
        loader.wait_for_stdout("ready\n", STEP_TIMEOUT),
        "rbtool did not attach; stderr:\n{}",
        loader.stderr_now()
    );
    loader
}

fn run_app(world: &World, iterations: &str) {
    let app = world
        .spawn_app(&[iterations])
        .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let out = app.wait_timeout(STEP_TIMEOUT);
    assert_eq!(
        out.status,
        Some(0),
        "the traced app failed or hung (timed out: {}): {}",
        out.timed_out,
        out.stderr
    );
}

#[test]
fn ring_buffer_tool_prints_what_the_kernel_printed() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let loader = start_tool(&world, "5", "5");
    run_app(&world, "10");
    let out = loader.wait_timeout(STEP_TIMEOUT);
    assert_eq!(
        out.stdout,
        expected("libbpf_rbtool.out"),
        "stderr:\n{}",
        out.stderr
    );
    assert_eq!(out.status, Some(0), "stderr:\n{}", out.stderr);
}

/// A loader that never drains its ring buffer: the app runs to completion
/// (reservations fail, counted by the program, and never block), exactly
/// as many records as fit are kept, and the counters match the kernel's.
#[test]
fn a_ring_buffer_never_drained_fills_up_without_blocking_the_app() {
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let loader = start_tool(&world, "5", "-1");
    run_app(&world, "100000");
    loader.signal(libc::SIGINT);
    let out = loader.wait_timeout(STEP_TIMEOUT);
    assert_eq!(
        out.stdout,
        expected("libbpf_rbtool_never_drained.out"),
        "stderr:\n{}",
        out.stderr
    );
}
