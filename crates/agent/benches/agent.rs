//! Benchmarks of the agent's costs, measured in-process:
//! - `probe_hit/*`: one call of a probed function running bpftrace's
//!   `@c = count()` through the whole agent path (trampoline → handler →
//!   JIT'd program → per-CPU hash update), against the same function unprobed;
//! - `startup/*`: running a tiny C program with and without the agent
//!   preloaded (empty registry), i.e. what `LD_PRELOAD=libagent.so` adds to a
//!   process start (loading the library, the constructor, the watcher spawn).
//!
//! Run: `cargo bench -p agent --bench agent`.

use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use shm_maps::{map_type, LinkKind, LinkRecord, MapSpec, ProgRecord, Registry};

#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_bench_probed(x: u64) -> u64 {
    black_box(x).wrapping_mul(3) ^ 1
}

/// Same cost as [`userbpf_bench_probed`] but a different body, so the
/// compiler cannot merge the two functions into one (probed) address.
#[no_mangle]
#[inline(never)]
pub extern "C" fn userbpf_bench_unprobed(x: u64) -> u64 {
    black_box(x).wrapping_mul(5) ^ 2
}

fn count_program(map_id: u32) -> Vec<u8> {
    let text = vm::fixtures::bpftrace_count(map_id);
    vm::asm::assemble(&text).unwrap().iter().flat_map(|i| i.to_u64().to_le_bytes()).collect()
}

fn probe_hit(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("userbpf-agent-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry = Registry::open(&dir).unwrap();
    let map = registry
        .create_map(&MapSpec {
            map_type: map_type::PERCPU_HASH,
            key_size: 8,
            value_size: 8,
            max_entries: 4096,
            name: "c".into(),
            ..Default::default()
        })
        .unwrap();
    let prog = registry
        .create_prog(&ProgRecord {
            prog_type: 2,
            name: "count".into(),
            license: "GPL".into(),
            insns: count_program(map.id()),
            map_ids: vec![map.id()],
            ..Default::default()
        })
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let meta = std::fs::metadata(&exe).unwrap();
    registry
        .create_link(&LinkRecord {
            kind: LinkKind::Uprobe,
            prog_id: prog,
            enabled: true,
            pid: -1,
            target_path: exe.display().to_string(),
            file_offset: rewriter::elf::resolve_symbol(&exe, "userbpf_bench_probed").unwrap(),
            dev: meta.dev(),
            inode: meta.ino(),
            ..Default::default()
        })
        .unwrap();
    std::env::set_var("USERBPF_DIR", &dir);
    // Not preloaded, so the watcher thread attaches (asynchronously).
    agent::start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while hits(&map) == 0 {
        assert!(std::time::Instant::now() < deadline, "the probe never attached: nothing to measure");
        userbpf_bench_probed(1);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let before = hits(&map);
    userbpf_bench_probed(1);
    assert_eq!(hits(&map), before + 1, "one call, one hit");
    userbpf_bench_unprobed(1);
    assert_eq!(hits(&map), before + 1, "the baseline function is probed too");

    // Timed with this thread's CPU clock: the machine these run on is
    // shared, and wall time would count the time other processes run.
    let mut group = c.benchmark_group("probe_hit");
    group.bench_function("unprobed_call", |b| b.iter_custom(|n| cpu_time(n, userbpf_bench_unprobed)));
    group.bench_function("count_program", |b| b.iter_custom(|n| cpu_time(n, userbpf_bench_probed)));
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU time of this thread for `iterations` calls of `f`.
fn cpu_time(iterations: u64, f: extern "C" fn(u64) -> u64) -> std::time::Duration {
    fn now() -> std::time::Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid timespec out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    let start = now();
    for i in 0..iterations {
        black_box(f(black_box(i)));
    }
    now() - start
}

fn hits(map: &shm_maps::Map) -> u64 {
    let mut out = vec![0u8; map.syscall_value_size()];
    map.lookup(&0u64.to_le_bytes(), &mut out).map_or(0, |_| {
        out.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).sum()
    })
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn startup(c: &mut Criterion) {
    let dir = target_dir();
    let agent = [dir.join("deps/libagent.so"), dir.join("libagent.so")]
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p);
    let Some(agent) = agent else {
        eprintln!("startup bench skipped: libagent.so not built (run `cargo build -p agent` first)");
        return;
    };
    let app = dir.join("agent-bench-target");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/target.c");
    let status = Command::new("cc").args(["-O1", "-o"]).arg(&app).arg(&source).status().unwrap();
    assert!(status.success());
    let registry = std::env::temp_dir().join(format!("userbpf-agent-bench-startup-{}", std::process::id()));
    let mut group = c.benchmark_group("startup");
    group.sample_size(30);
    group.bench_function("without_agent", |b| {
        b.iter(|| assert!(Command::new(&app).args(["count", "0"]).output().unwrap().status.success()))
    });
    group.bench_function("with_agent_empty_registry", |b| {
        b.iter(|| {
            let out = Command::new(&app)
                .args(["count", "0"])
                .env("LD_PRELOAD", &agent)
                .env("USERBPF_DIR", &registry)
                .output()
                .unwrap();
            assert!(out.status.success());
        })
    });
    // The constructor's own duration, as it reports it (USERBPF_AGENT_DEBUG).
    group.bench_function("constructor_self_reported", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let out = Command::new(&app)
                    .args(["count", "0"])
                    .env("LD_PRELOAD", &agent)
                    .env("USERBPF_DIR", &registry)
                    .env("USERBPF_AGENT_DEBUG", "1")
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                let micros: u64 = stderr
                    .lines()
                    .find_map(|l| l.split("started in ").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .expect("agent did not report its start-up time");
                total += std::time::Duration::from_micros(micros);
            }
            total
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&registry);
}

criterion_group!(benches, probe_hit, startup);
criterion_main!(benches);
