//! Bounded fuzzing run for CI: generated and mutated programs; everything
//! the verifier accepts must run in the VM's checked interpreter without an
//! access outside its regions (see `fuzz_support`). Size with
//! `USERBPF_FUZZ_PROGRAMS` (default 20000 in release builds, 5000 in debug) and `USERBPF_FUZZ_SEED`; for long
//! local runs use `cargo run --release -p verifier --example fuzz`.

mod fuzz_support;

#[test]
fn accepted_programs_stay_in_bounds() {
    let default = if cfg!(debug_assertions) { 5_000 } else { 20_000 };
    let programs = std::env::var("USERBPF_FUZZ_PROGRAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let seed = std::env::var("USERBPF_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let mut stats = fuzz_support::Stats::default();
    fuzz_support::session(seed, programs, &mut stats);
    println!(
        "fuzz: seed {seed}: {} programs, {} accepted ({} with calls, {} with loops, {} with atomics), {} checked runs, {} findings",
        stats.programs,
        stats.accepted,
        stats.accepted_with_call,
        stats.accepted_with_loop,
        stats.accepted_with_atomic,
        stats.runs,
        stats.findings.len()
    );
    assert!(stats.accepted * 10 >= stats.programs, "generator too weak: {} of {} accepted", stats.accepted, stats.programs);
    assert!(stats.findings.is_empty(), "findings:\n{}", stats.findings.join("\n"));
}
