//! Interpreter speed in eBPF instructions per second on a prime-counting
//! loop (trial division, primes below 2000), in the fast unchecked mode and
//! in the checked mode (bounds-checked memory + instruction budget), with
//! rbpf 0.4's interpreter on the same bytecode as a reference point.
//!
//! Run: `cargo bench -p vm --bench interp`. Criterion reports the throughput
//! in "elem/s", which here is executed instructions per second.

use std::ffi::c_void;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vm::error::RunError;
use vm::interp::{self, RunOptions};
use vm::program::{Helpers, Program};

const PRIME_COUNT: &str = "
    mov %r0, 0          # primes found
    mov %r1, 2          # candidate n
outer:
    jge %r1, 2000, done
    mov %r2, 2          # divisor d
inner:
    mov %r3, %r2
    mul %r3, %r2
    jgt %r3, %r1, is_prime
    mov %r4, %r1
    mod %r4, %r2
    jeq %r4, 0, next
    add %r2, 1
    ja inner
is_prime:
    add %r0, 1
next:
    add %r1, 1
    ja outer
done:
    exit
";
const PRIMES_BELOW_2000: u64 = 303;

/// Instructions one run executes: the smallest budget that does not stop it.
fn executed_instructions(prog: &Program, helpers: &Helpers) -> u64 {
    let runs_within = |limit: u64| {
        let opts = RunOptions { instruction_limit: Some(limit), ..Default::default() };
        // SAFETY: the program touches no memory.
        let r = unsafe { interp::run(prog, helpers, std::ptr::null_mut(), std::ptr::null_mut(), &opts) };
        !matches!(r, Err(RunError::InstructionLimit { .. }))
    };
    let (mut low, mut high) = (0u64, 1u64 << 32);
    while low + 1 < high {
        let mid = low + (high - low) / 2;
        if runs_within(mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    high
}

fn bench(c: &mut Criterion) {
    let insns = vm::asm::assemble(PRIME_COUNT).expect("benchmark program assembles");
    let prog = Program::load_plain(&insns).expect("benchmark program loads");
    let helpers = Helpers::new();
    let env: *mut c_void = std::ptr::null_mut();
    let count = executed_instructions(&prog, &helpers);

    let mut group = c.benchmark_group("interp_prime_count");
    group.throughput(Throughput::Elements(count));
    let unchecked = RunOptions::default();
    group.bench_function("unchecked", |b| {
        b.iter(|| {
            // SAFETY: the program touches no memory.
            let r0 = unsafe { interp::run(black_box(&prog), &helpers, std::ptr::null_mut(), env, &unchecked) };
            assert_eq!(r0, Ok(PRIMES_BELOW_2000));
        })
    });
    let checked = RunOptions { memory_regions: Some(&[]), instruction_limit: Some(u64::MAX), ..Default::default() };
    group.bench_function("checked", |b| {
        b.iter(|| {
            // SAFETY: checked mode.
            let r0 = unsafe { interp::run(black_box(&prog), &helpers, std::ptr::null_mut(), env, &checked) };
            assert_eq!(r0, Ok(PRIMES_BELOW_2000));
        })
    });
    let bytecode: Vec<u8> = insns.iter().flat_map(|i| i.to_u64().to_le_bytes()).collect();
    let rbpf_vm = rbpf::EbpfVmNoData::new(Some(&bytecode)).expect("rbpf accepts the program");
    group.bench_function("rbpf_0.4_interpreter", |b| {
        b.iter(|| {
            let r0 = black_box(&rbpf_vm).execute_program();
            assert_eq!(r0.ok(), Some(PRIMES_BELOW_2000));
        })
    });
    group.finish();
    println!("instructions per run: {count}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
