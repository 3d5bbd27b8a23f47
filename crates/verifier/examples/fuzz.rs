//! Long-running local fuzzer for the verifier (see `tests/fuzz_support`):
//!
//!     cargo run --release -p verifier --example fuzz -- [SECONDS] [SEED]
//!
//! Runs sessions of 100,000 programs until SECONDS (default 60) have passed,
//! printing throughput and every finding (a program the verifier accepted
//! that then left its memory regions in the checked interpreter).

#[path = "../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let mut seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let start = Instant::now();
    let mut total = fuzz_support::Stats::default();
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut s = fuzz_support::Stats::default();
        fuzz_support::session(seed, 100_000, &mut s);
        total.programs += s.programs;
        total.accepted += s.accepted;
        total.runs += s.runs;
        for f in &s.findings {
            println!("FINDING (seed {seed}): {f}");
        }
        total.findings.extend(s.findings);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:.0}s: {} programs ({:.0}/hour), {} accepted, {} checked runs, {} findings",
            secs,
            total.programs,
            total.programs as f64 / secs * 3600.0,
            total.accepted,
            total.runs,
            total.findings.len()
        );
        seed += 1;
    }
    if !total.findings.is_empty() {
        std::process::exit(1);
    }
}
