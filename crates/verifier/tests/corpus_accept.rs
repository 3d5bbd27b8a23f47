//! Acceptance corpus: every program bpftrace 0.17 and Debian's libbpf-tools
//! (bashreadline, funclatency, gethostlatency) loaded in the end-to-end
//! scenarios, captured at `BPF_PROG_LOAD` with the kernel's verdict
//! (`tests/corpus/capture/`). Each program the kernel accepted must verify,
//! unless it is a feature probe for a helper userbpf does not offer, which
//! must be refused exactly the way bpftrace's probe expects ("unknown func").
//! Programs the kernel refused must be refused too.

use std::collections::HashMap;
use std::path::Path;

use verifier::{helper, verify_with_maps, MapDesc, Maps, ProgType, PseudoLoad, VerifyOptions};
use vm::insn::{Insn, CALL, LDDW};

struct Captured {
    name: String,
    prog_type: u32,
    kernel_errno: i32,
    maps: HashMap<i32, MapDesc>,
    /// Element 0 of arrays frozen read-only for programs (`.rodata`).
    frozen: HashMap<i32, Vec<u8>>,
    insns: Vec<Insn>,
}

fn parse(path: &Path) -> Captured {
    let text = std::fs::read_to_string(path).unwrap();
    let mut c = Captured { name: String::new(), prog_type: 0, kernel_errno: 0, maps: HashMap::new(), frozen: HashMap::new(), insns: Vec::new() };
    let mut readonly = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f[i].parse::<i64>().unwrap_or_else(|_| panic!("{}: bad line {line}", path.display()));
        match f[0] {
            "prog_type" => c.prog_type = num(1) as u32,
            "name" => c.name = f[1].to_string(),
            "kernel_errno" => c.kernel_errno = num(1) as i32,
            "map" => {
                let d = MapDesc { map_type: num(2) as u32, key_size: num(3) as u32, value_size: num(4) as u32, max_entries: num(5) as u32 };
                c.maps.insert(num(1) as i32, d);
                if num(6) & BPF_F_RDONLY_PROG != 0 {
                    readonly.push(num(1) as i32);
                }
            }
            "frozen" => {
                let hex = f[2];
                let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
                c.frozen.insert(num(1) as i32, bytes);
            }
            "insn" => c.insns.push(Insn::from_u64(u64::from_str_radix(f[1], 16).unwrap())),
            other => panic!("{}: unknown line kind {other}", path.display()),
        }
    }
    c.frozen.retain(|fd, _| readonly.contains(fd));
    c
}

const BPF_F_RDONLY_PROG: i64 = 1 << 7;

impl Maps for Captured {
    fn describe(&self, load: PseudoLoad) -> Option<MapDesc> {
        self.maps.get(&load.imm).copied()
    }
    fn frozen_readonly_value(&self, load: PseudoLoad) -> Option<Vec<u8>> {
        self.frozen.get(&load.imm).cloned()
    }
}

/// Helper ids the program calls that userbpf does not offer.
fn missing_helpers(insns: &[Insn]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        if i.opc == CALL && i.src == 0 && helper(i.imm as u32).is_none() {
            out.push(i.imm);
        }
        pc += if i.opc == LDDW { 2 } else { 1 };
    }
    out
}

#[test]
fn captured_programs_get_the_expected_verdict() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/accept");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 50, "corpus missing: {}", dir.display());
    let (mut accepted, mut refused_probe, mut skipped) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    for path in &files {
        let c = parse(path);
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(pt) = ProgType::from_kernel(c.prog_type) else {
            skipped.push(format!("{file}: program type {} not supported by userbpf", c.prog_type));
            continue;
        };
        let r = verify_with_maps(&c.insns, pt, &c, &VerifyOptions { log_level: 1, ..Default::default() });
        let missing = missing_helpers(&c.insns);
        match (&r, c.kernel_errno, missing.is_empty()) {
            (Ok(_), 0, _) => accepted += 1,
            (Err(e), 0, false) if e.message.contains("unknown func") && c.name == "-" => {
                println!("{file} ({}): feature probe for a helper userbpf lacks: {}", c.name, e.message);
                refused_probe += 1;
            }
            (Err(e), k, _) if k != 0 => {
                println!("{file} ({}): refused like the kernel (errno {k}): {}", c.name, e.message);
                refused_probe += 1;
            }
            (Ok(_), k, _) => failures.push(format!("{file} ({}): accepted but the kernel refused it with errno {k}", c.name)),
            (Err(e), _, _) => {
                let tail: String = e.log.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                failures.push(format!("{file} ({}): refused: {e}\n{tail}", c.name));
            }
        }
    }
    for s in &skipped {
        println!("skipped {s}");
    }
    println!("{accepted} accepted, {refused_probe} feature probes refused as expected, {} skipped", skipped.len());
    assert!(failures.is_empty(), "{} of {} programs got the wrong verdict:\n\n{}", failures.len(), files.len(), failures.join("\n\n"));
    assert!(accepted >= 40);
}
