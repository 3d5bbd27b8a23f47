//! Multi-process stress: several forked processes × threads increment shared
//! counters (lookup + atomic add through the program view, HASH, PERCPU_HASH
//! and ARRAY) while churning other keys with update/delete. Final totals
//! must be exact, the structure consistent, and nothing may deadlock.
//! One #[test] in this binary, so fork happens with no other test threads.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use shm_maps::{map_type::*, update_flags::*, Map, Registry, RegistryOptions};

const PROCS: usize = 3;
const THREADS: usize = 2;
const ITERS: u64 = 60_000;
const COUNTERS: u64 = 64;

/// Adds 1 to counter `key` through the program view (insert if missing).
fn bump(m: &Map, key: u64) {
    let k = key.to_ne_bytes();
    // SAFETY: key/value buffers of key_size/value_size bytes; values are
    // 8-aligned u64s that stay valid while the map is mapped.
    unsafe {
        loop {
            let p = m.prog_lookup(k.as_ptr());
            if !p.is_null() {
                AtomicU64::from_ptr(p as *mut u64).fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Racing inserters: NOEXIST makes exactly one win; losers retry
            // the lookup and add to the winner's value.
            let r = m.prog_update(k.as_ptr(), 0u64.to_ne_bytes().as_ptr(), BPF_NOEXIST);
            assert!(r == 0 || r == -(libc::EEXIST as i64), "insert failed: {r}");
        }
    }
}

fn worker(reg: &Registry, ids: [u32; 4], proc_no: usize, thread_no: usize) {
    let hash = reg.open_map(ids[0]).unwrap();
    let pcpu = reg.open_map(ids[1]).unwrap();
    let array = reg.open_map(ids[2]).unwrap();
    let churn = reg.open_map(ids[3]).unwrap();
    let churn_base = 1_000_000 * (1 + proc_no as u64 * THREADS as u64 + thread_no as u64);
    let mut x = 0x9E37_79B9u64 ^ (proc_no as u64) << 20 ^ thread_no as u64;
    for i in 0..ITERS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = x % COUNTERS;
        {
            // As the agent does around a program run.
            let _section = hash.read_section();
            bump(&hash, key);
            bump(&pcpu, key);
        }
        // SAFETY: array value pointers are 8-aligned u64s.
        unsafe {
            let p = array.prog_lookup((key as u32).to_ne_bytes().as_ptr());
            AtomicU64::from_ptr(p as *mut u64).fetch_add(1, Ordering::Relaxed);
        }
        // Churn: insert, overwrite, delete keys of our own range, some shared.
        let ck = churn_base + (i % 32);
        churn.update(&ck.to_ne_bytes(), &ck.to_ne_bytes(), BPF_ANY).unwrap();
        if i % 3 == 0 {
            churn.delete(&ck.to_ne_bytes()).unwrap();
        }
        let shared_key = (x >> 8) % 16;
        let _ = churn.update(&shared_key.to_ne_bytes(), &shared_key.to_ne_bytes(), BPF_ANY);
        let _ = churn.delete(&((x >> 16) % 16).to_ne_bytes());
    }
    for j in 0..32u64 {
        let _ = churn.delete(&(churn_base + j).to_ne_bytes());
    }
}

fn sum_percpu(m: &Map, key: u64) -> u64 {
    let mut out = vec![0u8; m.syscall_value_size()];
    m.lookup(&key.to_ne_bytes(), &mut out).unwrap();
    out.chunks(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).sum()
}

#[test]
fn many_processes_many_threads_exact_totals() {
    let t = TempRegistry::new("stress");
    let hash = t.map(HASH, 8, 8, 4096);
    let pcpu = t.map(PERCPU_HASH, 8, 8, 4096);
    let array = t.map(ARRAY, 4, 8, COUNTERS as u32);
    let churn = t.map(HASH, 8, 8, 1024);
    let ids = [hash.id(), pcpu.id(), array.id(), churn.id()];
    let mut children = Vec::new();
    for p in 0..PROCS {
        // SAFETY: the child runs worker threads, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = std::panic::catch_unwind(|| {
                let reg = Registry::open_with(&t.dir, &RegistryOptions::default()).unwrap();
                std::thread::scope(|s| {
                    for th in 0..THREADS {
                        let reg = &reg;
                        s.spawn(move || worker(reg, ids, p, th));
                    }
                });
            })
            .map_or(1, |_| 0);
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status:#x}");
    }
    let total = PROCS as u64 * THREADS as u64 * ITERS;
    let mut hash_sum = 0;
    let mut pcpu_sum = 0;
    let mut array_sum = 0;
    for key in 0..COUNTERS {
        let mut out = [0u8; 8];
        hash.lookup(&key.to_ne_bytes(), &mut out).unwrap();
        hash_sum += u64::from_ne_bytes(out);
        pcpu_sum += sum_percpu(&pcpu, key);
        array.lookup(&(key as u32).to_ne_bytes(), &mut out).unwrap();
        array_sum += u64::from_ne_bytes(out);
    }
    assert_eq!(hash_sum, total, "HASH counters");
    assert_eq!(pcpu_sum, total, "PERCPU_HASH counters");
    assert_eq!(array_sum, total, "ARRAY counters");
    assert_eq!(hash.len(), COUNTERS as u32);
    let stats = churn.verify().unwrap().unwrap();
    assert_eq!(stats.count, stats.reachable, "no crash happened, so the count is exact");
    assert!(stats.reachable <= 16, "only shared churn keys may remain: {stats:?}");
    hash.verify().unwrap();
    pcpu.verify().unwrap();
}
