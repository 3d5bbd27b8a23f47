//! PERF_EVENT_ARRAY + perf rings: kernel mmap layout, samples, lost records,
//! wakeups.

mod common;

use common::*;
use shm_maps::{helper_flags::BPF_F_CURRENT_CPU, map_type::*, PerfRecord, PerfRing};

fn read_all(r: &PerfRing) -> (Vec<Vec<u8>>, u64) {
    let mut samples = Vec::new();
    let mut lost = 0;
    r.read(|rec| match rec {
        PerfRecord::Sample(d) => samples.push(d.to_vec()),
        PerfRecord::Lost(n) => lost += n,
        PerfRecord::Other(t, _) => panic!("unexpected record type {t}"),
    });
    (samples, lost)
}

#[test]
fn ring_has_kernel_layout() {
    let t = TempRegistry::new("perf-layout");
    let r = t.reg.create_perf_ring(64).unwrap();
    assert_eq!(r.mmap_len(), 65 * 4096, "bpftrace maps 1 + 64 pages");
    let bytes = std::fs::read(t.reg.ring_path(r.id())).unwrap();
    let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
    assert_eq!(u64_at(1024), 0, "data_head");
    assert_eq!(u64_at(1032), 0, "data_tail");
    assert_eq!(u64_at(1040), 4096, "data_offset");
    assert_eq!(u64_at(1048), 64 * 4096, "data_size");
    r.output(b"hello").unwrap();
    let bytes = std::fs::read(t.reg.ring_path(r.id())).unwrap();
    let head = u64::from_ne_bytes(bytes[1024..1032].try_into().unwrap());
    assert_eq!(head, 24);
    let rec = &bytes[4096..4096 + 24];
    assert_eq!(u32::from_ne_bytes(rec[0..4].try_into().unwrap()), 9, "PERF_RECORD_SAMPLE");
    assert_eq!(u16::from_ne_bytes(rec[6..8].try_into().unwrap()), 24, "header.size");
    assert_eq!(u32::from_ne_bytes(rec[8..12].try_into().unwrap()), 12, "raw size incl. padding");
    assert_eq!(&rec[12..17], b"hello");
    assert_eq!(&rec[17..24], &[0; 7]);
    assert!(t.reg.create_perf_ring(3).is_err(), "data pages must be a power of two");
}

#[test]
fn samples_in_order_wrapping_and_lost() {
    let t = TempRegistry::new("perf-wrap");
    let r = t.reg.create_perf_ring(1).unwrap(); // 4096 data bytes
    let mut expected = Vec::new();
    for round in 0..50u32 {
        for i in 0..20u32 {
            let d: Vec<u8> = (0..(i * 13 % 150) as usize).map(|j| (j as u32 ^ round ^ i) as u8).collect();
            r.output(&d).unwrap();
            expected.push(d);
        }
        let (got, lost) = read_all(&r);
        assert_eq!(lost, 0);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(&g[..e.len()], &e[..]);
            assert!(g[e.len()..].iter().all(|&b| b == 0));
        }
        expected.clear();
    }
    // Overfill: drops are reported by a PERF_RECORD_LOST once space frees up.
    let mut ok = 0;
    let mut dropped = 0;
    for _ in 0..200 {
        match r.output(&[1u8; 100]) {
            Ok(()) => ok += 1,
            Err(e) => {
                assert_eq!(e, shm_maps::Errno::ENOSPC);
                dropped += 1
            }
        }
    }
    assert!(dropped > 0);
    assert_eq!(r.total_lost(), dropped);
    let (got, lost) = read_all(&r);
    assert_eq!(got.len(), ok);
    assert_eq!(lost, 0, "no LOST record before space was available");
    r.output(b"after").unwrap();
    let (got, lost) = read_all(&r);
    assert_eq!(lost, dropped);
    assert_eq!(&got[0][..5], b"after");
}

#[test]
fn perf_event_array_output() {
    let t = TempRegistry::new("perf-array");
    let ncpus = shm_maps::cpu::nr_possible();
    let m = t.map(PERF_EVENT_ARRAY, 4, 4, ncpus);
    assert_eq!(m.perf_event_output(BPF_F_CURRENT_CPU, b"x"), -(libc::ENOENT as i64), "no ring stored");
    let rings: Vec<PerfRing> = (0..ncpus).map(|_| t.reg.create_perf_ring(8).unwrap()).collect();
    for (cpu, r) in rings.iter().enumerate() {
        m.update(&k32(cpu as u32), &k32(r.id()), 0).unwrap();
    }
    assert_eq!(m.refresh_perf_rings(), ncpus as usize);
    assert_eq!(m.perf_event_output(ncpus as u64, b"x"), -(libc::E2BIG as i64));
    assert_eq!(m.perf_event_output(1 << 40, b"x"), -(libc::EINVAL as i64));
    for i in 0..100u32 {
        assert_eq!(m.perf_event_output(BPF_F_CURRENT_CPU, &i.to_ne_bytes()), 0);
    }
    assert_eq!(m.perf_event_output(0, b"cpu0"), 0);
    let total: usize = rings.iter().map(|r| read_all(r).0.len()).sum();
    assert_eq!(total, 101);
    // Another process opening the map by id writes to the same rings.
    let other = t.reg.open_map(m.id()).unwrap();
    assert_eq!(other.perf_event_output(0, b"again"), 0);
    assert_eq!(read_all(&rings[0]).0.len(), 1);
}

#[test]
fn consumer_wakeup() {
    let t = TempRegistry::new("perf-wake");
    let r = std::sync::Arc::new(t.reg.create_perf_ring(2).unwrap());
    assert!(!r.wait_readable(Some(std::time::Duration::from_millis(10))));
    let r2 = r.clone();
    let h = std::thread::spawn(move || r2.wait_readable(Some(std::time::Duration::from_secs(10))));
    std::thread::sleep(std::time::Duration::from_millis(50));
    r.output(b"wake").unwrap();
    assert!(h.join().unwrap());
}

#[test]
fn many_producers_one_consumer() {
    let t = TempRegistry::new("perf-mp");
    let r = std::sync::Arc::new(t.reg.create_perf_ring(16).unwrap());
    let threads: Vec<_> = (0..4u32)
        .map(|tid| {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut sent = 0u32;
                while sent < 5000 {
                    let mut d = [0u8; 16];
                    d[0..4].copy_from_slice(&tid.to_ne_bytes());
                    d[4..8].copy_from_slice(&sent.to_ne_bytes());
                    if r.output(&d).is_ok() {
                        sent += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut next = [0u32; 4];
    let mut received = 0;
    while received < 20000 {
        r.read(|rec| {
            if let PerfRecord::Sample(d) = rec {
                let tid = u32::from_ne_bytes(d[0..4].try_into().unwrap()) as usize;
                let seq = u32::from_ne_bytes(d[4..8].try_into().unwrap());
                assert_eq!(seq, next[tid], "per-producer order kept");
                next[tid] += 1;
                received += 1;
            }
        });
    }
    for th in threads {
        th.join().unwrap();
    }
}
