//! Per-call cost of probes against an unprobed call in the same run:
//! uprobe and uretprobe with an empty handler, both together, and the
//! breakpoint fallback for scale.
//!
//! Time is the benchmark thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! not wall time: the build machine is shared and heavily loaded, and
//! CPU time excludes the slices given to other processes.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rewriter::{attach_uprobe, attach_uretprobe, detach, PtRegs};
use std::ffi::c_void;
use std::hint::black_box;

/// `lea rax,[rdi+1]; imul rax,rax,3; ret`: 8 bytes of prologue to displace.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn bench_target(x: u64) -> u64 {
    core::arch::naked_asm!("lea rax, [rdi + 1]", "imul rax, rax, 3", "ret")
}

/// An identical copy that stays unprobed (the baseline).
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn bench_baseline(x: u64) -> u64 {
    core::arch::naked_asm!("lea rax, [rdi + 1]", "imul rax, rax, 3", "ret")
}

/// `lea eax,[rdi+1]; ret`: too short for a jump, uses the breakpoint.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn bench_short(x: u64) -> u64 {
    core::arch::naked_asm!("lea eax, [rdi + 1]", "ret")
}

unsafe extern "C" fn empty(_regs: *mut PtRegs, _data: *mut c_void) {}

fn call_loop(f: extern "C" fn(u64) -> u64) -> u64 {
    let f = black_box(f);
    let mut acc = 0u64;
    for i in 0..100 {
        acc = acc.wrapping_add(f(black_box(i)));
    }
    acc
}

/// CPU time consumed by the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns (thread CPU)"
    }
    fn scale_throughputs(&self, _typical: f64, _throughput: &Throughput, _values: &mut [f64]) -> &'static str {
        "elements/ns"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    rewriter::prepare().unwrap();
    let mut group = c.benchmark_group("100 calls");
    let target = bench_target as *const () as usize;
    group.bench_function(BenchmarkId::new("unprobed", "baseline"), |b| b.iter(|| call_loop(bench_baseline)));

    let id = unsafe { attach_uprobe(target, empty, std::ptr::null_mut()) }.unwrap();
    group.bench_function(BenchmarkId::new("uprobe", "empty handler"), |b| b.iter(|| call_loop(bench_target)));
    detach(id).unwrap();

    let id = unsafe { attach_uretprobe(target, empty, std::ptr::null_mut()) }.unwrap();
    group.bench_function(BenchmarkId::new("uretprobe", "empty handler"), |b| b.iter(|| call_loop(bench_target)));
    let entry = unsafe { attach_uprobe(target, empty, std::ptr::null_mut()) }.unwrap();
    group.bench_function(BenchmarkId::new("uprobe+uretprobe", "empty handlers"), |b| b.iter(|| call_loop(bench_target)));
    detach(entry).unwrap();
    detach(id).unwrap();

    group.bench_function(BenchmarkId::new("unprobed", "after detach"), |b| b.iter(|| call_loop(bench_target)));
    group.finish();

    let mut slow = c.benchmark_group("1 call");
    slow.bench_function(BenchmarkId::new("unprobed", "short"), |b| b.iter(|| black_box(bench_short)(black_box(1))));
    let id = unsafe { attach_uprobe(bench_short as *const () as usize, empty, std::ptr::null_mut()) }.unwrap();
    assert!(matches!(rewriter::mechanism(id).unwrap(), rewriter::Mechanism::Breakpoint { .. }));
    slow.bench_function(BenchmarkId::new("breakpoint uprobe", "empty handler"), |b| {
        b.iter(|| black_box(bench_short)(black_box(1)))
    });
    detach(id).unwrap();
    slow.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);
