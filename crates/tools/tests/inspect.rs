//! `userbpf list`, `map dump` and `prog dump` on a registry filled through
//! the shm-maps API (as the syscall server fills it), with an agent-carrying
//! process that maps an attachment's target file.

mod common;
use common::*;
use shm_maps::{map_type, update_flags::BPF_ANY, LinkKind, LinkRecord, MapSpec, ProgRecord, Registry};
use std::os::unix::fs::MetadataExt;

struct Fixture {
    _scratch: Scratch,
    dir: std::path::PathBuf,
    _registry: Registry,
    counts: u32,
    per_cpu: u32,
    names: u32,
    prog: u32,
    link: u32,
    target: Target,
    nr_cpus: usize,
}

fn fixture(name: &str) -> Fixture {
    let scratch = Scratch::new(name);
    let dir = scratch.path("registry");
    let registry = Registry::open(&dir).expect("create registry");

    let counts = registry
        .create_map(&MapSpec { map_type: map_type::HASH, key_size: 8, value_size: 8, max_entries: 16, name: "AT_counts".into(), ..Default::default() })
        .unwrap();
    for (k, v) in [(1u64, 10u64), (2, 20), (3, 30)] {
        counts.update(&k.to_le_bytes(), &v.to_le_bytes(), BPF_ANY).unwrap();
    }
    let per_cpu = registry
        .create_map(&MapSpec { map_type: map_type::PERCPU_ARRAY, key_size: 4, value_size: 8, max_entries: 2, name: "percpu".into(), ..Default::default() })
        .unwrap();
    let nr_cpus = per_cpu.nr_cpus() as usize;
    let value: Vec<u8> = (0..nr_cpus as u64).flat_map(|cpu| (100 + cpu).to_le_bytes()).collect();
    per_cpu.update(&0u32.to_le_bytes(), &value, BPF_ANY).unwrap();
    let names = registry
        .create_map(&MapSpec { map_type: map_type::HASH, key_size: 16, value_size: 8, max_entries: 4, name: "comms".into(), ..Default::default() })
        .unwrap();
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"bash");
    names.update(&comm, &5u64.to_le_bytes(), BPF_ANY).unwrap();

    let insns = vm::asm::assemble("mov %r0, 0\nadd %r0, 1\nexit").unwrap();
    let prog = registry
        .create_prog(&ProgRecord {
            prog_type: 2,
            name: "uprobe_f".into(),
            license: "GPL".into(),
            insns: insns.iter().flat_map(|i| i.to_u64().to_le_bytes()).collect(),
            map_ids: vec![counts.id()],
            verifier_log: "processed 3 insns".into(),
            ..Default::default()
        })
        .unwrap();

    // An app carrying an "agent" (the marker library named libagent.so).
    let target_bin = build_target(&scratch);
    let agent = build_marker_lib(&scratch, "libagent.so");
    let pidfile = scratch.path("app.pid");
    let child = std::process::Command::new(&target_bin)
        .arg(&pidfile)
        .arg("sleep")
        .env("LD_PRELOAD", &agent)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid: i32 = wait_for_file(&pidfile).trim().parse().unwrap();
    let target = Target { child, pid };
    let meta = std::fs::metadata(&target_bin).unwrap();
    let link = registry
        .create_link(&LinkRecord {
            kind: LinkKind::Uprobe,
            prog_id: prog,
            enabled: true,
            target_path: target_bin.to_str().unwrap().into(),
            file_offset: 0x1139,
            dev: meta.dev(),
            inode: meta.ino(),
            ..Default::default()
        })
        .unwrap();
    Fixture {
        dir,
        counts: counts.id(),
        per_cpu: per_cpu.id(),
        names: names.id(),
        prog,
        link,
        target,
        nr_cpus,
        _registry: registry,
        _scratch: scratch,
    }
}

#[test]
fn list_shows_maps_programs_attachments_and_processes() {
    let f = fixture("list");
    let out = run_with_timeout(userbpf().args(["list", "--json"]).env("USERBPF_DIR", &f.dir));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    let v: serde_json::Value = serde_json::from_str(&texts(&out).0).unwrap();
    let maps = v["maps"].as_array().unwrap();
    let counts = maps.iter().find(|m| m["id"] == f.counts).unwrap();
    assert_eq!(counts["name"], "AT_counts");
    assert_eq!(counts["type"], "HASH");
    assert_eq!(counts["entries"], 3);
    assert_eq!(counts["owner_alive"], true);
    let prog = &v["programs"].as_array().unwrap()[0];
    assert_eq!((prog["id"].as_u64(), prog["instructions"].as_u64()), (Some(f.prog as u64), Some(3)));
    assert_eq!(prog["type"], "KPROBE");
    let link = &v["attachments"].as_array().unwrap()[0];
    assert_eq!(link["id"], f.link);
    assert_eq!(link["kind"], "uprobe");
    assert!(link["target"].as_str().unwrap().ends_with("/target:0x1139"));
    // The app maps the probed file and carries a library named libagent.so,
    // but no agent on this registry reports the probe installed there (the
    // marker is no agent): `list` does not claim the probe is live in it.
    // The real agent's case is in e2e.rs (attach, detach, re-attach).
    assert_eq!(link["processes"], serde_json::json!([]), "no agent reports the probe installed");
    let me = std::process::id() as i64;
    let owners = v["owners"].as_array().unwrap();
    let creator = owners.iter().find(|o| o["id"] == counts["owner"]).expect("the maps' owner is listed");
    assert_eq!((creator["pid"].as_i64(), creator["alive"].as_bool()), (Some(me), Some(true)));
    let procs = v["processes"].as_array().unwrap();
    assert!(procs.iter().any(|p| p["pid"] == f.target.pid && p["role"] == "agent"), "{procs:?}");

    let owner_files = || std::fs::read_dir(f.dir.join("owners")).unwrap().count();
    let before = owner_files();
    let out = run_with_timeout(userbpf().arg("list").env("USERBPF_DIR", &f.dir));
    assert_eq!(owner_files(), before, "listing registers nothing");
    let (stdout, _) = texts(&out);
    assert!(stdout.contains(&format!("(pid {me})")), "{stdout}");
    assert!(stdout.contains("maps: 3") && stdout.contains("programs: 1") && stdout.contains("attachments: 1"), "{stdout}");
    assert!(stdout.contains("AT_counts") && stdout.contains("uprobe_f"), "{stdout}");
}

#[test]
fn list_without_a_registry_says_so() {
    let scratch = Scratch::new("list-empty");
    let dir = scratch.path("nothing-here");
    let out = run_with_timeout(userbpf().arg("list").env("USERBPF_DIR", &dir));
    assert_eq!(out.status.code(), Some(0));
    assert!(texts(&out).0.contains("(not created yet)"), "{:?}", texts(&out));
    assert!(!dir.exists(), "listing must not create the registry");
    let out = run_with_timeout(userbpf().args(["map", "dump", "1"]).env("USERBPF_DIR", &dir));
    assert_eq!(out.status.code(), Some(4));
    assert!(texts(&out).1.starts_with("userbpf: no registry at "), "{:?}", texts(&out));
}

#[test]
fn map_dump_decodes_keys_values_and_per_cpu_sums() {
    let f = fixture("map-dump");
    // By bpftrace name: @counts is stored as AT_counts.
    let out = run_with_timeout(userbpf().args(["map", "dump", "@counts", "--json"]).env("USERBPF_DIR", &f.dir));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    let v: serde_json::Value = serde_json::from_str(&texts(&out).0).unwrap();
    assert_eq!(v["id"], f.counts);
    let mut pairs: Vec<(u64, u64)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"]["int"].as_u64().unwrap(), e["value"]["int"].as_u64().unwrap()))
        .collect();
    pairs.sort();
    assert_eq!(pairs, [(1, 10), (2, 20), (3, 30)]);

    let out = run_with_timeout(userbpf().args(["map", "dump", &f.per_cpu.to_string(), "--json"]).env("USERBPF_DIR", &f.dir));
    let v: serde_json::Value = serde_json::from_str(&texts(&out).0).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "an array has every index");
    let first = &entries[0];
    let per_cpu: Vec<u64> = first["per_cpu"].as_array().unwrap().iter().map(|d| d["int"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..f.nr_cpus as u64).map(|cpu| 100 + cpu).collect();
    assert_eq!(per_cpu, expected);
    assert_eq!(first["sum"].as_u64().unwrap(), expected.iter().sum::<u64>());

    let out = run_with_timeout(userbpf().args(["map", "dump", "comms"]).env("USERBPF_DIR", &f.dir));
    let (stdout, _) = texts(&out);
    assert!(stdout.contains("  \"bash\": 5"), "{stdout}");

    let out = run_with_timeout(userbpf().args(["map", "dump", "no_such_map"]).env("USERBPF_DIR", &f.dir));
    assert_eq!(out.status.code(), Some(4));
    let _ = f.names;
}

#[test]
fn prog_dump_disassembles_and_shows_the_verdict() {
    let f = fixture("prog-dump");
    let out = run_with_timeout(userbpf().args(["prog", "dump", &f.prog.to_string()]).env("USERBPF_DIR", &f.dir));
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("    0: mov %r0, 0\n    1: add %r0, 1\n    2: exit\n"), "{stdout}");
    assert!(stdout.contains("verifier: accepted at load\n  processed 3 insns"), "{stdout}");
    let out = run_with_timeout(userbpf().args(["prog", "dump", "4000000", "--json"]).env("USERBPF_DIR", &f.dir));
    assert_eq!(out.status.code(), Some(4));
}
