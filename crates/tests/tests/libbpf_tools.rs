//! Debian's libbpf-tools (`/usr/sbin/gethostlatency`, `bashreadline`,
//! `funclatency`: CO-RE skeletons built on libbpf 1.x), unmodified, loaded
//! through `libsyscall_server.so` as an ordinary user, their programs running
//! in targets that have `libagent.so` preloaded.
//!
//! What this exercises beyond bpftrace: `.rodata` maps created with
//! `BPF_F_RDONLY_PROG | BPF_F_MMAPABLE`, filled, frozen and read by the
//! verifier (funclatency's dead `-c` branch), `.bss` read by the loader
//! through `mmap` of the map fd (funclatency's histogram), a
//! `CGROUP_ARRAY` that is created but never used, `perf_buffer__new` rings
//! of libbpf's own size, uprobe attachment through `BPF_LINK_CREATE`.
//!
//! Expectations were derived once from the same tools under the kernel (as
//! root, kernel 6.x): the tests compare structure and counts, never timing
//! columns, and do not need kernel eBPF. The one difference on purpose: the
//! kernel's gethostlatency prints an empty HOST for the very first lookup
//! (its `bpf_probe_read_user_str` cannot fault the string's page in), while
//! userbpf reads it.
//!
//! The loaders' stdout is a pipe, so they print nothing until they exit:
//! attachment is detected by the registry's link records instead.

use std::path::Path;
use std::time::{Duration, Instant};

use tests::{Output, Proc, World};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Start a libbpf tool with the syscall server preloaded.
fn spawn_tool(world: &World, tool: &str, args: &[&str]) -> Proc {
    world
        .spawn_loader(tool, args)
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"))
}

/// `tool` must be installed: `scripts/setup.sh` installs it (CI runs it),
/// so a missing one is a failure, not a skip.
fn require(tool: &str, package: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} is not installed (Debian package {package}; scripts/setup.sh installs it)"
    );
}

/// Wait until the loader has published `n` attachments.
fn wait_for_links(world: &World, loader: &mut Proc, n: usize) {
    world.wait_for_links(loader, n, STEP_TIMEOUT);
}

fn describe(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}--- status {:?}{}",
        out.stdout,
        out.stderr,
        out.status,
        if out.timed_out { " (timed out)" } else { "" }
    )
}

/// Interrupt a loader that runs until Ctrl-C and collect its output.
fn interrupt(loader: Proc) -> Output {
    loader.signal(libc::SIGINT);
    let out = loader.wait_timeout(STEP_TIMEOUT);
    assert!(
        !out.timed_out,
        "the loader ignored SIGINT\n{}",
        describe(&out)
    );
    out
}

#[test]
fn gethostlatency() {
    let tool = "/usr/sbin/gethostlatency";
    require(tool, "libbpf-tools");
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let resolver = world
        .compile_app("resolver")
        .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let mut loader = spawn_tool(&world, tool, &[]);
    // getaddrinfo, gethostbyname, gethostbyname2: entry and return each.
    wait_for_links(&world, &mut loader, 6);
    let app = world
        .spawn_with_agent(&resolver.to_string_lossy(), &["2"], None)
        .expect("spawn resolver");
    let app_pid = app.pid();
    let app_out = app.wait_timeout(STEP_TIMEOUT);
    assert_eq!(
        app_out.status,
        Some(0),
        "resolver failed: {}",
        app_out.stderr
    );
    // The events are in the perf rings; give the loader's poll loop a moment.
    std::thread::sleep(Duration::from_millis(500));
    let out = interrupt(loader);

    // Kernel: the header, then one line per lookup (2 rounds × 3 calls):
    // `HH:MM:SS PID resolver LATms localhost`.
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines
            .next()
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>),
        Some(vec!["TIME", "PID", "COMM", "LATms", "HOST"]),
        "{}",
        describe(&out)
    );
    let events: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(events.len(), 6, "expected 6 lookups\n{}", describe(&out));
    for e in &events {
        assert_eq!(e.len(), 5, "malformed line {e:?}\n{}", describe(&out));
        assert_eq!(e[1], app_pid.to_string(), "pid of {e:?}");
        assert_eq!(e[2], "resolver", "comm of {e:?}");
        let ms: f64 = e[3].parse().unwrap_or_else(|_| panic!("latency of {e:?}"));
        assert!((0.0..10_000.0).contains(&ms), "latency of {e:?}");
        assert_eq!(e[4], "localhost", "host of {e:?}");
    }
}

#[test]
fn bashreadline() {
    let tool = "/usr/sbin/bashreadline";
    require(tool, "libbpf-tools");
    require("/usr/bin/script", "util-linux"); // a terminal for readline
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let mut loader = spawn_tool(&world, tool, &[]);
    // One uretprobe on /usr/bin/bash:readline.
    wait_for_links(&world, &mut loader, 1);
    // An interactive bash on a pseudo-terminal (readline only runs on a
    // tty), with the agent, typing two commands.
    let bash = world
        .spawn_with_agent(
            "/usr/bin/script",
            &["-qfc", "bash --norc --noprofile -i", "/dev/null"],
            Some(b"echo hello-from-bash\nexit\n"),
        )
        .expect("spawn bash");
    let bash_out = bash.wait_timeout(STEP_TIMEOUT);
    assert!(
        !bash_out.timed_out,
        "bash did not exit: {}",
        bash_out.stderr
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = interrupt(loader);

    // Kernel: `TIME      PID     COMMAND`, then `HH:MM:SS  PID  echo
    // hello-from-bash` and `HH:MM:SS  PID  exit` from the same bash.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", describe(&out));
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TIME", "PID", "COMMAND"]
    );
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    let second: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        first[2..],
        ["echo", "hello-from-bash"],
        "{}",
        describe(&out)
    );
    assert_eq!(second[2..], ["exit"], "{}", describe(&out));
    assert_eq!(first[1], second[1], "both commands come from one bash");
    assert!(first[1].parse::<u32>().is_ok(), "pid column: {first:?}");
}

/// funclatency's histogram: `(low, high, count)` rows, in order.
fn histogram_rows(stdout: &str) -> Vec<(u64, u64, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            // "      2048 -> 4095       : 5        |*****|"
            let (range, rest) = l.split_once(':')?;
            let (low, high) = range.split_once("->")?;
            let count = rest.split_whitespace().next()?;
            Some((
                low.trim().parse().ok()?,
                high.trim().parse().ok()?,
                count.parse().ok()?,
            ))
        })
        .collect()
}

/// Check a `funclatency -u` run over one `napper` (5 calls of nap(3000 µs),
/// then 5 of nap(20000 µs)).
fn check_napper_histogram(out: &Output, target: &str) {
    // Kernel: "Tracing TARGET.  Hit Ctrl-C to exit", a blank line, the
    // "usec : count distribution" header, power-of-two rows 0 -> 1 up to the
    // highest non-empty bucket (16384 -> 32767), "Exiting trace of TARGET".
    assert!(
        out.stdout
            .starts_with(&format!("Tracing {target}.  Hit Ctrl-C to exit\n")),
        "{}",
        describe(out)
    );
    assert!(
        out.stdout
            .contains("usec                : count    distribution"),
        "{}",
        describe(out)
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with(&format!("Exiting trace of {target}")),
        "{}",
        describe(out)
    );
    let rows = histogram_rows(&out.stdout);
    assert!(!rows.is_empty(), "no histogram\n{}", describe(out));
    for (i, &(low, high, _)) in rows.iter().enumerate() {
        let want_low = if i == 0 { 0 } else { 1u64 << i };
        assert_eq!(
            (low, high),
            (want_low, (1u64 << (i + 1)) - 1),
            "row {i}\n{}",
            describe(out)
        );
    }
    assert!(
        rows.last().is_some_and(|r| r.2 > 0),
        "the last row is the highest non-empty bucket"
    );
    let total: u64 = rows.iter().map(|r| r.2).sum();
    let short: u64 = rows
        .iter()
        .filter(|r| r.0 >= 2048 && r.1 < 16384)
        .map(|r| r.2)
        .sum();
    let long: u64 = rows.iter().filter(|r| r.0 >= 16384).map(|r| r.2).sum();
    assert_eq!(
        (total, short, long),
        (10, 5, 5),
        "5 naps of 3 ms and 5 of 20 ms\n{}",
        describe(out)
    );
}

#[test]
fn funclatency_program_function() {
    let tool = "/usr/sbin/funclatency";
    require(tool, "libbpf-tools");
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let napper = world
        .compile_app("napper")
        .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let target = format!("{}:nap", napper.display());
    let mut loader = spawn_tool(&world, tool, &["-u", "-d", "4", &target]);
    // Entry and return probes.
    wait_for_links(&world, &mut loader, 2);
    let app = world
        .spawn_with_agent(&napper.to_string_lossy(), &["0"], None)
        .expect("spawn napper");
    let app_out = app.wait_timeout(STEP_TIMEOUT);
    assert_eq!(app_out.status, Some(0), "napper failed: {}", app_out.stderr);
    // -d 4: the tool prints the histogram and exits by itself.
    let out = loader.wait_timeout(STEP_TIMEOUT);
    assert_eq!(out.status, Some(0), "{}", describe(&out));
    check_napper_histogram(&out, &target);
}

#[test]
fn funclatency_pid_binary_function() {
    let tool = "/usr/sbin/funclatency";
    require(tool, "libbpf-tools");
    let world = World::new().unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let napper = world
        .compile_app("napper")
        .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    // The app runs first and naps on SIGUSR1; `-p PID :nap` probes the
    // binary of PID, and the app's running agent patches it live.
    // `env` (with the agent too) execs napper with agent debug output on.
    let napper_path = napper.to_string_lossy();
    let mut app = world
        .spawn_with_agent(
            "/usr/bin/env",
            &["USERBPF_AGENT_DEBUG=1", &napper_path, "signal"],
            None,
        )
        .expect("spawn napper");
    assert!(
        app.wait_for_stdout("napper: waiting", STEP_TIMEOUT),
        "napper did not start: {}",
        app.stderr_now()
    );
    let pid = app.pid().to_string();
    let mut loader = spawn_tool(&world, tool, &["-u", "-d", "6", "-p", &pid, ":nap"]);
    wait_for_links(&world, &mut loader, 2);
    wait_until_attached(&app, 2);
    app.signal(libc::SIGUSR1);
    let app_out = app.wait_timeout(STEP_TIMEOUT);
    assert_eq!(app_out.status, Some(0), "napper failed: {}", app_out.stderr);
    let out = loader.wait_timeout(STEP_TIMEOUT);
    assert_eq!(out.status, Some(0), "{}", describe(&out));
    check_napper_histogram(&out, ":nap");
}

/// Wait until the running `app`'s agent has attached `n` links (it logs
/// each with `USERBPF_AGENT_DEBUG=1`). The entry and return probes of one
/// function are attached one after the other; calls made in between would
/// have an entry but no return.
fn wait_until_attached(app: &Proc, n: usize) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let log = app.stderr_now();
        if log.matches("attached link").count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not attach {n} probes within {STEP_TIMEOUT:?}: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
