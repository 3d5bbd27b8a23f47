//! How long `userbpf attach` stops the target's thread: each iteration
//! starts a fresh fixture app (never started by userbpf), attaches the marker
//! library with `userbpf attach --json`, and feeds criterion the pause that
//! userbpf measured (interrupt sent → thread resumed), not the CLI's run time.
//!
//! Run: `cargo bench -p tools --bench attach_pause`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn compile(source: &str, output: &Path, extra: &[&str]) {
    let status = Command::new("cc").args(["-O1", "-o"]).arg(output).arg(fixture(source)).args(extra).status().unwrap();
    assert!(status.success(), "compiling {source}");
}

/// Starts the fixture in `mode`, attaches, returns the reported pause.
fn one_attach(dir: &Path, mode: &str) -> Duration {
    let pidfile = dir.join(format!("{mode}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let mut child = Command::new(dir.join("target"))
        .arg(&pidfile)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..2000 {
        if std::fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(5));
    let out = Command::new(env!("CARGO_BIN_EXE_userbpf"))
        .args(["attach", "--json", &child.id().to_string()])
        .env("USERBPF_LIB_DIR", dir)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "attach failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Duration::from_secs_f64(report["pause_ms"].as_f64().unwrap() / 1e3)
}

fn attach_pause(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("userbpf-attach-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    compile("target.c", &dir.join("target"), &["-pthread"]);
    compile("marker_lib.c", &dir.join("libagent.so"), &["-shared", "-fPIC"]);
    let mut group = c.benchmark_group("attach_pause");
    group.sample_size(20).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_millis(500));
    for mode in ["sleep", "spin", "threads", "read"] {
        group.bench_function(mode, |b| b.iter_custom(|iters| (0..iters).map(|_| one_attach(&dir, mode)).sum()));
    }
    // The real agent, when the workspace's libagent.so is built in this profile.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_userbpf")).parent().unwrap();
    let real_agent = [bin_dir.join("libagent.so"), bin_dir.join("deps/libagent.so")].into_iter().find(|p| p.is_file());
    match real_agent {
        Some(agent) => {
            let real_dir = dir.join("real");
            std::fs::create_dir_all(&real_dir).unwrap();
            std::fs::copy(&agent, real_dir.join("libagent.so")).unwrap();
            std::fs::copy(dir.join("target"), real_dir.join("target")).unwrap();
            let registry = real_dir.join("registry");
            std::fs::create_dir_all(&registry).unwrap();
            std::fs::set_permissions(&registry, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
            std::env::set_var("USERBPF_DIR", &registry);
            group.bench_function("sleep_real_agent", |b| {
                b.iter_custom(|iters| (0..iters).map(|_| one_attach(&real_dir, "sleep")).sum())
            });
        }
        None => eprintln!("attach_pause/sleep_real_agent skipped: libagent.so is not built in this profile"),
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, attach_pause);
criterion_main!(benches);
