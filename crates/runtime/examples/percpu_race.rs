//! Reproducer for per-CPU value races (docs/requests/shm-maps.md item 12):
//! several threads run bpftrace's `sum(1)` sequence — lookup, add, then
//! `bpf_map_update_elem` (not in place) — on one PERCPU_HASH key, and the
//! per-CPU values are summed afterwards. The kernel never loses an update
//! (a program owns its CPU for the whole run); here a thread preempted
//! between its lookup and its update overwrites its CPU-mate's additions.
//!
//! Since `LoadedProgram::run` claims a CPU slot for programs touching
//! per-CPU maps, the total is exact (it was ~440–460 k of 800 k before).
//!
//! `cargo run --release -p runtime --example percpu_race [-- pin]`
//! (`NT=<threads>`, default 4; `pin` pins thread i to CPU i % 2).

use std::sync::Arc;

use runtime::LoadedProgram;
use shm_maps::{map_type, MapSpec, ProgRecord, Registry};

const CALLS_PER_THREAD: u64 = 200_000;

fn main() {
    let threads: u64 = std::env::var("NT").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let pin = std::env::args().any(|a| a == "pin");
    let dir = std::env::temp_dir().join(format!("userbpf-percpu-race-{}", std::process::id()));
    let registry = Registry::open(&dir).expect("open registry");
    let spec = MapSpec {
        map_type: map_type::PERCPU_HASH,
        key_size: 8,
        value_size: 8,
        max_entries: 16,
        name: "s".into(),
        ..Default::default()
    };
    let map = registry.create_map(&spec).expect("create map");
    let m = map.id();
    let text = vm::fixtures::bpftrace_sum_one(m);
    let insns = vm::asm::assemble(&text).expect("assemble");
    let record = ProgRecord {
        prog_type: 2,
        name: "sum".into(),
        insns: insns.iter().flat_map(|i| i.to_u64().to_le_bytes()).collect(),
        map_ids: vec![m],
        ..Default::default()
    };
    let id = registry.create_prog(&record).expect("store program");
    let program = Arc::new(LoadedProgram::from_registry(&registry, id).expect("load program"));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let program = program.clone();
            std::thread::spawn(move || {
                if pin {
                    // SAFETY: a zeroed cpu_set_t is empty; pinning this thread.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(i as usize % 2, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    }
                }
                for _ in 0..CALLS_PER_THREAD {
                    // SAFETY: the program does not touch its context.
                    unsafe { program.run_detached(std::ptr::null_mut()) };
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut out = vec![0u8; map.syscall_value_size()];
    map.lookup(&0u64.to_le_bytes(), &mut out).expect("lookup");
    let total: u64 = out.chunks(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).sum();
    println!("sum over CPUs: {total} (expected {})", threads * CALLS_PER_THREAD);
    let _ = std::fs::remove_dir_all(&dir);
}
