//! Every vector of `../shared/conformance/negative/` beside the project root (or
//! `$USERBPF_CONFORMANCE_NEGATIVE_DIR`) must be refused.
//!
//! Most are refused before running: unparsable files, assembler errors
//! (bad mnemonic, register, operand count, out-of-range immediate/offset,
//! unknown label, malformed `lock`), or `Program::load` errors (non-zero
//! reserved fields, empty program). A few are well-formed programs whose
//! *expectation* is wrong; the runner must report them as failures through
//! the outcome comparison. Those are listed in `FAIL_BY_OUTCOME` with the
//! reason, and asserted to be exactly that.

use std::path::PathBuf;

use vm::conformance::{self, Engine};

/// Well-formed programs that fail only because their expectation is wrong.
const FAIL_BY_OUTCOME: &[(&str, &str)] = &[
    (
        "incorrect_return_value_high_bits.data",
        "program returns 0x8877665544332211; the vector expects 0x8977665544332211",
    ),
    (
        "error.data",
        "`or %r0, %r10` is structurally valid (reading r0 before writing it is a verifier \
         matter, refused by `crates/verifier/tests/conformance_negative.rs`); the vector \
         expects the error text \"Invalid\"",
    ),
];

fn negative_dir() -> PathBuf {
    match std::env::var_os("USERBPF_CONFORMANCE_NEGATIVE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/negative"),
    }
}

/// How a vector was refused.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// Parser, assembler or loader refused it, or the run failed.
    Rejected(String),
    /// It ran and returned a value, contradicting the vector.
    WrongOutcome(String),
}

fn refusal(text: &str) -> Option<Refusal> {
    let case = match conformance::parse(text) {
        Ok(case) => case,
        Err(e) => return Some(Refusal::Rejected(format!("parse: {e}"))),
    };
    let insns = match case.program() {
        Ok(insns) => insns,
        Err(e) => return Some(Refusal::Rejected(e)),
    };
    let mut mem = case.mem.clone();
    match conformance::execute(&insns, &mut mem, Engine::Interpreter) {
        Err(e) => Some(Refusal::Rejected(e.to_string())),
        Ok(_) => conformance::run_case(&case, Engine::Interpreter).err().map(Refusal::WrongOutcome),
    }
}

#[test]
fn every_negative_vector_is_refused() {
    let dir = negative_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("negative vectors not found at {} ({e})", dir.display()));
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.retain(|p| p.extension().is_some_and(|ext| ext == "data"));
    files.sort();
    assert!(!files.is_empty(), "no negative vectors in {}", dir.display());

    let mut problems = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let expected_by_outcome = FAIL_BY_OUTCOME.iter().any(|&(n, _)| n == name);
        match (refusal(&text), expected_by_outcome) {
            (Some(Refusal::Rejected(why)), false) => println!("{name}: {why}"),
            (Some(Refusal::WrongOutcome(why)), true) => println!("{name}: outcome mismatch: {why}"),
            (None, _) => problems.push(format!("{name}: accepted and passed")),
            (Some(other), _) => problems.push(format!("{name}: refused the wrong way: {other:?}")),
        }
    }
    assert!(problems.is_empty(), "negative vectors not refused as expected:\n{}", problems.join("\n"));
}

/// Each malformed-input class the loader must name: the error text carries
/// the instruction index and no input panics.
#[test]
fn loader_errors_name_the_instruction() {
    let cases: &[(&str, &str)] = &[
        ("-- raw\nb7 00 00 00 01 00 00 00\nff 00 00 00 00 00 00 00\n95 00 00 00 00 00 00 00", "insn 1: unknown opcode 0xff"),
        ("-- raw\nb7 0b 00 00 01 00 00 00\n95 00 00 00 00 00 00 00", "insn 0: invalid register r11"),
        ("-- raw\nb7 00 00 00 01 00 00 00\n05 00 07 00 00 00 00 00\n95 00 00 00 00 00 00 00", "insn 1: jump target 9 is outside"),
        ("-- raw\nb7 00 00 00 01 00 00 00\nb7 00 00 00 02 00 00 00", "no exit"),
        ("-- raw\n95 00 00 00 00 00 00 00\n18 00 00 00 01 00 00 00", "insn 1: lddw is truncated"),
        ("-- raw\n07 0a 00 00 08 00 00 00\n95 00 00 00 00 00 00 00", "insn 0: r10 is the read-only frame pointer"),
    ];
    for (text, expected) in cases {
        let case = conformance::parse(&format!("{text}\n-- error\n")).unwrap();
        let insns = case.program().unwrap();
        let err = conformance::execute(&insns, &mut [], Engine::Interpreter).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}
