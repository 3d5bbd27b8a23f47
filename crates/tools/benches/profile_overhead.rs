//! What sampling costs the sampled app: a fixed amount of work
//! (`apps/busy.c -n N`, CPU-bound, frame pointers) run with the agent and
//! no probe, and under `userbpf profile` at 99 Hz and at 999 Hz, in
//! interleaved rounds; the app reports its thread's CPU time (the sampled thread; the agent's watcher thread is not in it). At 99 Hz the
//! difference drowns in the machine's noise, so the cost of one sample is
//! also measured where it shows (999 Hz: the extra CPU time over the
//! samples taken) and scaled to 99 Hz. Goal (issue 14): under 1% at 99 Hz.
//!
//! Run: `cargo bench -p tools --bench profile_overhead`.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROUNDS: usize = 21;
const WORK: &str = "1500"; // about 1.5 s of CPU

fn build(dir: &Path) -> PathBuf {
    let busy = dir.join("busy");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/apps/busy.c");
    let ok = Command::new("gcc").args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"]).arg(&busy).arg(source).status().unwrap();
    assert!(ok.success(), "gcc busy.c");
    busy
}

/// The app's CPU seconds and, for `profile`, the samples it took.
fn cpu_seconds(args: &[&str], registry: &Path) -> (f64, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_userbpf")).args(args).env("USERBPF_DIR", registry).output().unwrap();
    assert!(out.status.success(), "userbpf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // `profile` prints folded stacks (`stack count`) after the app's line.
    let cpu = text.lines().find_map(|l| l.trim().parse::<f64>().ok()).unwrap_or_else(|| panic!("no CPU time in {text:?}"));
    let samples = text.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok()).sum();
    (cpu, samples)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("userbpf-bench-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let registry = dir.join("registry");
    std::fs::create_dir_all(&registry).unwrap();
    std::fs::set_permissions(&registry, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let busy = build(&dir);
    let busy = busy.to_str().unwrap();
    let (mut plain, mut at99, mut fast, mut samples) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // The order rotates each round: the machine drifts within a round.
        for variant in (0..3).map(|v| (v + round) % 3) {
            match variant {
                0 => plain.push(cpu_seconds(&["run", "--", busy, "-n", WORK], &registry).0),
                1 => at99.push(cpu_seconds(&["profile", "-F", "99", "--", busy, "-n", WORK], &registry).0),
                _ => {
                    let (cpu, n) = cpu_seconds(&["profile", "-F", "999", "--", busy, "-n", WORK], &registry);
                    fast.push(cpu);
                    samples.push(n as f64);
                }
            }
        }
        eprintln!("round {round}: agent only {:.4} s, 99 Hz {:.4} s, 999 Hz {:.4} s", plain[round], at99[round], fast[round]);
    }
    let (p, a, f, n) = (median(plain.clone()), median(at99.clone()), median(fast.clone()), median(samples));
    let min = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    let (pm, am, fm) = (min(&plain), min(&at99), min(&fast));
    let spread = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{lo:.4}–{hi:.4}")
    };
    let per_sample = (fm - pm) / n;
    println!("app CPU time for the same work, median of {ROUNDS} interleaved rounds (min–max):");
    println!("  agent, no probe:  {p:.4} s ({})", spread(&plain));
    println!("  profile 99 Hz:    {a:.4} s ({}), {:+.2}%", spread(&at99), (a / p - 1.0) * 100.0);
    println!("  profile 999 Hz:  {f:.4} s ({}), {:+.2}%, {n:.0} samples", spread(&fast), (f / p - 1.0) * 100.0);
    println!("  minima: {pm:.4} / {am:.4} ({:+.2}%) / {fm:.4} ({:+.2}%)", (am / pm - 1.0) * 100.0, (fm / pm - 1.0) * 100.0);
    println!(
        "  per sample, from the minima at 999 Hz (CPU-time timers fire at most once per scheduler tick): {:.2} µs of the thread's CPU",
        per_sample * 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}
