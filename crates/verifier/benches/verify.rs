//! Verification time: real bpftrace programs from the acceptance corpus (up to
//! 247 instructions) and a synthetic 100,000-instruction program made of
//! bpftrace's `@c[key] = count()` shape repeated (lookup, NULL check, update
//! or increment), which forks at every block and joins again.
//!
//!     cargo bench -p verifier --bench verify

use std::collections::HashMap;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use verifier::{map_type, verify, MapDesc, ProgType, PseudoLoad, VerifyOptions};
use vm::insn::Insn;

struct Captured {
    insns: Vec<Insn>,
    maps: HashMap<i32, MapDesc>,
}

fn load(name: &str) -> Captured {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/accept").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut c = Captured { insns: Vec::new(), maps: HashMap::new() };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "insn" => c.insns.push(Insn::from_u64(u64::from_str_radix(f[1], 16).unwrap())),
            "map" => {
                let n = |i: usize| f[i].parse::<u32>().unwrap();
                c.maps.insert(f[1].parse().unwrap(), MapDesc { map_type: n(2), key_size: n(3), value_size: n(4), max_entries: n(5) });
            }
            _ => {}
        }
    }
    c
}

/// `blocks` copies of the count() shape: ~16 instructions each.
fn synthetic(blocks: usize) -> Vec<Insn> {
    let mut src = String::from("mov %r6, %r1\n");
    for b in 0..blocks {
        src.push_str(&format!(
            "ldxdw %r1, [%r6+112]
             and %r1, 3
             stxdw [%r10-8], %r1
             lddw %r1, map_fd(1)
             mov %r2, %r10
             add %r2, -8
             call bpf_map_lookup_elem
             jeq %r0, 0, miss{b}
             ldxdw %r1, [%r0+0]
             add %r1, 1
             stxdw [%r0+0], %r1
             ja next{b}
             miss{b}:
             stdw [%r10-16], 1
             lddw %r1, map_fd(1)
             mov %r2, %r10
             add %r2, -8
             mov %r3, %r10
             add %r3, -16
             mov %r4, 0
             call bpf_map_update_elem
             next{b}:
             "
        ));
    }
    src.push_str("mov %r0, 0\nexit\n");
    vm::asm::assemble(&src).unwrap()
}

fn bench(c: &mut Criterion) {
    let opts = VerifyOptions::default();
    for name in [
        "bpftrace-count-003.prog",
        "bpftrace-control_flow-004.prog",
        "bpftrace-map_keys_delete_clear_zero-007.prog",
        "bpftrace-aggregations-003.prog",
    ] {
        let p = load(name);
        let maps = |l: PseudoLoad| p.maps.get(&l.imm).copied();
        verify(&p.insns, ProgType::Kprobe, &maps, &opts).expect("corpus program verifies");
        c.bench_function(&format!("verify {} ({} insns)", name.trim_end_matches(".prog"), p.insns.len()), |b| {
            b.iter(|| verify(&p.insns, ProgType::Kprobe, &maps, &opts).unwrap())
        });
    }
    let big = synthetic(100_000 / 22 + 1);
    let maps = |_: PseudoLoad| Some(MapDesc { map_type: map_type::HASH, key_size: 8, value_size: 8, max_entries: 4 });
    let v = verify(&big, ProgType::Kprobe, &maps, &opts).expect("synthetic program verifies");
    println!("synthetic: {} insns, {} processed", big.len(), v.insns_processed);
    let mut g = c.benchmark_group("large");
    g.sample_size(10);
    g.bench_function(format!("verify synthetic ({} insns)", big.len()), |b| {
        b.iter(|| verify(&big, ProgType::Kprobe, &maps, &opts).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
