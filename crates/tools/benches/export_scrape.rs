//! How long one `userbpf export` scrape takes: a registry holding
//! bpftrace's `@[arg0] = count()` (its 0.17 code and a per-CPU hash) with
//! 10,000 keys, rendered to OpenMetrics text as a Prometheus scrape gets it
//! (map walk in shared memory, shape recognition, labels, encoding). The
//! goal (issue 14) is at most 20 ms.
//!
//! Run: `cargo bench -p tools --bench export_scrape`.

use criterion::{criterion_group, criterion_main, Criterion};
use shm_maps::{map_type, update_flags::BPF_ANY, MapSpec, ProgRecord, Registry};
use tools::export::{render, Options};

const KEYS: u64 = 10_000;

fn registry() -> (std::path::PathBuf, Registry) {
    let dir = std::env::temp_dir().join(format!("userbpf-bench-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let registry = Registry::open(&dir).unwrap();
    let map = registry
        .create_map(&MapSpec {
            map_type: map_type::PERCPU_HASH,
            key_size: 8,
            value_size: 8,
            max_entries: 16384,
            name: "AT_calls".into(),
            ..Default::default()
        })
        .unwrap();
    let per_cpu = vec![1u8; map.syscall_value_size()];
    for key in 0..KEYS {
        map.update(&key.to_le_bytes(), &per_cpu, BPF_ANY).unwrap();
    }
    // bpftrace 0.17's `uprobe:… { @calls[arg0] = count(); }`.
    let text = format!(
        "ldxdw %r1, [%r1+112]\nstxdw [%r10-8], %r1\n{}",
        vm::fixtures::count_key_at_fp_minus_8(map.id())
    );
    let insns = vm::asm::assemble(&text).unwrap();
    registry
        .create_prog(&ProgRecord {
            prog_type: 2,
            name: "calls".into(),
            insns: insns
                .iter()
                .flat_map(|i| i.to_u64().to_le_bytes())
                .collect(),
            map_ids: vec![map.id()],
            ..Default::default()
        })
        .unwrap();
    (dir, registry)
}

fn scrape(c: &mut Criterion) {
    let (dir, registry) = registry();
    let opts = Options {
        listen: String::new(),
        maps: Vec::new(),
        prefix: "userbpf_".into(),
        max_series: 100_000,
    };
    let text = render(&registry, &opts);
    assert_eq!(
        text.matches("userbpf_calls_total{key=").count(),
        KEYS as usize,
        "every key is a series"
    );
    c.bench_function("export: scrape of 10k series (bpftrace count map)", |b| {
        b.iter(|| render(&registry, &opts))
    });
    drop(registry);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = scrape
}
criterion_main!(benches);
