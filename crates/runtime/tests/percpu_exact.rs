//! Per-CPU values stay exact with more threads than CPUs, across processes:
//! JIT'd programs doing bpftrace's `sum(1)` (lookup → add → update of the
//! CPU's value, not in place) on a PERCPU_HASH and a non-atomic in-place
//! increment on a PERCPU_ARRAY, run through `LoadedProgram::run` by several
//! threads in each of several processes sharing one registry. Each run
//! holds a CPU slot (docs/requests/shm-maps.md item 12), so no update is lost.
//!
//! The worker processes are this test binary re-executed with
//! `PERCPU_EXACT_WORKER=<registry dir>:<program id>` (no fork of a
//! multi-threaded harness).

use std::process::Command;
use std::sync::Arc;

use runtime::{LoadedProgram, RunEnv};
use shm_maps::{cpu, map_type, MapSpec, ProgRecord, Registry};

const WORKER_ENV: &str = "PERCPU_EXACT_WORKER";
const PROCESSES: u64 = 3;
const THREADS: u64 = 3;
const RUNS_PER_THREAD: u64 = 200_000;

fn store(registry: &Registry, name: &str, text: &str, map_ids: &[u32]) -> u32 {
    let insns = vm::asm::assemble(text).unwrap();
    registry
        .create_prog(&ProgRecord {
            prog_type: 2,
            name: name.into(),
            insns: insns.iter().flat_map(|i| i.to_u64().to_le_bytes()).collect(),
            map_ids: map_ids.to_vec(),
            ..Default::default()
        })
        .unwrap()
}

/// `sum(1)` on key 0 of `hash`, then `*value += 1` (non-atomic) on index 0
/// of `array`.
fn racy_program(hash: u32, array: u32) -> String {
    format!(
        "{}
        mov %r1, 0
        stxw [%r10-4], %r1
        lddw %r1, map_fd({array})
        mov %r2, %r10
        add %r2, -4
        call bpf_map_lookup_elem
        jeq %r0, 0, +3
        ldxdw %r1, [%r0]
        add %r1, 1
        stxdw [%r0], %r1
        mov %r0, 0
        exit
        ",
        vm::fixtures::bpftrace_sum_one_steps(hash)
    )
}

fn run_worker(spec: &str) -> ! {
    let (dir, prog) = spec.split_once(':').expect("worker spec");
    let registry = Registry::open(std::path::Path::new(dir)).expect("open registry");
    let program = Arc::new(LoadedProgram::from_registry(&registry, prog.parse().unwrap()).expect("load"));
    assert!(program.is_jitted(), "JIT refused: {:?}", program.jit_refusal());
    assert!(program.claims_cpu_slot());
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let program = program.clone();
            std::thread::spawn(move || {
                for _ in 0..RUNS_PER_THREAD {
                    // SAFETY: the program ignores its context.
                    unsafe { program.run_detached(std::ptr::null_mut()) };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::process::exit(0);
}

fn sum_over_cpus(map: &shm_maps::Map, key: &[u8]) -> u64 {
    let mut out = vec![0u8; map.syscall_value_size()];
    map.lookup(key, &mut out).expect("lookup");
    out.chunks(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).sum()
}

#[test]
fn per_cpu_sums_are_exact_with_more_threads_than_cpus_across_processes() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        run_worker(&spec);
    }
    let dir = std::env::temp_dir().join(format!("userbpf-runtime-percpu-exact-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry = Registry::open(&dir).unwrap();
    let map = |map_type, key_size| {
        registry
            .create_map(&MapSpec { map_type, key_size, value_size: 8, max_entries: 4, name: "m".into(), ..Default::default() })
            .unwrap()
    };
    let hash = map(map_type::PERCPU_HASH, 8);
    let array = map(map_type::PERCPU_ARRAY, 4);
    let prog = store(&registry, "sum", &racy_program(hash.id(), array.id()), &[hash.id(), array.id()]);
    let workers: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "per_cpu_sums_are_exact_with_more_threads_than_cpus_across_processes", "--nocapture"])
                .env(WORKER_ENV, format!("{}:{prog}", dir.display()))
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success(), "worker failed");
    }
    let expected = PROCESSES * THREADS * RUNS_PER_THREAD;
    let stats = registry.cpu_slot_stats();
    eprintln!(
        "{PROCESSES} processes × {THREADS} threads on {} possible CPUs: {stats:?}",
        cpu::nr_possible()
    );
    let (sum, in_place) = (sum_over_cpus(&hash, &0u64.to_ne_bytes()), sum_over_cpus(&array, &0u32.to_ne_bytes()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(sum, expected, "sum() lost updates ({stats:?})");
    assert_eq!(in_place, expected, "in-place increments lost ({stats:?})");
}

#[test]
fn only_programs_touching_per_cpu_state_claim_and_cpu_ids_are_the_claimed_slot() {
    let dir = std::env::temp_dir().join(format!("userbpf-runtime-percpu-claims-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry = Registry::open(&dir).unwrap();
    let plain = registry
        .create_map(&MapSpec { map_type: map_type::HASH, key_size: 8, value_size: 8, max_entries: 4, name: "h".into(), ..Default::default() })
        .unwrap();
    let lookup_plain = format!(
        "
        mov %r1, 0
        stxdw [%r10-8], %r1
        lddw %r1, map_fd({m})
        mov %r2, %r10
        add %r2, -8
        call bpf_map_lookup_elem
        mov %r0, 0
        exit
        ",
        m = plain.id()
    );
    let ask_cpu = format!(
        "
        lddw %r1, map_fd({m})
        call bpf_get_smp_processor_id
        exit
        ",
        m = plain.id()
    );
    let load = |name, text: &str| {
        LoadedProgram::from_registry(&registry, store(&registry, name, text, &[plain.id()])).unwrap()
    };
    assert!(!load("plain", &lookup_plain).claims_cpu_slot(), "a plain HASH program needs no CPU slot");
    let cpu_prog = load("cpu", &ask_cpu);
    assert!(cpu_prog.claims_cpu_slot(), "bpf_get_smp_processor_id makes the run claim");

    let slots = registry.cpu_slot_stats().slots;
    // SAFETY (both runs): the program ignores its context.
    let id = unsafe { cpu_prog.run_detached(std::ptr::null_mut()) };
    assert!(id < slots as u64, "cpu id {id} beyond {slots} slots");
    if slots >= 2 {
        // While this thread holds a slot, its nested run gets another one,
        // and the program sees that one as its CPU.
        let outer = registry.enter_run(true);
        assert!(outer.holds_cpu_slot());
        let inner = unsafe { cpu_prog.run_detached(std::ptr::null_mut()) };
        assert_ne!(inner, outer.cpu() as u64, "the run's CPU is its own claimed slot");
        assert!(inner < slots as u64);
    } else {
        eprintln!("skipping the nested-claim check: only {slots} CPU slot");
    }
    let mut env = RunEnv::detached(cpu_prog.id());
    // SAFETY: as above; `run` sets env.cpu.
    unsafe { cpu_prog.run(std::ptr::null_mut(), &mut env) };
    assert!(env.cpu < slots);
    let _ = std::fs::remove_dir_all(&dir);
}
