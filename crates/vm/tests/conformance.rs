//! Runs every bpf_conformance vector (`*.data`) through the interpreter.
//!
//! Directory: `$USERBPF_CONFORMANCE_DIR`, or by default
//! `$CARGO_MANIFEST_DIR/../../../shared/conformance/tests`. A missing
//! directory fails the test (a conformance run that silently checks nothing
//! is worse than none). Each failing vector is reported by file name.
//!
//! Both engines run every vector (the JIT after a checked interpreter
//! pre-flight, see `vm::conformance::execute`).

use std::path::PathBuf;

use vm::conformance::{self, Engine};

/// Vectors not expected to pass on an engine, with the reason. Empty for the
/// interpreter: every vector of the suite passes.
const SKIPPED: &[(&str, Engine, &str)] = &[];

fn conformance_dir() -> PathBuf {
    match std::env::var_os("USERBPF_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/tests"),
    }
}

/// Every `.data` file of the conformance directory, sorted; panics with a
/// clear message when the directory is missing or holds no vectors.
fn data_files() -> Vec<PathBuf> {
    let dir = conformance_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "conformance vectors not found at {} ({e}); set USERBPF_CONFORMANCE_DIR to the \
             bpf_conformance tests directory",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "data"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .data files in {}", dir.display());
    files
}

/// Run every vector on `engine`; panics listing each failing file.
pub fn run_all(engine: Engine) {
    let files = data_files();
    let mut failures = Vec::new();
    let mut skipped = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if SKIPPED.iter().any(|&(skip, e, _)| skip == name && e == engine) {
            skipped += 1;
            continue;
        }
        let outcome = std::fs::read_to_string(path)
            .map_err(|e| format!("unreadable: {e}"))
            .and_then(|text| conformance::parse(&text))
            .and_then(|case| conformance::run_case(&case, engine));
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    println!(
        "{engine:?}: {} vectors, {} passed, {} failed, {skipped} skipped",
        files.len(),
        files.len() - failures.len() - skipped,
        failures.len()
    );
    assert!(failures.is_empty(), "{} conformance failures ({engine:?}):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn interpreter_passes_every_vector() {
    run_all(Engine::Interpreter);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn jit_passes_every_vector() {
    run_all(Engine::Jit);
}

/// asm -> words -> disassembly -> asm gives the same words, for every vector.
#[test]
fn disassembly_round_trips_every_vector() {
    let mut failures = Vec::new();
    for path in data_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let case = conformance::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Ok(words) = case.program() else { continue };
        let text = vm::disasm::disassemble(&words);
        match vm::asm::assemble(&text) {
            Ok(again) if again == words => {}
            Ok(_) => failures.push(format!("{name}: reassembled words differ:\n{text}")),
            Err(e) => failures.push(format!("{name}: disassembly does not assemble ({e}):\n{text}")),
        }
        assert!(!text.contains(".insn"), "{name}: valid program printed as raw words:\n{text}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
