//! HASH / PERCPU_HASH / LRU_HASH / LRU_PERCPU_HASH against the kernel's
//! documented semantics, errnos included.

mod common;

use common::*;
use shm_maps::{map_type::*, update_flags::*, Errno};

#[test]
fn hash_update_flags_and_errnos() {
    let t = TempRegistry::new("hash-flags");
    let m = t.map(HASH, 8, 8, 4);
    let mut out = [0u8; 8];
    assert_eq!(m.lookup(&k64(1), &mut out), Err(Errno::ENOENT));
    assert_eq!(m.update(&k64(1), &k64(10), BPF_EXIST), Err(Errno::ENOENT));
    m.update(&k64(1), &k64(10), BPF_NOEXIST).unwrap();
    assert_eq!(m.update(&k64(1), &k64(11), BPF_NOEXIST), Err(Errno::EEXIST));
    m.update(&k64(1), &k64(12), BPF_EXIST).unwrap();
    m.lookup(&k64(1), &mut out).unwrap();
    assert_eq!(u64::from_ne_bytes(out), 12);
    m.update(&k64(1), &k64(13), BPF_ANY).unwrap();
    m.lookup(&k64(1), &mut out).unwrap();
    assert_eq!(u64::from_ne_bytes(out), 13);
    assert_eq!(m.update(&k64(1), &k64(1), 8), Err(Errno::EINVAL), "unknown flag");
    assert_eq!(m.update(&k64(1), &k64(1), BPF_F_LOCK), Err(Errno::EINVAL), "F_LOCK needs a spin lock");
    assert_eq!(m.update(&[1, 2, 3], &k64(1), BPF_ANY), Err(Errno::EINVAL), "bad key size");
    assert_eq!(m.update(&k64(1), &[1], BPF_ANY), Err(Errno::EINVAL), "bad value size");
    // Fill: max_entries 4.
    for k in 2..=4 {
        m.update(&k64(k), &k64(k), BPF_ANY).unwrap();
    }
    assert_eq!(m.update(&k64(5), &k64(5), BPF_ANY), Err(Errno::E2BIG));
    // Updating an existing key of a full map still works.
    m.update(&k64(4), &k64(40), BPF_ANY).unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(m.delete(&k64(9)), Err(Errno::ENOENT));
    m.delete(&k64(4)).unwrap();
    assert_eq!(m.delete(&k64(4)), Err(Errno::ENOENT));
    m.update(&k64(5), &k64(5), BPF_ANY).unwrap();
    assert_eq!(m.len(), 4);
}

#[test]
fn hash_get_next_key_visits_every_key_once() {
    let t = TempRegistry::new("hash-next");
    let m = t.map(HASH, 8, 8, 1000);
    let mut next = [0u8; 8];
    assert_eq!(m.get_next_key(None, &mut next), Err(Errno::ENOENT), "empty map");
    for k in 0..700u64 {
        m.update(&k64(k * 7919), &k64(k), BPF_ANY).unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let mut key: Option<[u8; 8]> = None;
    loop {
        match m.get_next_key(key.as_ref().map(|k| &k[..]), &mut next) {
            Ok(()) => {
                assert!(seen.insert(u64::from_ne_bytes(next)), "key visited twice");
                key = Some(next);
            }
            Err(e) => {
                assert_eq!(e, Errno::ENOENT);
                break;
            }
        }
    }
    assert_eq!(seen.len(), 700);
    // A key not in the map restarts from the first key.
    m.get_next_key(Some(&k64(3)), &mut next).unwrap();
    let mut first = [0u8; 8];
    m.get_next_key(None, &mut first).unwrap();
    assert_eq!(next, first);
}

#[test]
fn hash_lookup_and_delete() {
    let t = TempRegistry::new("hash-lad");
    let m = t.map(HASH, 4, 12, 8);
    let v = [7u8; 12];
    m.update(&k32(3), &v, BPF_ANY).unwrap();
    let mut out = [0u8; 12];
    m.lookup_and_delete(&k32(3), &mut out).unwrap();
    assert_eq!(out, v);
    assert_eq!(m.lookup_and_delete(&k32(3), &mut out), Err(Errno::ENOENT));
    assert_eq!(m.lookup(&k32(3), &mut out), Err(Errno::ENOENT));
    assert_eq!(m.len(), 0);
}

#[test]
fn odd_key_sizes() {
    let t = TempRegistry::new("hash-odd");
    for ks in [1u32, 3, 13, 64, 100] {
        let m = t.map(HASH, ks, 3, 50);
        for i in 0..50u8 {
            let key: Vec<u8> = (0..ks).map(|j| i.wrapping_mul(31).wrapping_add(j as u8)).collect();
            m.update(&key, &[i, i, i], BPF_NOEXIST).unwrap();
        }
        for i in 0..50u8 {
            let key: Vec<u8> = (0..ks).map(|j| i.wrapping_mul(31).wrapping_add(j as u8)).collect();
            let mut out = [0u8; 3];
            m.lookup(&key, &mut out).unwrap();
            assert_eq!(out, [i, i, i]);
        }
    }
}

#[test]
fn prog_view_matches_syscall_view() {
    let t = TempRegistry::new("hash-prog");
    let m = t.map(HASH, 8, 8, 16);
    let key = k64(42);
    // SAFETY: key/value buffers have key_size/value_size bytes.
    unsafe {
        assert!(m.prog_lookup(key.as_ptr()).is_null());
        assert_eq!(m.prog_update(key.as_ptr(), k64(1).as_ptr(), BPF_NOEXIST), 0);
        assert_eq!(m.prog_update(key.as_ptr(), k64(1).as_ptr(), BPF_NOEXIST), -(libc::EEXIST as i64));
        let p = m.prog_lookup(key.as_ptr()) as *mut u64;
        assert!(!p.is_null());
        assert_eq!(p as usize % 8, 0, "values are 8-aligned");
        std::sync::atomic::AtomicU64::from_ptr(p).fetch_add(41, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(m.prog_delete(k64(7).as_ptr()), -(libc::ENOENT as i64));
    }
    let mut out = [0u8; 8];
    m.lookup(&key, &mut out).unwrap();
    assert_eq!(u64::from_ne_bytes(out), 42);
    // SAFETY: as above.
    unsafe { assert_eq!(m.prog_delete(key.as_ptr()), 0) };
    assert_eq!(m.lookup(&key, &mut out), Err(Errno::ENOENT));
}

#[test]
fn percpu_hash_value_layout() {
    let t = TempRegistry::new("pcpu-hash");
    let m = t.map(PERCPU_HASH, 8, 4, 16);
    let ncpus = shm_maps::cpu::nr_possible() as usize;
    assert_eq!(m.syscall_value_size(), 8 * ncpus, "round_up(4, 8) * possible cpus");
    // Syscall update writes every CPU's value.
    let mut all = vec![0u8; 8 * ncpus];
    for c in 0..ncpus {
        all[c * 8..c * 8 + 4].copy_from_slice(&(100 + c as u32).to_ne_bytes());
    }
    m.update(&k64(1), &all, BPF_ANY).unwrap();
    let mut out = vec![0u8; 8 * ncpus];
    m.lookup(&k64(1), &mut out).unwrap();
    assert_eq!(out, all);
    assert_eq!(m.lookup(&k64(1), &mut [0u8; 4]), Err(Errno::EINVAL), "must pass all CPUs' values");
    // Program update of a new key writes this CPU's slot and zeroes the others.
    let key = k64(2);
    // SAFETY: buffers sized for key/value.
    unsafe { assert_eq!(m.prog_update(key.as_ptr(), 77u32.to_ne_bytes().as_ptr(), BPF_ANY), 0) };
    m.lookup(&key, &mut out).unwrap();
    let nonzero: Vec<usize> = (0..ncpus).filter(|&c| out[c * 8..c * 8 + 4] != [0; 4]).collect();
    assert_eq!(nonzero.len(), 1, "exactly one CPU slot written");
    assert_eq!(u32::from_ne_bytes(out[nonzero[0] * 8..nonzero[0] * 8 + 4].try_into().unwrap()), 77);
}

#[test]
fn lru_hash_evicts_instead_of_failing() {
    let t = TempRegistry::new("lru");
    let m = t.map(LRU_HASH, 8, 8, 64);
    for k in 0..1000u64 {
        m.update(&k64(k), &k64(k), BPF_ANY).unwrap();
        // Keep key 0 hot.
        let mut out = [0u8; 8];
        let _ = m.lookup(&k64(0), &mut out);
        // SAFETY: key buffer of key_size bytes.
        unsafe { m.prog_lookup(k64(0).as_ptr()) };
    }
    assert!(m.len() <= 64, "len {}", m.len());
    let mut out = [0u8; 8];
    m.lookup(&k64(999), &mut out).unwrap();
    assert_eq!(u64::from_ne_bytes(out), 999, "newest key present");
    m.lookup(&k64(0), &mut out).expect("recently used key kept");
    let mut live = 0;
    for k in 0..1000u64 {
        if m.lookup(&k64(k), &mut out).is_ok() {
            live += 1;
        }
    }
    assert_eq!(live, m.len(), "count matches reachable keys");
    assert_eq!(m.update(&k64(5000), &k64(1), BPF_EXIST), Err(Errno::ENOENT));
}

#[test]
fn lru_tiny_map_always_evicts() {
    let t = TempRegistry::new("lru-tiny");
    for max in [1u32, 2, 3] {
        let m = t.map(LRU_HASH, 8, 8, max);
        for k in 0..500u64 {
            m.update(&k64(k), &k64(k), BPF_ANY).unwrap_or_else(|e| panic!("max {max}, key {k}: {e}"));
            let mut out = [0u8; 8];
            m.lookup(&k64(k), &mut out).unwrap();
        }
        assert!(m.len() <= max);
        let s = m.verify().unwrap().unwrap();
        assert_eq!(s.count, s.reachable);
    }
}

#[test]
fn lru_percpu_hash_works() {
    let t = TempRegistry::new("lru-pcpu");
    let m = t.map(LRU_PERCPU_HASH, 4, 8, 8);
    let n = m.syscall_value_size();
    for k in 0..100u32 {
        m.update(&k32(k), &vec![1u8; n], BPF_ANY).unwrap();
    }
    assert!(m.len() <= 8);
}

#[test]
fn deleted_values_are_not_reused_while_a_reader_may_hold_them() {
    let t = TempRegistry::new("reclaim");
    let m = t.map(HASH, 8, 8, 64);
    m.update(&k64(1), &k64(1), BPF_ANY).unwrap();
    let guard = m.read_section();
    // SAFETY: key buffer of key_size bytes.
    let p = unsafe { m.prog_lookup(k64(1).as_ptr()) };
    // Another thread (any process would do) deletes it and churns until
    // every reusable element is used up: the held element must never be
    // handed to another key.
    let reg = t.reg.clone();
    let id = m.id();
    let addr = p as usize;
    let inserted = std::thread::spawn(move || {
        let m = reg.open_map(id).unwrap();
        m.delete(&k64(1)).unwrap();
        let mut n = 0;
        for k in 100..10_000u64 {
            // The program view fails at once when only held elements are
            // free (the syscall view would wait up to a second for readers).
            // SAFETY: key/value buffers of key_size/value_size bytes.
            match shm_maps::from_ret(unsafe { m.prog_update(k64(k).as_ptr(), k64(k).as_ptr(), BPF_ANY) }) {
                Ok(()) => {
                    let _rs = m.read_section();
                    // SAFETY: key buffer of key_size bytes.
                    assert_ne!(unsafe { m.prog_lookup(k64(k).as_ptr()) } as usize, addr, "held element reused");
                    m.delete(&k64(k)).unwrap();
                    n += 1;
                }
                Err(e) => {
                    assert_eq!(e, Errno::E2BIG);
                    break;
                }
            }
        }
        n
    })
    .join()
    .unwrap();
    assert!(inserted >= 16, "the spare pool absorbs deletions under a reader");
    // SAFETY: p stays inside the mapping; no other key may own it now.
    assert_eq!(unsafe { *(p as *const u64) }, 1, "value memory was reused under a reader");
    drop(guard);
    // Without readers, freed elements are reused: the pool (64 + 16 spare)
    // supports any amount of churn.
    for k in 2000..3000u64 {
        m.update(&k64(k), &k64(k), BPF_ANY).unwrap();
        m.delete(&k64(k)).unwrap();
    }
    let stats = m.verify().unwrap().unwrap();
    assert_eq!(stats.reachable, 0);
}

#[test]
fn churn_with_a_long_reader_fails_softly_then_recovers() {
    let t = TempRegistry::new("reclaim-full");
    let m = t.map(HASH, 8, 8, 16);
    let guard = m.read_section();
    let reg = t.reg.clone();
    let id = m.id();
    // While a reader is active, freed elements pile up in the spare pool;
    // once it is exhausted inserts fail with E2BIG instead of reusing memory.
    let failures = std::thread::spawn(move || {
        let m = reg.open_map(id).unwrap();
        let mut failures = 0;
        for k in 0..200u64 {
            // SAFETY: key/value buffers of key_size/value_size bytes.
            match shm_maps::from_ret(unsafe { m.prog_update(k64(k).as_ptr(), k64(k).as_ptr(), BPF_ANY) }) {
                Ok(()) => m.delete(&k64(k)).unwrap(),
                Err(e) => {
                    assert_eq!(e, Errno::E2BIG);
                    failures += 1;
                }
            }
        }
        failures
    })
    .join()
    .unwrap();
    assert!(failures > 0);
    // The syscall view waits for the reader instead of failing.
    let reg = t.reg.clone();
    let waiter = std::thread::spawn(move || reg.open_map(id).unwrap().update(&k64(500), &k64(1), BPF_ANY));
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(guard);
    waiter.join().unwrap().expect("insert succeeds once the reader is gone");
    m.delete(&k64(500)).unwrap();
    for k in 0..16u64 {
        m.update(&k64(k), &k64(k), BPF_ANY).unwrap();
    }
}
