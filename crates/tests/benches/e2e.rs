//! End-to-end costs with stock bpftrace, loader and target as an ordinary
//! user (see `docs/bench/e2e.md`):
//!
//! - `per_call/unprobed` and `per_call/count`: one call of a traced function
//!   in the target (`apps/bench_loop.c`), without a probe (agent preloaded,
//!   nothing attached) and with bpftrace's `uprobe:…:hit { @c = count(); }`
//!   attached; the difference is the per-hit overhead. The app times its own
//!   loop, so process start and attach are excluded.
//! - `attach/attaching_to_first_hit`: from bpftrace printing "Attaching"
//!   to the first hit counted in an already running target (`-p PID`):
//!   program load and verification, attach, the agent noticing and patching.
//!   The hit's time is the program's `nsecs` (CLOCK_MONOTONIC), the
//!   "Attaching" time is taken when the line reaches the benchmark.
//!
//! Run: `cargo bench -p tests --bench e2e`.

use std::io::Read;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tests::World;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn loop_ns(stdout: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        l.strip_prefix("loop_ns=")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn per_call(c: &mut Criterion) {
    let world = World::new().expect("e2e setup");
    let app = world.compile_app("bench_loop").expect("compile bench_loop");
    let app = app.to_string_lossy().into_owned();
    let mut g = c.benchmark_group("per_call");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("unprobed", |b| {
        b.iter_custom(|iters| {
            let p = world
                .spawn_with_agent(&app, &[&iters.to_string()], None)
                .expect("spawn");
            let out = p.wait_timeout(Duration::from_secs(120));
            Duration::from_nanos(
                loop_ns(&out.stdout).unwrap_or_else(|| panic!("no loop time: {out:?}")),
            )
        })
    });
    g.bench_function("count", |b| {
        b.iter_custom(|iters| {
            let out = world.bpftrace_c(
                &format!("uprobe:{app}:hit {{ @c = count(); }}"),
                &format!("{app} {iters}"),
                Duration::from_secs(300),
            );
            assert!(
                out.stdout.contains(&format!("@c: {iters}")),
                "not every call was counted: {out:?}"
            );
            Duration::from_nanos(
                loop_ns(&out.stdout).unwrap_or_else(|| panic!("no loop time: {out:?}")),
            )
        })
    });
    g.finish();
}

fn attach(c: &mut Criterion) {
    let world = World::new().expect("e2e setup");
    // The sample app calling add2 about every 60 µs forever.
    let app = world.spawn_app(&["10", "0", "10", "1"]).expect("spawn app");
    std::thread::sleep(Duration::from_millis(300));
    let pid = app.pid().to_string();
    let mut g = c.benchmark_group("attach");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("attaching_to_first_hit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += first_hit_latency(&world, &pid);
            }
            total
        })
    });
    g.finish();
    drop(app);
}

/// One bpftrace -p run: time from "Attaching" to the first hit's `nsecs`.
fn first_hit_latency(world: &World, pid: &str) -> Duration {
    let mut bt = world
        .spawn_bpftrace_raw(
            r#"uprobe:{APP}:add2 { printf("hit %llu\n", nsecs); exit(); }"#,
            &["-p".into(), pid.into()],
        )
        .expect("spawn bpftrace");
    let mut stdout = bt.take_stdout().expect("piped stdout");
    let mut text = String::new();
    let mut attaching_ns = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = stdout.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if attaching_ns.is_none() && text.contains("Attaching") {
            attaching_ns = Some(monotonic_ns());
        }
        if text.contains("hit ") && text[text.find("hit ").unwrap()..].contains('\n') {
            break;
        }
    }
    let hit_ns: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hit ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no hit printed: {text}"));
    let attaching_ns = attaching_ns.expect("no Attaching line");
    let _ = bt.wait_timeout(Duration::from_secs(30));
    Duration::from_nanos(hit_ns.saturating_sub(attaching_ns))
}

criterion_group!(benches, per_call, attach);
criterion_main!(benches);
