//! BPF ring buffer throughput end to end, loader and target as an ordinary
//! user (see `docs/bench/e2e.md`): a libbpf tool built here
//! (`apps/rbbench/`: clang, bpftool skeleton, Debian's libbpf) reserves and
//! submits one 64-byte record per call of `hit` in the traced app
//! (`apps/bench_loop.c`) and drains them with `ring_buffer__poll`.
//!
//! Per round: the producer rate is the calls over the app's own loop time
//! (every call a probe hit and a record), the drain rate the records over
//! the time from the tool's first to its last record, and the lost records
//! are the reservations that found the ring full (counted by the program).
//! Rounds with 1 and with 4 producer threads (2 cores here), with the
//! tool's 1 MiB ring and with a 64 MiB one.
//!
//! Run: `cargo bench -p tests --bench ringbuf`.

use std::time::Duration;

use tests::World;

const CALLS: u64 = 2_000_000;
const ROUNDS: usize = 7;

fn field(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

struct Round {
    produce: f64,
    drain: f64,
    dropped: u64,
}

fn round(world: &World, tool: &str, app: &str, threads: u32, ring: u64) -> Round {
    let mut loader = world
        .spawn_loader(tool, &[app, "hit", &CALLS.to_string(), &ring.to_string()])
        .expect("spawn rbbench");
    assert!(
        loader.wait_for_stdout("ready\n", Duration::from_secs(60)),
        "rbbench did not attach: {}",
        loader.stderr_now()
    );
    let out = world
        .spawn_with_agent(app, &[&CALLS.to_string(), &threads.to_string()], None)
        .expect("spawn bench_loop")
        .wait_timeout(Duration::from_secs(120));
    let loop_ns = field(&out.stdout, "loop_ns").unwrap_or_else(|| panic!("no loop time: {out:?}"));
    let tool_out = loader.wait_timeout(Duration::from_secs(120));
    let records = field(&tool_out.stdout, "records").unwrap_or_else(|| panic!("rbbench: {tool_out:?}"));
    let dropped = field(&tool_out.stdout, "dropped").unwrap_or(0);
    let drain_ns = field(&tool_out.stdout, "drain_ns").unwrap_or(1).max(1);
    assert_eq!(records + dropped, CALLS, "every call accounted for: {tool_out:?}");
    Round {
        produce: CALLS as f64 / loop_ns as f64 * 1e3,
        drain: records as f64 / drain_ns as f64 * 1e3,
        dropped,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it too, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    // The registry where users have it: userbpf's default directory is on
    // /dev/shm (tmpfs). The tests' usual temporary directory may be on a
    // disk, where every page of a ring the producers dirty is also queued
    // for writeback and faulted again once written back.
    if std::env::var_os("TMPDIR").is_none() && std::path::Path::new("/dev/shm").is_dir() {
        // SAFETY: set before any other thread of this benchmark exists.
        unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    }
    let world = World::new().expect("e2e setup");
    let tool = world.build_libbpf_tool("rbbench").expect("build rbbench");
    let tool = tool.to_string_lossy().into_owned();
    let app = world.compile_app("bench_loop").expect("compile bench_loop");
    let app = app.to_string_lossy().into_owned();
    println!("ring buffer, 64-byte records, {CALLS} calls per round, M records/s (median, best):");
    // The tool's 1 MiB ring (libbpf-bootstrap's size), and 64 MiB, which
    // rides out a consumer descheduled for a few milliseconds.
    for (threads, ring) in [(1, 1u64 << 20), (4, 1 << 20), (1, 1 << 26), (4, 1 << 26)] {
        let mut rounds: Vec<Round> = (0..if quick { 1 } else { ROUNDS })
            .map(|_| round(&world, &tool, &app, threads, ring))
            .collect();
        let n = rounds.len();
        rounds.sort_by(|a, b| a.produce.total_cmp(&b.produce));
        let produce = (rounds[n / 2].produce, rounds[n - 1].produce);
        rounds.sort_by(|a, b| a.drain.total_cmp(&b.drain));
        let drain = (rounds[n / 2].drain, rounds[n - 1].drain);
        let lost: Vec<u64> = rounds.iter().map(|r| r.dropped).collect();
        println!(
            "  {threads} producer thread(s), {} MiB ring: produced {:.1} / {:.1}, drained by libbpf {:.1} / {:.1}, lost per round {lost:?}",
            ring >> 20, produce.0, produce.1, drain.0, drain.1
        );
    }
}
