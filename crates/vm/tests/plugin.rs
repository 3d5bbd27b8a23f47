//! Drives the built `bpf_conformance_plugin` the way `bpf_conformance_runner`
//! does: program bytes as hex on stdin, memory as the first argument,
//! plugin options after it; r0 in hex on stdout.

use std::io::Write;
use std::process::{Command, Stdio};

use vm::conformance;

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Hex encoding as the official runner writes it (`"b7  00  "`).
fn runner_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}  ")).collect()
}

fn plugin(program: &[u8], args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bpf_conformance_plugin"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    // A plugin that rejects its arguments may exit before reading stdin; the
    // write then fails with EPIPE, which is not the plugin's error to report.
    match child.stdin.take().unwrap().write_all(runner_hex(program).as_bytes()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing the program to the plugin: {e}"),
    }
    let out = child.wait_with_output().unwrap();
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

fn program_bytes(asm: &str) -> Vec<u8> {
    vm::asm::assemble(asm).unwrap().iter().flat_map(|i| i.to_u64().to_le_bytes()).collect()
}

#[test]
fn runs_vectors_from_the_suite() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/tests");
    for name in ["subnet.data", "mem-len.data", "call_unwind_fail.data", "lock_cmpxchg.data", "rfc9669_sdiv64.data"] {
        let text = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("conformance vector {name} not readable ({e})"));
        let case = conformance::parse(&text).unwrap();
        let bytes: Vec<u8> = case.program().unwrap().iter().flat_map(|i| i.to_u64().to_le_bytes()).collect();
        let memory = runner_hex(&case.mem);
        for engine in [&[][..], &["--jit"][..]] {
            let mut args: Vec<&str> = Vec::new();
            if !case.mem.is_empty() {
                args.push(&memory);
            }
            args.extend_from_slice(engine);
            let out = plugin(&bytes, &args);
            assert!(out.success, "{name} {engine:?}: {}", out.stderr);
            let r0 = u64::from_str_radix(&out.stdout, 16).unwrap();
            assert_eq!(Some(r0), case.result, "{name} {engine:?}");
        }
    }
}

#[test]
fn passes_memory_and_its_length() {
    let out = plugin(&program_bytes("ldxb %r0, [%r1+2]\nlsh %r0, 8\nor %r0, %r2\nexit"), &["aa  bb  cc  "]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout, "cc03");
}

#[test]
fn rejects_bad_programs_with_a_message() {
    // exit with a non-zero imm: reserved field.
    let out = plugin(&[0x95, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert!(!out.success);
    assert!(out.stderr.contains("insn 0") && out.stderr.contains("imm"), "{}", out.stderr);
    // Out-of-bounds access is refused, also for the JIT.
    let oob = program_bytes("ldxdw %r0, [%r1+64]\nexit");
    for args in [&["00  01  "][..], &["00  01  ", "--jit"][..]] {
        let out = plugin(&oob, args);
        assert!(!out.success && out.stderr.contains("outside"), "{args:?}: {}", out.stderr);
    }
    let truncated = plugin(&[0x95, 0, 0], &[]);
    assert!(!truncated.success && truncated.stderr.contains("not a whole number"));
    let elf = plugin(&program_bytes("exit"), &["--elf"]);
    assert!(!elf.success && elf.stderr.contains("not supported"));
}
