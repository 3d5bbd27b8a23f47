//! End to end with the real userbpf libraries and stock bpftrace: an app
//! started directly (not by userbpf) gets the agent by `userbpf attach`, is
//! traced by `userbpf bpftrace`, inspected with `list`, `map dump` and
//! `prog dump`, and `userbpf detach` removes the probes while it keeps
//! running with every result unchanged.
//!
//! As root, the app, the CLI and bpftrace all run as `nobody` (an ordinary
//! user attaching to its own process, which it did not start). Skipped, with
//! the reason printed, when bpftrace is not installed or when the libraries
//! were not built next to `userbpf` (`cargo build --workspace` builds them;
//! `cargo test --workspace` does too).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch install the test user can execute (the cargo target directory
/// may sit under a home directory `nobody` cannot enter): `bin/userbpf` with
/// both libraries next to it, a registry, and the app.
struct World {
    scratch: Scratch,
    bin: PathBuf,
    registry: PathBuf,
    app: PathBuf,
}

impl World {
    fn new(name: &str) -> World {
        use std::os::unix::fs::PermissionsExt;
        let scratch = Scratch::new(name);
        std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = scratch.path("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_userbpf"), bin.join("userbpf")).unwrap();
        for lib in ["libagent.so", "libsyscall_server.so"] {
            std::fs::copy(built_library(lib).unwrap(), bin.join(lib)).unwrap();
        }
        let registry = scratch.path("registry");
        std::fs::create_dir(&registry).unwrap();
        std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown_to_user(&registry);
        // Where the app (running as the test user) writes its pid file.
        let run = scratch.path("run");
        std::fs::create_dir(&run).unwrap();
        chown_to_user(&run);
        let app = scratch.path("traced_app");
        compile("traced_app.c", &app, &[]);
        World { scratch, bin, registry, app }
    }

    fn userbpf(&self, args: &[&str]) -> Command {
        // No USERBPF_LIB_DIR: the libraries are found next to the binary.
        let mut cmd = as_user(&self.bin.join("userbpf"));
        cmd.args(args).env("USERBPF_DIR", &self.registry).env_remove("USERBPF_LIB_DIR").env_remove("LD_PRELOAD");
        cmd
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = run_with_timeout(&mut self.userbpf(args));
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "userbpf {args:?}: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("userbpf {args:?} printed no JSON ({e}): {stdout}"))
    }
}

/// Total of a `map dump --json` (plain values or per-CPU sums).
fn map_total(dump: &serde_json::Value) -> u64 {
    dump["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"]["int"].as_u64().or_else(|| e["sum"].as_u64()).unwrap_or(0))
        .sum()
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn attach_trace_with_stock_bpftrace_inspect_and_detach() {
    require_prerequisites();
    if let Some(scope) = yama_blocks_attach() {
        panic!("Yama ptrace_scope {scope} forbids attaching here: run as root, or lower kernel.yama.ptrace_scope");
    }
    let w = World::new("e2e-attach");
    let pidfile = w.scratch.path("run/app.pid");
    // Started directly, not by userbpf: no agent yet.
    let mut app_cmd = as_user(&w.app);
    app_cmd.arg(&pidfile).env("USERBPF_DIR", &w.registry).env_remove("LD_PRELOAD").stderr(Stdio::piped());
    let child = app_cmd.spawn().expect("start the app");
    let pid: i32 = wait_for_file(&pidfile).trim().parse().unwrap();
    let app = Target { child, pid };
    assert!(!std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap().contains("libagent.so"));

    let attached = w.json(&["attach", "--json", &pid.to_string()]);
    eprintln!("attach paused the app for {} ms", attached["pause_ms"]);
    assert_eq!(attached["already_loaded"], false);
    assert_eq!(attached["probes_live"], 0, "nothing to trace yet, reported once the agent runs: {attached}");

    let script = format!("uprobe:{}:tick {{ @ticks = count(); }}", w.app.display());
    let mut bpftrace = w
        .userbpf(&["bpftrace", "-e", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start userbpf bpftrace");

    // The attachment shows up in the app, and the count grows.
    let prog_id = poll("the uprobe to be listed in the app", || {
        let list = w.json(&["list", "--json"]);
        let link = list["attachments"].as_array()?.iter().find(|l| l["processes"] == serde_json::json!([pid]))?.clone();
        link["prog_id"].as_u64()
    });
    let first = poll("@ticks to count", || {
        let total = map_total(&w.json(&["map", "dump", "@ticks", "--json"]));
        (total > 0).then_some(total)
    });
    poll("@ticks to keep counting", || (map_total(&w.json(&["map", "dump", "@ticks", "--json"])) > first).then_some(()));
    // `list` shows the probe's hits in the app, as its agent reports them
    // (every 200 ms): never more than the program counted, and catching up.
    poll("list to report the probe's hits", || {
        let hits = w.json(&["list", "--json"])["attachments"].as_array()?.iter().find(|l| l["prog_id"] == prog_id)?["hits"].as_u64()?;
        let counted = map_total(&w.json(&["map", "dump", "@ticks", "--json"]));
        assert!(hits <= counted, "hits {hits} > counted {counted}");
        (hits >= first).then_some(())
    });

    // A second app attached while the probe exists: attach returns once the
    // agent reports the probe live there, not before.
    let pidfile2 = w.scratch.path("run/app2.pid");
    let mut app2_cmd = as_user(&w.app);
    app2_cmd.arg(&pidfile2).env("USERBPF_DIR", &w.registry).env_remove("LD_PRELOAD").stderr(Stdio::piped());
    let child2 = app2_cmd.spawn().expect("start the second app");
    let pid2: i32 = wait_for_file(&pidfile2).trim().parse().unwrap();
    let app2 = Target { child: child2, pid: pid2 };
    let attached2 = w.json(&["attach", "--json", &pid2.to_string()]);
    assert_eq!(attached2["probes_live"], 1, "the uprobe is live when attach returns: {attached2}");
    let listed = w.json(&["list", "--json"]);
    assert!(
        listed["attachments"].as_array().unwrap().iter().any(|l| l["processes"].as_array().is_some_and(|p| p.contains(&serde_json::json!(pid2)))),
        "{listed}"
    );
    drop(app2);

    let prog = w.json(&["prog", "dump", &prog_id.to_string(), "--json"]);
    assert_eq!(prog["verdict"], "accepted");
    assert!(prog["disassembly"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().ends_with("exit")), "{prog}");

    // Detach: the probes go away, the app keeps running.
    let out = run_with_timeout(&mut w.userbpf(&["detach", "--json", &pid.to_string()]));
    let (stdout, stderr) = texts(&out);
    {
        assert_eq!(out.status.code(), Some(0), "detach: {stderr}");
        let detached: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(detached["probes_removed"].as_u64().unwrap() >= 1, "{detached}");
        let after = map_total(&w.json(&["map", "dump", "@ticks", "--json"]));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(map_total(&w.json(&["map", "dump", "@ticks", "--json"])), after, "no more hits after detach");
        // `list` shows what the agent has installed: the probe is no longer
        // in the detached app, though the link is still in the registry.
        let in_app = |list: &serde_json::Value| {
            list["attachments"].as_array().and_then(|a| a.iter().find(|l| l["prog_id"] == prog_id).cloned())
                .map(|l| l["processes"].as_array().is_some_and(|p| p.contains(&serde_json::json!(pid))))
        };
        poll("list to drop the detached app", || (in_app(&w.json(&["list", "--json"])) == Some(false)).then_some(()));

        // Attaching again resumes the loaded agent: counting starts again.
        let again = w.json(&["attach", "--json", &pid.to_string()]);
        assert_eq!(again["already_loaded"], true);
        assert!(again["probes_reattached"].is_u64(), "{again}");
        poll("@ticks to count again after re-attach", || {
            (map_total(&w.json(&["map", "dump", "@ticks", "--json"])) > after).then_some(())
        });
        poll("list to show the re-attached app", || (in_app(&w.json(&["list", "--json"])) == Some(true)).then_some(()));
    }

    // Ctrl-C. bpftrace 0.17 leaves its loop only when epoll_wait fails with
    // EINTR; a SIGINT landing while the syscall server is between two slices
    // of its emulated wait is missed (docs/requests/syscall-server.md, item 2),
    // so press it again every 300 ms, as a user would.
    let deadline = Instant::now() + WAIT;
    let mut last_sigint: Option<Instant> = None;
    while bpftrace.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "bpftrace did not exit on SIGINT");
        if !matches!(last_sigint, Some(t) if t.elapsed() < Duration::from_millis(300)) {
            // SAFETY: signalling a process this test started.
            unsafe { libc::kill(bpftrace.id() as i32, libc::SIGINT) };
            last_sigint = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = bpftrace.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    let printed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@ticks: "))
        .unwrap_or_else(|| panic!("bpftrace printed no @ticks:\n{stdout}\n{stderr}"))
        .trim()
        .parse()
        .unwrap();
    assert!(printed >= first, "bpftrace's own count {printed} ≥ what map dump saw {first}");

    let (code, err) = app.finish();
    assert_eq!(code, Some(0), "the app saw a changed result: {err}");
}

/// The quick start: `userbpf run ./app` in one terminal, `userbpf bpftrace`
/// in another, as an ordinary user.
#[test]
fn quick_start_run_and_bpftrace() {
    require_prerequisites();
    let w = World::new("e2e-quick-start");
    let pidfile = w.scratch.path("run/app.pid");
    let app_cmd = w.userbpf(&["run", "--", w.app.to_str().unwrap(), pidfile.to_str().unwrap()]).stderr(Stdio::piped()).spawn();
    let child = app_cmd.expect("userbpf run");
    let pid: i32 = wait_for_file(&pidfile).trim().parse().unwrap();
    // With setpriv in between, the app is setpriv's exec image: same pid either way.
    assert_eq!(pid, child.id() as i32, "userbpf run execs the app (same pid)");
    let app = Target { child, pid };

    let script = format!("uprobe:{}:tick {{ @n = @n + 1; if (@n >= 20) {{ exit(); }} }}", w.app.display());
    let out = run_with_timeout(w.userbpf(&["bpftrace", "-e", &script]).stdin(Stdio::null()));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let n: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@n: "))
        .unwrap_or_else(|| panic!("no @n in bpftrace's output:\n{stdout}\n{stderr}"))
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 20, "{stdout}");
    let (code, err) = app.finish();
    assert_eq!(code, Some(0), "the app saw a changed result: {err}");
}
