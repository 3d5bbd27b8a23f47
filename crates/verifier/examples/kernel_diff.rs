//! Differential check against the running kernel's verifier (root only):
//! generates programs like the fuzzer and reports every program userbpf
//! accepts but the kernel refuses (a candidate unsoundness, or a place where
//! the kernel is merely stricter), with the kernel's reason.
//!
//!     sudo target/release/examples/kernel_diff [PROGRAMS] [SEED]

#[path = "../tests/fuzz_support/mod.rs"]
mod fuzz_support;
#[path = "../tests/kernel_client/mod.rs"]
mod kernel_client;

use std::collections::BTreeMap;

use verifier::{verify_with_maps, ProgType, VerifyOptions};
use vm::insn::Insn;

/// The fuzzer's maps (fds 1..=8) in the kernel; 6 read-only for programs
/// and frozen with `fuzz_support::FROZEN`, as `fuzz_support::FuzzMaps` says.
fn create_maps() -> Vec<(i32, i32)> {
    let maps: Vec<kernel_client::KernelMap> = (1..=8)
        .map(|fd| kernel_client::KernelMap {
            fd,
            desc: fuzz_support::fuzz_map(fd).unwrap(),
            readonly_for_programs: fd == 6,
            frozen_value: (fd == 6).then_some(&fuzz_support::FROZEN[..]),
        })
        .collect();
    kernel_client::create_maps(&maps)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let programs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(7);
    let fds = create_maps();
    let mut rng = fuzz_support::Rng::new(seed);
    let mut pool: Vec<Vec<Insn>> = Vec::new();
    let (mut ours, mut both) = (0u64, 0u64);
    let mut reasons: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for _ in 0..programs {
        let prog = if pool.is_empty() || rng.chance(50) {
            fuzz_support::generate(&mut rng)
        } else {
            let base = pool[rng.below(pool.len() as u64) as usize].clone();
            fuzz_support::mutate(&mut rng, &base)
        };
        if verify_with_maps(&prog, ProgType::Kprobe, &fuzz_support::FuzzMaps, &VerifyOptions::default()).is_err() {
            continue;
        }
        ours += 1;
        pool.push(prog.clone());
        match kernel_client::load(&prog, ProgType::Kprobe, &fds) {
            Ok(()) => both += 1,
            Err((errno, reason)) => {
                let reason = format!("errno {errno}: {reason}");
                let key: String = reason.chars().filter(|c| !c.is_ascii_digit()).collect();
                let hex = prog.iter().map(|i| format!("{:016x}", i.to_u64())).collect::<Vec<_>>().join(" ");
                reasons.entry(key).or_insert((0, hex)).0 += 1;
            }
        }
    }
    println!("{ours} accepted by userbpf, {both} of them by the kernel too");
    for (reason, (count, example)) in &reasons {
        println!("{count:6} kernel refused: {reason}\n       e.g. {example}");
    }
}
