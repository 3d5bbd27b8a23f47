//! Rejection corpus: unsafe programs (`tests/corpus/reject/*.case`), each
//! refused with the expected errno and the kernel-style message, covering
//! every rule (structure, uninitialised reads, stack/context/map/memory bounds,
//! NULL checks, pointer arithmetic and leaks, helper arguments, references,
//! calls, loops and the complexity budget, atomics).
//!
//! With `USERBPF_KERNEL_ORACLE=1`, run as root on a kernel with eBPF, every
//! case is also loaded into the kernel (its maps created for real) and the
//! kernel must refuse it too; otherwise that half is skipped with a message.

use std::path::{Path, PathBuf};

use verifier::{map_type, verify_with_maps, MapDesc, Maps, ProgType, PseudoLoad, VerifyOptions};

/// The maps every case may name by fd (see `tests/corpus/README.md`).
pub fn corpus_map(fd: i32) -> Option<MapDesc> {
    let d = |map_type, key_size, value_size, max_entries| Some(MapDesc { map_type, key_size, value_size, max_entries });
    match fd {
        1 => d(map_type::PERCPU_HASH, 8, 8, 64),
        2 => d(map_type::PERF_EVENT_ARRAY, 4, 4, 2),
        3 => d(map_type::ARRAY, 4, 64, 4),
        4 => d(map_type::RINGBUF, 0, 0, 4096),
        5 => d(map_type::PROG_ARRAY, 4, 4, 4),
        6 => d(map_type::ARRAY, 4, 8, 1),
        7 => d(map_type::HASH, 4, 16, 64),
        8 => d(map_type::QUEUE, 0, 8, 16),
        9 => d(map_type::ARRAY, 4, 8, 1),
        _ => None,
    }
}

/// Contents of map 6, the frozen read-only array.
pub const FROZEN_VALUE: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];

struct CorpusMaps;

impl Maps for CorpusMaps {
    fn describe(&self, load: PseudoLoad) -> Option<MapDesc> {
        corpus_map(load.imm)
    }
    fn frozen_readonly_value(&self, load: PseudoLoad) -> Option<Vec<u8>> {
        (load.imm == 6).then(|| FROZEN_VALUE.to_vec())
    }
    fn readonly_for_programs(&self, load: PseudoLoad) -> bool {
        load.imm == 9
    }
}

pub struct Case {
    pub file: String,
    pub prog_type: ProgType,
    pub unprivileged: bool,
    pub asm: String,
    pub errno: i32,
    pub message: String,
}

fn errno_by_name(name: &str) -> i32 {
    match name {
        "EACCES" => verifier::EACCES,
        "EINVAL" => verifier::EINVAL,
        "E2BIG" => verifier::E2BIG,
        "EBADF" => verifier::EBADF,
        other => panic!("unknown errno name {other}"),
    }
}

pub fn parse_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let mut c = Case { file: file.clone(), prog_type: ProgType::Kprobe, unprivileged: false, asm: String::new(), errno: 0, message: String::new() };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("-- ") {
            let mut words = rest.split_whitespace();
            section = match words.next() {
                Some("type") => {
                    c.prog_type = match words.next() {
                        Some("kprobe") => ProgType::Kprobe,
                        Some("perf_event") => ProgType::PerfEvent,
                        Some("raw_tracepoint") => ProgType::RawTracepoint,
                        Some("tracepoint") => ProgType::Tracepoint,
                        Some("socket_filter") => ProgType::SocketFilter,
                        other => panic!("{file}: unknown program type {other:?}"),
                    };
                    ""
                }
                Some("unprivileged") => {
                    c.unprivileged = true;
                    ""
                }
                Some("asm") => "asm",
                Some("expect") => "expect",
                other => panic!("{file}: unknown section {other:?}"),
            };
            continue;
        }
        match section {
            "asm" => {
                c.asm.push_str(line);
                c.asm.push('\n');
            }
            "expect" if !line.trim().is_empty() => {
                let (errno, msg) = line.split_once(' ').unwrap_or_else(|| panic!("{file}: bad expect line"));
                c.errno = errno_by_name(errno);
                c.message = msg.to_string();
            }
            _ => {}
        }
    }
    assert!(c.errno != 0, "{file}: no -- expect section");
    c
}

pub fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/reject");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "case")).collect();
    files.sort();
    files
}

#[test]
fn every_unsafe_program_is_refused_with_the_expected_reason() {
    let files = case_files();
    assert!(files.len() >= 100, "only {} rejection cases", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let c = parse_case(path);
        let insns = match vm::asm::assemble(&c.asm) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: does not assemble: {e}", c.file));
                continue;
            }
        };
        let opts = VerifyOptions { log_level: 1, unprivileged: c.unprivileged, ..Default::default() };
        match verify_with_maps(&insns, c.prog_type, &CorpusMaps, &opts) {
            Ok(_) => failures.push(format!("{}: ACCEPTED (expected {} {})", c.file, c.errno, c.message)),
            Err(e) if e.errno == c.errno && e.message == c.message => {
                assert!(e.log.contains(&c.message), "{}: the log lacks the reason", c.file);
            }
            Err(e) => failures.push(format!("{}: got {} {:?}, expected {} {:?}", c.file, e.errno, e.message, c.errno, c.message)),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

/// Cases (by name) the kernel (as root) accepts on purpose while userbpf refuses them:
/// userbpf is stricter where the kernel trusts privileged users.
const KERNEL_ACCEPTS: &[(&str, &str)] = &[
    ("uninit-stack-read", "root may read uninitialised stack in the kernel; userbpf never allows it (issue rule)"),
    ("partly-init-stack-read", "root may read uninitialised stack in the kernel; userbpf never allows it (issue rule)"),
    ("uninit-stack-narrow-read", "root may read uninitialised stack in the kernel; userbpf never allows it (issue rule)"),
    ("uninit-map-key", "root may pass uninitialised stack to helpers in the kernel; userbpf never allows it"),
    ("uninit-perf-output-data", "root may pass uninitialised stack to helpers in the kernel; userbpf never allows it"),
    ("uninit-map-update-value", "root may pass uninitialised stack to helpers in the kernel; userbpf never allows it"),
    ("uninit-atomic-target", "root may read uninitialised stack in the kernel; userbpf never allows it"),
    ("stack-variable-offset", "the kernel lets root access the stack at variable offsets; userbpf requires constant stack offsets"),
    ("map-ptr-deref", "the kernel lets programs read `struct bpf_map` fields; userbpf maps have no such struct"),
    ("socket-filter-ctx", "socket filter contexts (__sk_buff) are not modelled: userbpf only loads socket filters as feature probes"),
    ("pointer-neg", "the kernel turns a negated pointer into a number for root; userbpf refuses all pointer arithmetic but +/-"),
    ("delete-from-array", "the kernel accepts array deletes and fails them at run time; userbpf refuses them at load"),
    ("atomic-pointer-src", "root may store pointers through atomics in the kernel; userbpf never lets atomics leak pointers"),
    ("atomic-spilled-pointer", "root may apply atomics to spilled pointers in the kernel; userbpf refuses it"),
];

mod kernel_client;

/// The corpus maps (fds 1..=9) in the kernel; 6 and 9 read-only for
/// programs, 6 also frozen with [`FROZEN_VALUE`], as `CorpusMaps` says.
fn kernel_corpus_maps() -> Vec<(i32, i32)> {
    let maps: Vec<kernel_client::KernelMap> = (1..=9)
        .map(|fd| kernel_client::KernelMap {
            fd,
            desc: corpus_map(fd).unwrap(),
            readonly_for_programs: fd == 6 || fd == 9,
            frozen_value: (fd == 6).then_some(&FROZEN_VALUE[..]),
        })
        .collect();
    kernel_client::create_maps(&maps)
}

#[test]
#[ignore = "needs root and kernel eBPF: USERBPF_KERNEL_ORACLE=1 cargo test -p verifier --test corpus_reject -- --ignored"]
fn the_kernel_refuses_the_corpus_too() {
    assert!(
        std::env::var("USERBPF_KERNEL_ORACLE").is_ok_and(|v| v == "1"),
        "set USERBPF_KERNEL_ORACLE=1 (as root, with kernel eBPF) to compare verdicts"
    );
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "USERBPF_KERNEL_ORACLE=1 needs root");
    let fds = kernel_corpus_maps();
    let mut disagreements = Vec::new();
    let mut agreed = 0;
    for path in case_files() {
        let c = parse_case(&path);
        if c.unprivileged {
            // The kernel only applies these rules to unprivileged loaders, and
            // unprivileged BPF is normally disabled outright.
            println!("{}: skipped (unprivileged rules; the oracle loads as root)", c.file);
            continue;
        }
        let insns = vm::asm::assemble(&c.asm).unwrap();
        let name = c.file.split_once('-').map_or("", |(_, n)| n.trim_end_matches(".case"));
        let known = KERNEL_ACCEPTS.iter().find(|(n, _)| *n == name);
        match (kernel_client::load(&insns, c.prog_type, &fds), known) {
            (Err((e, reason)), None) => {
                agreed += 1;
                println!("{}: kernel errno {e}: {reason}", c.file);
            }
            (Err((e, reason)), Some(_)) => disagreements.push(format!("{}: listed as kernel-accepted but the kernel refused it (errno {e}: {reason})", c.file)),
            (Ok(()), Some((_, why))) => println!("{}: accepted by the kernel (known: {why})", c.file),
            (Ok(()), None) => disagreements.push(format!("{}: the kernel ACCEPTS it (we refuse: {})", c.file, c.message)),
        }
    }
    for (_, k) in fds {
        // SAFETY: closing map fds this test created.
        unsafe { libc::close(k) };
    }
    println!("{agreed} cases refused by both");
    assert!(disagreements.is_empty(), "{} disagreements:\n{}", disagreements.len(), disagreements.join("\n"));
}
