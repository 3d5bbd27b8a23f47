//! Fault test: child processes are SIGKILLed at random points while
//! updating shared maps and writing a perf ring, hundreds of times, while a
//! survivor thread keeps using them. Afterwards the maps must be consistent
//! (Map::verify), hold only well-formed values, keep their full capacity, and
//! the ring must still deliver only complete records.
//! One #[test] in this binary, so fork happens with no other test threads
//! except the survivor.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shm_maps::{map_type::*, update_flags::*, Map, PerfRecord, PerfRing};

const KILLS: usize = 300;
const KEYS: u64 = 200;
const MAX: u32 = 128;

fn value_for(key: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0..8].copy_from_slice(&key.wrapping_mul(3).to_ne_bytes());
    v[8..16].copy_from_slice(&(!key).to_ne_bytes());
    v
}

fn sample_for(x: u64) -> [u8; 24] {
    let mut d = [0u8; 24];
    d[0..8].copy_from_slice(&x.to_ne_bytes());
    d[8..16].copy_from_slice(&(!x).to_ne_bytes());
    d[16..24].copy_from_slice(&x.rotate_left(17).to_ne_bytes());
    d
}

/// Random operations forever (children) or until `stop` (survivor).
fn churn(hash: &Map, pcpu: &Map, queue: &Map, ring: &PerfRing, mut x: u64, stop: Option<&AtomicBool>) {
    let mut out = [0u8; 16];
    loop {
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % KEYS;
            let k = key.to_ne_bytes();
            match (x >> 32) % 8 {
                0 | 1 => {
                    let _ = hash.update(&k, &value_for(key), BPF_ANY);
                }
                2 => {
                    let _ = hash.delete(&k);
                }
                3 => {
                    if hash.lookup_and_delete(&k, &mut out).is_ok() {
                        assert_eq!(out, value_for(key));
                    }
                }
                4 => {
                    let _section = pcpu.read_section();
                    // SAFETY: key/value buffers of the map's sizes; values are 8-aligned.
                    unsafe {
                        let p = pcpu.prog_lookup(k.as_ptr());
                        if p.is_null() {
                            pcpu.prog_update(k.as_ptr(), 1u64.to_ne_bytes().as_ptr(), BPF_NOEXIST);
                        } else {
                            AtomicU64::from_ptr(p as *mut u64).fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                5 => {
                    let _ = pcpu.delete(&k);
                }
                6 => {
                    let _ = ring.output(&sample_for(x));
                }
                _ => {
                    if x & (1 << 40) != 0 {
                        let _ = queue.update(&[], &value_for(key), BPF_EXIST);
                    } else if queue.lookup_and_delete(&[], &mut out).is_ok() {
                        let key = (u64::from_ne_bytes(out[0..8].try_into().unwrap())) / 3;
                        assert_eq!(out, value_for(key));
                    }
                }
            }
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return;
        }
    }
}

fn drain(ring: &PerfRing) -> (usize, u64) {
    let mut samples = 0;
    let mut lost = 0;
    ring.read(|rec| match rec {
        PerfRecord::Sample(d) => {
            assert_eq!(d.len(), 28, "24 bytes padded to the 8-byte record boundary");
            let x = u64::from_ne_bytes(d[0..8].try_into().unwrap());
            assert_eq!(&d[..24], &sample_for(x)[..], "torn or uncommitted sample visible");
            samples += 1;
        }
        PerfRecord::Lost(n) => lost += n,
        PerfRecord::Other(t, _) => panic!("unexpected record type {t}"),
    });
    (samples, lost)
}

#[test]
fn sigkill_at_random_points_keeps_maps_consistent() {
    let t = TempRegistry::new("fault");
    let hash = t.map(HASH, 8, 16, MAX);
    let pcpu = t.map(PERCPU_HASH, 8, 8, MAX);
    let queue = t.map(QUEUE, 0, 16, 64);
    let ring = t.reg.create_perf_ring(4).unwrap();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let survivor = {
        let (reg, stop) = (t.reg.clone(), stop.clone());
        let ids = (hash.id(), pcpu.id(), queue.id(), ring.id());
        std::thread::spawn(move || {
            let (h, p, q) = (reg.open_map(ids.0).unwrap(), reg.open_map(ids.1).unwrap(), reg.open_map(ids.2).unwrap());
            let r = reg.open_perf_ring(ids.3).unwrap();
            churn(&h, &p, &q, &r, 0x1234_5678_9abc_def1, Some(&stop));
        })
    };
    let mut rng = 0xdead_beef_u64;
    let mut samples = 0;
    for round in 0..KILLS {
        // SAFETY: the child only runs `churn` on inherited maps until killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                churn(&hash, &pcpu, &queue, &ring, 0x9e37_79b9_7f4a_7c15 ^ round as u64, None)
            }));
            // Only reached if an assertion failed in the child.
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(if r.is_ok() { 0 } else { 3 }) };
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(200 + rng % 1500));
        let mut status = 0;
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
        }
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "child exited on its own: {status:#x}");
        samples += drain(&ring).0;
    }
    stop.store(true, Ordering::Relaxed);
    survivor.join().expect("survivor thread panicked (or deadlocked and was never joined)");
    // Eagerly repair whatever dead children left locked, then check.
    hash.recover();
    pcpu.recover();
    queue.recover();
    let hs = hash.verify().expect("HASH consistent").unwrap();
    pcpu.verify().expect("PERCPU_HASH consistent");
    let mut key: Option<[u8; 8]> = None;
    let mut next = [0u8; 8];
    let mut out = [0u8; 16];
    let mut present = Vec::new();
    while hash.get_next_key(key.as_ref().map(|k| &k[..]), &mut next).is_ok() {
        let k = u64::from_ne_bytes(next);
        hash.lookup(&next, &mut out).unwrap();
        assert_eq!(out, value_for(k), "value of key {k}");
        present.push(k);
        key = Some(next);
    }
    assert_eq!(present.len() as u32, hs.reachable);
    // Full capacity is still available: empty the map, then fill it.
    for k in present {
        hash.delete(&k.to_ne_bytes()).unwrap();
    }
    for k in 0..MAX as u64 {
        hash.update(&(1000 + k).to_ne_bytes(), &value_for(k), BPF_NOEXIST).unwrap_or_else(|e| panic!("insert {k}: {e}"));
    }
    let hs = hash.verify().unwrap().unwrap();
    assert_eq!(hs.reachable, MAX);
    // The ring still works after dead writers: their records become LOST.
    // A record a killed writer left incomplete at the head holds back the
    // ones behind it until it has been seen stuck for the ring's patience
    // (1 ms), so drain until two drains a few ms apart find nothing.
    let mut idle = 0;
    while idle < 2 {
        std::thread::sleep(Duration::from_millis(3));
        idle = if drain(&ring).0 == 0 { idle + 1 } else { 0 };
    }
    ring.output(&sample_for(42)).expect("ring usable");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got == 0 && Instant::now() < deadline {
        got = drain(&ring).0;
    }
    assert_eq!(got, 1);
    assert!(samples > 0);
    let mut qout = [0u8; 16];
    while queue.lookup_and_delete(&[], &mut qout).is_ok() {}
    queue.update(&[], &value_for(5), BPF_ANY).unwrap();
    queue.lookup_and_delete(&[], &mut qout).unwrap();
    assert_eq!(qout, value_for(5));
    let breaks = hash.lock_breaks() + pcpu.lock_breaks() + queue.lock_breaks();
    eprintln!(
        "{KILLS} kills in {:?}; {breaks} locks taken over from killed holders; {} samples dropped; \
         hash stats after refill {hs:?}; {samples} samples read",
        started.elapsed(),
        ring.total_lost()
    );
    // With hundreds of kills, some land inside critical sections (each is a
    // large share of a child's time): the repair path must have run.
    assert!(breaks > 0, "no kill hit a critical section: the test exercised nothing");
}
