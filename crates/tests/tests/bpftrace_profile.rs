//! `profile:` probes sample the traced app itself: stock bpftrace's
//! `profile:hz:99` run as an ordinary user counts the app's own samples,
//! with its comm, its pid and its user stacks, under bpftrace 0.17, 0.23
//! and 0.27. The app (`apps/busy.c`, frame pointers) splits its work 70/30
//! between `heavy` and `light`; the samples split the same way, within 10
//! points, and there are about 99 per second of the app's CPU time (for 2 s
//! of CPU the kernel gave 171 and userbpf 164–198 on this machine's kind).

use std::time::Duration;

use std::path::Path;
use tests::{Bpftrace, World};

/// CPU seconds process `pid` has used (utime + stime of /proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the app's stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

/// The app's functions, to name the raw addresses bpftrace prints when it
/// cannot open the app's file (bpftrace 0.23/0.27 run in a chroot, where the
/// app's path does not exist; the file is the same).
struct Symbols {
    base: u64,
    /// (file address, name), sorted.
    functions: Vec<(u64, String)>,
}

impl Symbols {
    fn of(pid: u32, exe: &Path) -> Symbols {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the app's maps");
        let name = exe.file_name().unwrap().to_string_lossy().to_string();
        let base = maps
            .lines()
            .find(|l| {
                l.ends_with(&format!("/{name}")) && l.split_whitespace().nth(2) == Some("00000000")
            })
            .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
            .expect("the app's first mapping");
        let nm = std::process::Command::new("nm")
            .arg("-n")
            .arg(exe)
            .output()
            .expect("nm (binutils)");
        let functions = String::from_utf8_lossy(&nm.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, kind, name) = (f.next()?, f.next()?, f.next()?);
                matches!(kind, "T" | "t")
                    .then(|| Some((u64::from_str_radix(addr, 16).ok()?, name.to_string())))?
            })
            .collect();
        Symbols { base, functions }
    }

    /// `frame` as bpftrace prints it, a raw address in the app named.
    fn name(&self, frame: &str) -> String {
        let Some(hex) = frame.strip_prefix("0x") else {
            return frame.to_string();
        };
        let Ok(addr) = u64::from_str_radix(hex, 16) else {
            return frame.to_string();
        };
        let Some(offset) = addr.checked_sub(self.base) else {
            return frame.to_string();
        };
        match self.functions.iter().rev().find(|(a, _)| *a <= offset) {
            Some((a, name)) if offset - a < 0x1000 => format!("{name}+{}", offset - a),
            _ => frame.to_string(),
        }
    }
}

fn run(release: &str) {
    let world = World::with(
        Bpftrace::release(release).unwrap_or_else(|e| panic!("bpftrace {release}: {e}")),
    )
    .unwrap_or_else(|e| panic!("e2e setup: {e}"));
    let busy = world
        .compile_app_with("busy", &["-fno-omit-frame-pointer"])
        .expect("compile busy.c");
    let script = "profile:hz:99 { @comm[comm] = count(); @stacks[ustack] = count(); }";
    let mut bpftrace = world.spawn_bpftrace(script, &[]).expect("spawn bpftrace");
    assert!(
        bpftrace.wait_for_attach(Duration::from_secs(60)),
        "bpftrace: {}",
        bpftrace.stderr_now()
    );
    // Until the samplers are published (the loader binds the per-CPU events after "Attaching").
    world.wait_for_links(&mut bpftrace, 2, Duration::from_secs(30));
    // The app runs on while bpftrace prints (its stacks are symbolised
    // from the live process).
    let mut app = world
        .spawn_with_agent(&busy.to_string_lossy(), &["30"], None)
        .expect("spawn busy");
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(app.pid());
    bpftrace.signal(libc::SIGINT);
    let out = bpftrace.wait_timeout(Duration::from_secs(30));
    assert!(!app.has_exited(), "the app runs on: {}", app.stderr_now());
    let symbols = Symbols::of(app.pid(), &busy);
    app.signal(libc::SIGKILL);
    let stdout = &out.stdout;

    // @comm[busy]: N — the app's own name, about 99 Hz of its 2 s of CPU.
    let samples: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@comm[busy]: "))
        .unwrap_or_else(|| panic!("no samples of the app: {out:?}"))
        .trim()
        .parse()
        .expect("a count");
    // About 99 per second of the app's CPU (the machine may be busy: its
    // CPU time, not the wall time, says what the kernel would sample).
    let expected = 99.0 * cpu;
    assert!(
        samples as f64 > 0.7 * expected - 5.0 && (samples as f64) < 1.3 * expected + 10.0,
        "{samples} samples for {cpu:.2} s of CPU at 99 Hz: {stdout}"
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("@comm[") && !l.starts_with("@comm[busy]")),
        "only the app is sampled: {stdout}"
    );

    // Stacks: each `@stacks[...]: N` block; split heavy/light.
    let (mut heavy, mut light) = (0u64, 0u64);
    let mut frames = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if line.starts_with("@stacks[") {
            frames.clear();
        } else if let Some(n) = line.strip_prefix("]: ") {
            let n: u64 = n.trim().parse().expect("a count");
            let first = frames.first().map(String::as_str).unwrap_or_default();
            if first.starts_with("heavy+") {
                heavy += n;
            } else if first.starts_with("light+") {
                light += n;
            }
            if first.starts_with("heavy+") || first.starts_with("light+") {
                assert!(
                    frames.iter().any(|f| f.starts_with("main+")),
                    "the stack reaches main: {frames:?}\n{stdout}"
                );
            }
        } else if !line.is_empty() {
            frames.push(symbols.name(line));
        }
    }
    let share = heavy as f64 / (heavy + light).max(1) as f64;
    assert!(
        heavy + light >= samples * 9 / 10,
        "stacks name heavy or light: {heavy} + {light} of {samples}\n{stdout}"
    );
    assert!(
        (0.6..=0.8).contains(&share),
        "heavy's share {share:.2} (heavy {heavy}, light {light}), expected 0.70\n{stdout}"
    );
}

#[test]
fn profile_samples_the_app_itself_under_bpftrace_0_17() {
    run("0.17");
}

#[test]
fn profile_samples_the_app_itself_under_bpftrace_0_23() {
    run("0.23");
}

#[test]
fn profile_samples_the_app_itself_under_bpftrace_0_27() {
    run("0.27");
}
