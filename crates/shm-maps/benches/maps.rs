//! Map operation benchmarks (program view, as helpers call them), one thread
//! and contended, plus perf ring / ring buffer throughput.
//!
//! Run: `cargo bench -p shm-maps --bench maps`. Figures are recorded in
//! docs/bench/shm-maps.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use shm_maps::{map_type::*, update_flags::*, Map, MapSpec, Registry, RegistryOptions};

struct Bench {
    dir: PathBuf,
    reg: Registry,
}

impl Bench {
    fn new() -> Bench {
        let dir = PathBuf::from(format!("/dev/shm/userbpf-bench-{}", std::process::id()));
        let reg = Registry::open_with(&dir, &RegistryOptions::default()).unwrap();
        Bench { dir, reg }
    }
    fn map(&self, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> Map {
        self.reg.create_map(&MapSpec { map_type, key_size, value_size, max_entries, ..Default::default() }).unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 4,096-entry map with 8-byte keys, half full (keys 0, 2, 4, ...).
fn half_full(b: &Bench, map_type: u32) -> Map {
    let m = b.map(map_type, 8, 8, 4096);
    for k in 0..2048u64 {
        let key = (k * 2).to_ne_bytes();
        // SAFETY: 8-byte key and value buffers.
        assert_eq!(unsafe { m.prog_update(key.as_ptr(), 1u64.to_ne_bytes().as_ptr(), BPF_ANY) }, 0);
    }
    m
}

fn keys() -> Vec<[u8; 8]> {
    // Present keys in a scattered order, so lookups do not walk memory linearly.
    (0..2048u64).map(|i| ((i * 1031) % 2048 * 2).to_ne_bytes()).collect()
}

fn single_thread(c: &mut Criterion) {
    let b = Bench::new();
    let hash = half_full(&b, HASH);
    let pcpu = half_full(&b, PERCPU_HASH);
    let array = b.map(ARRAY, 4, 8, 4096);
    let keys = keys();
    let mut g = c.benchmark_group("1-thread");
    g.bench_function("hash_lookup", |bn| {
        let mut i = 0;
        bn.iter(|| {
            i = (i + 1) & 2047;
            // SAFETY: 8-byte key.
            black_box(unsafe { hash.prog_lookup(keys[i].as_ptr()) })
        })
    });
    g.bench_function("hash_lookup_miss", |bn| {
        let mut i = 0u64;
        bn.iter(|| {
            i = (i + 2) & 8191;
            let k = (i | 1).to_ne_bytes();
            // SAFETY: 8-byte key.
            black_box(unsafe { hash.prog_lookup(k.as_ptr()) })
        })
    });
    g.bench_function("hash_update_existing", |bn| {
        let mut i = 0;
        let v = 7u64.to_ne_bytes();
        bn.iter(|| {
            i = (i + 1) & 2047;
            // SAFETY: 8-byte key and value.
            black_box(unsafe { hash.prog_update(keys[i].as_ptr(), v.as_ptr(), BPF_ANY) })
        })
    });
    g.bench_function("hash_lookup_atomic_add", |bn| {
        let mut i = 0;
        bn.iter(|| {
            i = (i + 1) & 2047;
            // SAFETY: 8-byte key; values are 8-aligned u64s.
            unsafe {
                let p = hash.prog_lookup(keys[i].as_ptr()) as *mut u64;
                AtomicU64::from_ptr(p).fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    g.bench_function("percpu_hash_update_existing", |bn| {
        let mut i = 0;
        let v = 7u64.to_ne_bytes();
        bn.iter(|| {
            i = (i + 1) & 2047;
            // SAFETY: 8-byte key and value.
            black_box(unsafe { pcpu.prog_update(keys[i].as_ptr(), v.as_ptr(), BPF_ANY) })
        })
    });
    g.bench_function("percpu_hash_lookup", |bn| {
        let mut i = 0;
        bn.iter(|| {
            i = (i + 1) & 2047;
            // SAFETY: 8-byte key.
            black_box(unsafe { pcpu.prog_lookup(keys[i].as_ptr()) })
        })
    });
    g.bench_function("hash_insert_delete", |bn| {
        let mut k = 1u64;
        let v = 7u64.to_ne_bytes();
        bn.iter(|| {
            k = (k + 2) & 8191 | 1;
            let key = k.to_ne_bytes();
            // SAFETY: 8-byte key and value.
            unsafe {
                black_box(hash.prog_update(key.as_ptr(), v.as_ptr(), BPF_NOEXIST));
                black_box(hash.prog_delete(key.as_ptr()));
            }
        })
    });
    g.bench_function("array_lookup", |bn| {
        let mut i = 0u32;
        bn.iter(|| {
            i = (i + 1) & 4095;
            let k = i.to_ne_bytes();
            // SAFETY: 4-byte key.
            black_box(unsafe { array.prog_lookup(black_box(k.as_ptr())) })
        })
    });
    g.bench_function("read_section_enter_exit", |bn| bn.iter(|| black_box(hash.read_section())));
    g.bench_function("run_claiming_cpu_slot_enter_exit", |bn| bn.iter(|| black_box(hash.enter_run(true).cpu())));
    g.bench_function("percpu_hash_update_in_claimed_run", |bn| {
        let mut i = 0;
        let v = 7u64.to_ne_bytes();
        bn.iter(|| {
            i = (i + 1) & 2047;
            let run = pcpu.enter_run(true);
            // SAFETY: 8-byte key and value.
            black_box(unsafe { pcpu.prog_update_on_cpu(keys[i].as_ptr(), v.as_ptr(), BPF_ANY, run.cpu()) })
        })
    });
    g.bench_function("cpu_current", |bn| bn.iter(|| black_box(shm_maps::cpu::current())));
    g.finish();
}

/// Runs `op(thread, iteration)` on `threads` threads; returns the mean
/// wall time per operation per thread.
fn contended(threads: usize, iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    let total = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    });
    total
}

fn two_threads(c: &mut Criterion) {
    let b = Bench::new();
    let hash = half_full(&b, HASH);
    let pcpu = half_full(&b, PERCPU_HASH);
    let keys = keys();
    let v = 7u64.to_ne_bytes();
    let mut g = c.benchmark_group("2-threads");
    g.bench_function("hash_lookup", |bn| {
        bn.iter_custom(|iters| {
            contended(2, iters, |t, i| {
                // SAFETY: 8-byte key.
                black_box(unsafe { hash.prog_lookup(keys[((i as usize) + t * 1024) & 2047].as_ptr()) });
            })
        })
    });
    g.bench_function("hash_update_existing_same_keys", |bn| {
        bn.iter_custom(|iters| {
            contended(2, iters, |_, i| {
                // SAFETY: 8-byte key and value.
                black_box(unsafe { hash.prog_update(keys[(i as usize) & 63].as_ptr(), v.as_ptr(), BPF_ANY) });
            })
        })
    });
    g.bench_function("hash_lookup_atomic_add_same_key", |bn| {
        bn.iter_custom(|iters| {
            contended(2, iters, |_, _| {
                // SAFETY: 8-byte key; values are 8-aligned u64s.
                unsafe {
                    let p = hash.prog_lookup(keys[0].as_ptr()) as *mut u64;
                    AtomicU64::from_ptr(p).fetch_add(1, Ordering::Relaxed);
                }
            })
        })
    });
    g.bench_function("percpu_hash_update_existing", |bn| {
        bn.iter_custom(|iters| {
            contended(2, iters, |t, i| {
                // SAFETY: 8-byte key and value.
                black_box(unsafe { pcpu.prog_update(keys[((i as usize) + t * 1024) & 2047].as_ptr(), v.as_ptr(), BPF_ANY) });
            })
        })
    });
    g.finish();
}

/// Producer cost of 64-byte events (the same thread drains the ring every
/// 1,000 events). Cross-thread throughput is measured by `min_table`
/// (best-of-rounds), where thread start/join latency on a loaded machine
/// does not swamp short criterion samples.
fn rings(c: &mut Criterion) {
    let b = Bench::new();
    let mut g = c.benchmark_group("rings");
    g.throughput(Throughput::Elements(1));
    let ring = Arc::new(b.reg.create_perf_ring(64).unwrap());
    let perf_array = b.map(PERF_EVENT_ARRAY, 4, 4, 1);
    perf_array.update(&0u32.to_ne_bytes(), &ring.id().to_ne_bytes(), BPF_ANY).unwrap();
    let payload = [0x5au8; 64];
    g.bench_function("perf_event_output_64B_same_thread", |bn| {
        // Producer cost alone: the same thread drains every 1,000 events.
        let mut n = 0u32;
        bn.iter(|| {
            black_box(perf_array.perf_event_output(0, &payload));
            n += 1;
            if n == 1000 {
                n = 0;
                ring.read(|r| {
                    black_box(r);
                });
            }
        })
    });
    let rb = Arc::new(b.map(RINGBUF, 0, 0, 256 * 1024));
    g.bench_function("ringbuf_output_64B_same_thread", |bn| {
        let mut n = 0u32;
        bn.iter(|| {
            black_box(rb.ringbuf_output(&payload, 0));
            n += 1;
            if n == 1000 {
                n = 0;
                rb.ringbuf_consume(|d| {
                    black_box(d);
                });
            }
        })
    });
    g.finish();
}

/// Fastest of `rounds` timed batches of `batch` calls, in ns per call.
/// On a machine shared with other work, contention only ever adds time, so
/// the minimum is the figure least disturbed by it.
fn min_ns(rounds: usize, batch: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for i in 0..batch {
            f(i);
        }
        best = best.min(start.elapsed().as_nanos() as f64 / batch as f64);
    }
    best
}

/// Fastest of `rounds` one-producer/one-consumer transfers of `n` 64-byte
/// events through a perf ring; returns events per second.
fn best_perf_rate(b: &Bench, rounds: usize, n: u64) -> f64 {
    let ring = Arc::new(b.reg.create_perf_ring(64).unwrap());
    let payload = [0x5au8; 64];
    let mut best = 0f64;
    for _ in 0..rounds {
        let consumer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut got = 0u64;
                while got < n {
                    let k = ring.read(|r| {
                        black_box(r);
                    }) as u64;
                    got += k;
                    if k == 0 {
                        // A polling consumer backs off instead of hammering
                        // the data_head line the producer writes.
                        for _ in 0..64 {
                            std::hint::spin_loop();
                        }
                    }
                }
            })
        };
        let start = Instant::now();
        let mut sent = 0;
        while sent < n {
            if ring.output(&payload).is_ok() {
                sent += 1;
            } else {
                std::thread::yield_now();
            }
        }
        consumer.join().unwrap();
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn best_ringbuf_rate(b: &Bench, rounds: usize, n: u64) -> f64 {
    let rb = Arc::new(b.map(RINGBUF, 0, 0, 256 * 1024));
    let payload = [0x5au8; 64];
    let mut best = 0f64;
    for _ in 0..rounds {
        let consumer = {
            let rb = rb.clone();
            std::thread::spawn(move || {
                let mut got = 0u64;
                while got < n {
                    let k = rb.ringbuf_consume(|d| {
                        black_box(d);
                    }) as u64;
                    got += k;
                    if k == 0 {
                        for _ in 0..64 {
                            std::hint::spin_loop();
                        }
                    }
                }
            })
        };
        let start = Instant::now();
        let mut sent = 0;
        while sent < n {
            if rb.ringbuf_output(&payload, 0) == 0 {
                sent += 1;
            } else {
                std::thread::yield_now();
            }
        }
        consumer.join().unwrap();
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

/// The table docs/bench/shm-maps.md quotes: min-of-rounds figures.
fn min_table() {
    let b = Bench::new();
    let hash = half_full(&b, HASH);
    let pcpu = half_full(&b, PERCPU_HASH);
    let array = b.map(ARRAY, 4, 8, 4096);
    let keys = keys();
    let v = 7u64.to_ne_bytes();
    let (rounds, batch) = (300, 10_000);
    let mut rows: Vec<(&str, f64)> = Vec::new();
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("hash lookup (hit)", min_ns(rounds, batch, |i| {
        black_box(unsafe { hash.prog_lookup(keys[(i & 2047) as usize].as_ptr()) });
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("hash update (existing key)", min_ns(rounds, batch, |i| {
        black_box(unsafe { hash.prog_update(keys[(i & 2047) as usize].as_ptr(), v.as_ptr(), BPF_ANY) });
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("hash lookup + atomic add", min_ns(rounds, batch, |i| unsafe {
        let p = hash.prog_lookup(keys[(i & 2047) as usize].as_ptr()) as *mut u64;
        AtomicU64::from_ptr(p).fetch_add(1, Ordering::Relaxed);
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("per-CPU hash update (existing key)", min_ns(rounds, batch, |i| {
        black_box(unsafe { pcpu.prog_update(keys[(i & 2047) as usize].as_ptr(), v.as_ptr(), BPF_ANY) });
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("per-CPU hash lookup", min_ns(rounds, batch, |i| {
        black_box(unsafe { pcpu.prog_lookup(keys[(i & 2047) as usize].as_ptr()) });
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("array lookup", min_ns(rounds, batch, |i| {
        let k = ((i & 4095) as u32).to_ne_bytes();
        black_box(unsafe { array.prog_lookup(black_box(k.as_ptr())) });
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("hash insert + delete (pair)", min_ns(rounds / 3, batch, |i| unsafe {
        let k = ((i * 2 + 1) & 8191).to_ne_bytes();
        black_box(hash.prog_update(k.as_ptr(), v.as_ptr(), BPF_NOEXIST));
        black_box(hash.prog_delete(k.as_ptr()));
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("read section enter + exit", min_ns(rounds, batch, |_| {
        black_box(hash.read_section());
    })));
    rows.push(("run enter + exit, no CPU slot", min_ns(rounds, batch, |_| {
        black_box(hash.enter_run(false).cpu());
    })));
    rows.push(("run enter + exit, CPU slot claimed", min_ns(rounds, batch, |_| {
        black_box(hash.enter_run(true).cpu());
    })));
    // SAFETY: 8-byte keys/values, as the map expects.
    rows.push(("per-CPU hash update in a claimed run", min_ns(rounds, batch, |i| {
        let run = pcpu.enter_run(true);
        black_box(unsafe { pcpu.prog_update_on_cpu(keys[(i & 2047) as usize].as_ptr(), v.as_ptr(), BPF_ANY, run.cpu()) });
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("cpu::current()", min_ns(rounds, batch, |_| {
        black_box(shm_maps::cpu::current());
    })));
    let ring = b.reg.create_perf_ring(64).unwrap();
    let perf_array = b.map(PERF_EVENT_ARRAY, 4, 4, 1);
    perf_array.update(&0u32.to_ne_bytes(), &ring.id().to_ne_bytes(), BPF_ANY).unwrap();
    let rbuf = b.map(RINGBUF, 0, 0, 256 * 1024);
    let payload = [0x5au8; 64];
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("perf_event_output 64 B (+ drain /1000)", min_ns(rounds, batch, |i| {
        black_box(perf_array.perf_event_output(0, &payload));
        if i % 1000 == 999 {
            ring.read(|r| {
                black_box(r);
            });
        }
    })));
    // SAFETY: 8-byte keys/values (4-byte array keys), as the maps expect.
    rows.push(("ringbuf_output 64 B (+ drain /1000)", min_ns(rounds, batch, |i| {
        black_box(rbuf.ringbuf_output(&payload, 0));
        if i % 1000 == 999 {
            rbuf.ringbuf_consume(|d| {
                black_box(d);
            });
        }
    })));
    println!("\nmin-of-{rounds} rounds of {batch} calls, ns per call (1 thread):");
    for (name, ns) in &rows {
        println!("  {name:<38} {ns:>7.2}");
    }
    let perf = best_perf_rate(&b, 300, 20_000);
    let rb = best_ringbuf_rate(&b, 300, 20_000);
    println!("best-of-300 transfers of 20,000 64-byte events, 1 producer + 1 consumer thread:");
    println!("  perf ring (PERF_RECORD_SAMPLE)           {:>7.2} M events/s", perf / 1e6);
    println!("  RINGBUF                                  {:>7.2} M events/s", rb / 1e6);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = single_thread, two_threads, rings
}

fn main() {
    benches();
    min_table();
    Criterion::default().configure_from_args().final_summary();
}
