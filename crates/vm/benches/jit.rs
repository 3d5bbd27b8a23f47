//! JIT benchmarks (criterion; `cargo bench -p vm --bench jit`).
//!
//! - `code/<program>`: speed of the generated code on three programs — a
//!   prime-counting loop, a 64 KiB copy loop and a string compare — plus
//!   the cost of a call (`return_one`) and of helper calls
//!   (`helper_calls`: 1,000 calls), against
//!   the same algorithm in C (`benches/native/programs.c`, compiled here
//!   with gcc -O2, once as is and once with gcc's loop-to-memcpy and
//!   vectorizer passes off, the "same algorithm" scalar code), against
//!   rbpf's JIT, and against userbpf's interpreter for scale. The
//!   min-time table also shows the JIT with loop unrolling off
//!   (`no_unroll`) and with unrolling but no deferred increments
//!   (`no_defer`).
//! - `compile/<n> insns`: JIT compile throughput (code generation plus
//!   mapping the code W^X) on a mixed program of n instructions.
//!
//! Results are recorded in docs/bench/vm-jit.md.

use std::ffi::{c_void, CString};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vm::insn::*;
use vm::interp::{self, RunOptions};
use vm::jit::{JitOptions, JitProgram};
use vm::program::{Helpers, Program};

const PRIME_LIMIT: u64 = 20_000;
const COPY_MEM: usize = 128 * 1024;
const STRING_MEM: usize = 8192;
const STRING_LEN: usize = 4000;

const PRIMES: &str = "
    ldxdw %r6, [%r1]
    mov %r0, 0
    mov %r1, 2
outer:
    jge %r1, %r6, done
    mov %r2, 2
inner:
    mov %r3, %r2
    mul %r3, %r2
    jgt %r3, %r1, prime
    mov %r4, %r1
    mod %r4, %r2
    jeq %r4, 0, next
    add %r2, 1
    ja inner
prime:
    add %r0, 1
next:
    add %r1, 1
    ja outer
done:
    exit
";

const COPY_64K: &str = "
    mov %r2, %r1
    mov %r3, %r1
    add %r3, 65536
    mov %r4, %r3
loop:
    ldxdw %r5, [%r2]
    stxdw [%r3], %r5
    add %r2, 8
    add %r3, 8
    jlt %r2, %r4, loop
    mov %r0, 0
    exit
";

const STRING_COMPARE: &str = "
    mov %r2, %r1
loop:
    ldxb %r4, [%r2]
    ldxb %r5, [%r2+4096]
    jne %r4, %r5, differ
    add %r2, 1
    jne %r4, 0, loop
    mov %r0, 0
    exit
differ:
    mov %r0, %r4
    sub %r0, %r5
    exit
";

const RETURN_ONE: &str = "
    mov %r0, 1
    exit
";

const HELPER_CALLS: &str = "
    mov %r6, 0
    mov %r7, 0
loop:
    mov %r1, %r6
    mov %r2, %r7
    call 1
    mov %r7, %r0
    add %r6, 1
    jlt %r6, 1000, loop
    mov %r0, %r7
    exit
";

/// Helper 1 for userbpf (C ABI with env) ...
unsafe extern "C" fn mix_helper(a: u64, b: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    (a ^ b) + 1
}

/// ... and the same for rbpf (its helper ABI).
fn rbpf_mix_helper(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    (a ^ b) + 1
}

type NativeFn = unsafe extern "C" fn(*mut u8) -> u64;

/// The C programs, compiled into a shared object with `flags` and loaded.
struct Native {
    _handle: *mut c_void,
    primes: NativeFn,
    copy: NativeFn,
    compare: NativeFn,
    return_one: NativeFn,
    helper_calls: NativeFn,
}

fn compile_native(out_dir: &Path, name: &str, extra_flags: &[&str]) -> Native {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/native/programs.c");
    let so = out_dir.join(format!("{name}.so"));
    let compiler = cc::Build::new()
        .opt_level(2)
        .debug(false)
        .target("x86_64-unknown-linux-gnu")
        .host("x86_64-unknown-linux-gnu")
        .cargo_metadata(false)
        .get_compiler();
    let mut cmd = compiler.to_command();
    cmd.args(extra_flags)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&source);
    let status = cmd.status().expect("running the C compiler");
    assert!(status.success(), "C compiler failed: {cmd:?}");
    let path = CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: loading a library we just built; its constructors are gcc's.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", so.display());
    let sym = |n: &str| -> NativeFn {
        let n = CString::new(n).unwrap();
        // SAFETY: `handle` is a live library handle.
        let p = unsafe { libc::dlsym(handle, n.as_ptr()) };
        assert!(!p.is_null(), "symbol missing");
        // SAFETY: the symbol is a C function with the NativeFn signature.
        unsafe { std::mem::transmute::<*mut c_void, NativeFn>(p) }
    };
    Native {
        primes: sym("count_primes"),
        copy: sym("copy_64k"),
        compare: sym("string_compare"),
        return_one: sym("return_one"),
        helper_calls: sym("helper_calls"),
        _handle: handle,
    }
}

struct Case {
    name: &'static str,
    asm: &'static str,
    mem: Vec<u8>,
    native: fn(&Native) -> NativeFn,
    expected: u64,
}

fn cases() -> Vec<Case> {
    let mut primes_mem = vec![0u8; 8];
    primes_mem.copy_from_slice(&PRIME_LIMIT.to_le_bytes());
    let copy_mem: Vec<u8> = (0..COPY_MEM).map(|i| (i * 7 % 251) as u8).collect();
    let mut string_mem = vec![0u8; STRING_MEM];
    for i in 0..STRING_LEN {
        string_mem[i] = b'a' + (i % 26) as u8;
        string_mem[4096 + i] = b'a' + (i % 26) as u8;
    }
    string_mem[STRING_LEN - 1] = b'b';
    string_mem[4096 + STRING_LEN - 1] = b'd';
    vec![
        Case {
            name: "prime_count",
            asm: PRIMES,
            mem: primes_mem,
            native: |n| n.primes,
            expected: 2262,
        },
        Case {
            name: "copy_64k",
            asm: COPY_64K,
            mem: copy_mem,
            native: |n| n.copy,
            expected: 0,
        },
        Case {
            name: "string_compare",
            asm: STRING_COMPARE,
            mem: string_mem,
            native: |n| n.compare,
            expected: (-2i64) as u64,
        },
        Case {
            name: "return_one",
            asm: RETURN_ONE,
            mem: vec![0; 8],
            native: |n| n.return_one,
            expected: 1,
        },
        Case {
            name: "helper_calls",
            asm: HELPER_CALLS,
            mem: vec![0; 8],
            native: |n| n.helper_calls,
            expected: helper_calls_result(),
        },
    ]
}

fn helper_calls_result() -> u64 {
    (0..1000u64).fold(0, |acc, i| (i ^ acc) + 1)
}

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("userbpf-jit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench_code(c: &mut Criterion) {
    let dir = out_dir();
    let native_o2 = compile_native(&dir, "o2", &[]);
    let native_scalar = compile_native(
        &dir,
        "o2_scalar",
        &["-fno-tree-vectorize", "-fno-tree-loop-distribute-patterns"],
    );
    let mut helpers = Helpers::new();
    helpers.register(1, mix_helper);
    for case in cases() {
        let insns = vm::asm::assemble(case.asm).unwrap();
        let prog = Program::load_plain(&insns).unwrap();
        let jit = JitProgram::compile(&prog, &helpers, &JitOptions::default()).unwrap();
        let no_unroll = JitOptions {
            unroll_loops: false,
            ..JitOptions::default()
        };
        let jit_no_unroll = JitProgram::compile(&prog, &helpers, &no_unroll).unwrap();
        let no_defer = JitOptions {
            defer_loop_increments: false,
            ..JitOptions::default()
        };
        let jit_no_defer = JitProgram::compile(&prog, &helpers, &no_defer).unwrap();
        let bytes: Vec<u8> = insns
            .iter()
            .flat_map(|i| i.to_u64().to_le_bytes())
            .collect();
        let mut rbpf_vm = rbpf::EbpfVmRaw::new(Some(&bytes)).unwrap();
        rbpf_vm.register_helper(1, rbpf_mix_helper).unwrap();
        rbpf_vm.jit_compile().unwrap();

        let mut mem = case.mem.clone();
        let ptr = mem.as_mut_ptr();
        let len = mem.len();
        // Every engine must compute the expected result before it is timed.
        // SAFETY (all runs below): the programs only touch `mem`, whose
        // layout each program was written for.
        let results = unsafe {
            [
                jit.call(ptr, std::ptr::null_mut()),
                jit_no_unroll.call(ptr, std::ptr::null_mut()),
                jit_no_defer.call(ptr, std::ptr::null_mut()),
                rbpf_vm
                    .execute_program_jit(std::slice::from_raw_parts_mut(ptr, len))
                    .unwrap(),
                (case.native)(&native_o2)(ptr),
                (case.native)(&native_scalar)(ptr),
                interp::run(
                    &prog,
                    &helpers,
                    ptr,
                    std::ptr::null_mut(),
                    &RunOptions::default(),
                )
                .unwrap(),
            ]
        };
        assert!(
            results.iter().all(|&r| r == case.expected),
            "{}: results {results:?}",
            case.name
        );

        // SAFETY: as above.
        unsafe {
            let native = (case.native)(&native_o2);
            let scalar = (case.native)(&native_scalar);
            print_min_times(
                case.name,
                &mut [
                    ("userbpf_jit", &mut || jit.call(ptr, std::ptr::null_mut())),
                    ("native_gcc_O2", &mut || native(ptr)),
                    ("native_gcc_O2_scalar", &mut || scalar(ptr)),
                    ("rbpf_jit", &mut || {
                        rbpf_vm
                            .execute_program_jit(std::slice::from_raw_parts_mut(ptr, len))
                            .unwrap()
                    }),
                    ("userbpf_jit_no_unroll", &mut || {
                        jit_no_unroll.call(ptr, std::ptr::null_mut())
                    }),
                    ("userbpf_jit_no_defer", &mut || {
                        jit_no_defer.call(ptr, std::ptr::null_mut())
                    }),
                ],
            );
        }

        let mut group = c.benchmark_group(format!("code/{}", case.name));
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        group.bench_function("userbpf_jit", |b| {
            b.iter(|| unsafe { jit.call(black_box(ptr), std::ptr::null_mut()) })
        });
        group.bench_function("native_gcc_O2", |b| {
            let f = (case.native)(&native_o2);
            b.iter(|| unsafe { f(black_box(ptr)) })
        });
        group.bench_function("native_gcc_O2_scalar", |b| {
            let f = (case.native)(&native_scalar);
            b.iter(|| unsafe { f(black_box(ptr)) })
        });
        group.bench_function("rbpf_jit", |b| {
            b.iter(|| unsafe {
                rbpf_vm
                    .execute_program_jit(std::slice::from_raw_parts_mut(black_box(ptr), len))
                    .unwrap()
            })
        });
        group.bench_function("userbpf_interp", |b| {
            b.iter(|| unsafe {
                interp::run(
                    &prog,
                    &helpers,
                    black_box(ptr),
                    std::ptr::null_mut(),
                    &RunOptions::default(),
                )
                .unwrap()
            })
        });
        group.finish();
        drop(mem);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Robust comparison on a busy machine: the engines run interleaved, many
/// rounds, and each keeps its fastest sample (noise only ever adds time). A
/// sample is a batch of back-to-back runs lasting a few microseconds, so
/// short programs are not lost in the clock's resolution. Printed as a table
/// of minimum times per run and ratios to the gcc -O2 code.
fn print_min_times(name: &str, engines: &mut [(&str, &mut dyn FnMut() -> u64)]) {
    const ROUNDS: usize = 300;
    const SAMPLE: Duration = Duration::from_micros(5);
    let batch: Vec<u32> = engines
        .iter_mut()
        .map(|(_, run)| {
            let start = std::time::Instant::now();
            for _ in 0..16 {
                black_box(run());
            }
            let per_run = start.elapsed() / 16;
            (SAMPLE.as_nanos() / per_run.as_nanos().max(1)).clamp(1, 100_000) as u32
        })
        .collect();
    let mut best = vec![f64::MAX; engines.len()];
    for _ in 0..ROUNDS {
        for (i, (_, run)) in engines.iter_mut().enumerate() {
            let start = std::time::Instant::now();
            for _ in 0..batch[i] {
                black_box(run());
            }
            best[i] = best[i].min(start.elapsed().as_secs_f64() / batch[i] as f64);
        }
    }
    let native = best[1];
    let scalar = best[2];
    eprintln!("min-of-{ROUNDS} {name}:");
    for ((engine, _), &t) in engines.iter().zip(&best) {
        eprintln!(
            "  {engine:<22} {:>12.4} us   x{:.2} of gcc -O2   x{:.2} of gcc -O2 scalar",
            t * 1e6,
            t / native,
            t / scalar
        );
    }
}

unsafe extern "C" fn bench_helper(r1: u64, r2: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    r1 ^ r2
}

/// A straight mix of what compiled programs contain: ALU (imm and reg,
/// 32/64-bit), lddw, stack loads/stores, div/mod, byte swaps, atomics,
/// forward conditional jumps and helper calls; `n` slots ending in `exit`.
fn mixed_program(n: usize) -> Vec<Insn> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0u32;
    while out.len() + 4 < n {
        let r = (i % 9 + 1) as u8 % 10; // r1..r9
        let d = if r == 0 { 1 } else { r };
        let s = ((i * 7) % 9 + 1) as u8;
        match i % 16 {
            0 => out.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i as i32)),
            1 => out.push(Insn::new(BPF_ALU64 | BPF_ADD | BPF_X, d, s, 0, 0)),
            2 => out.push(Insn::new(BPF_ALU | BPF_MUL | BPF_K, d, 0, 0, 13)),
            3 => out.push(Insn::new(
                BPF_STX | BPF_MEM | BPF_DW,
                10,
                d,
                -8 * (1 + (i % 60) as i16),
                0,
            )),
            4 => out.push(Insn::new(
                BPF_LDX | BPF_MEM | BPF_W,
                d,
                10,
                -8 * (1 + (i % 60) as i16),
                0,
            )),
            5 => {
                out.push(Insn::new(LDDW, d, 0, 0, i as i32));
                out.push(Insn::new(0, 0, 0, 0, 0x1234));
            }
            6 => out.push(Insn::new(BPF_ALU64 | BPF_DIV | BPF_X, d, s, 0, 0)),
            7 => out.push(Insn::new(BPF_ALU | BPF_MOD | BPF_K, d, 0, 0, 7)),
            8 => out.push(Insn::new(BPF_JMP | BPF_JGT | BPF_X, d, s, 2, 0)),
            9 => out.push(Insn::new(BPF_ALU64 | BPF_LSH | BPF_X, d, s, 0, 0)),
            10 => out.push(Insn::new(BPF_ALU | BPF_END | BPF_TO_BE, d, 0, 0, 32)),
            11 => out.push(Insn::new(BPF_JMP32 | BPF_JNE | BPF_K, d, 0, 1, 5)),
            12 => out.push(Insn::new(
                BPF_STX | BPF_ATOMIC | BPF_DW,
                10,
                d,
                -16,
                BPF_ADD as i32,
            )),
            13 => out.push(Insn::new(BPF_ALU64 | BPF_XOR | BPF_K, d, 0, 0, -1)),
            14 => out.push(Insn::new(CALL, 0, 0, 0, 1)),
            _ => out.push(Insn::new(BPF_ALU64 | BPF_ARSH | BPF_K, d, 0, 0, 3)),
        }
        i += 1;
    }
    while out.len() + 1 < n {
        out.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0));
    }
    out.push(Insn::new(EXIT, 0, 0, 0, 0));
    out
}

fn bench_compile(c: &mut Criterion) {
    let mut helpers = Helpers::new();
    helpers.register(1, bench_helper);
    let opts = JitOptions::default();
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for n in [1_000usize, 100_000] {
        let prog = Program::load_plain(&mixed_program(n)).expect("mixed program loads");
        let mut best = Duration::MAX;
        let mut code_size = 0;
        for _ in 0..200 {
            let start = std::time::Instant::now();
            let jit = JitProgram::compile(&prog, &helpers, &opts).unwrap();
            best = best.min(start.elapsed());
            code_size = jit.code_size();
        }
        eprintln!(
            "min-of-200 compile of {n} insns ({code_size} bytes of code): {:.1} us, {:.1} M insns/s",
            best.as_secs_f64() * 1e6,
            n as f64 / best.as_secs_f64() / 1e6
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("userbpf_jit", format!("{n} insns")),
            &prog,
            |b, prog| {
                b.iter_with_large_drop(|| {
                    JitProgram::compile(black_box(prog), &helpers, &opts).unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_code, bench_compile);
criterion_main!(benches);
