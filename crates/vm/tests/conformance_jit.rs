//! The bpf_conformance suite (`shared/conformance/tests/*.data`) run through
//! the JIT: every vector must assemble, load, compile and return the expected
//! r0, and the JIT must agree with the interpreter on r0 and on the memory
//! the program was given.
//!
//! Skips with a printed reason when the shared vectors are not present.

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use vm::interp::{self, RunOptions};
use vm::jit::{JitOptions, JitProgram};
use vm::program::{Helpers, Program};

/// One test vector: the sections of a `.data` file this runner needs.
struct Vector {
    asm: String,
    mem: Vec<u8>,
    result: Option<u64>,
}

fn parse(text: &str) -> Vector {
    let mut section = String::new();
    let mut asm = String::new();
    let mut mem = Vec::new();
    let mut result = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ") {
            section = name.trim().to_string();
            continue;
        }
        let content = line.split('#').next().unwrap_or("").trim();
        match section.as_str() {
            "asm" => {
                asm.push_str(line);
                asm.push('\n');
            }
            "mem" => {
                for byte in content.split_whitespace() {
                    mem.push(u8::from_str_radix(byte, 16).expect("mem byte"));
                }
            }
            "result" if !content.is_empty() => {
                let value = content.trim_start_matches("0x");
                result = Some(u64::from_str_radix(value, 16).expect("result value"));
            }
            _ => {}
        }
    }
    Vector { asm, mem, result }
}

/// Helper 5 of the suite: returns its first argument.
unsafe extern "C" fn return_first(r1: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    r1
}

fn vectors_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/tests");
    dir.is_dir().then_some(dir)
}

fn run_vector(path: &Path, opts: &JitOptions) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let vector = parse(&text);
    let insns = vm::asm::assemble(&vector.asm).map_err(|e| format!("assemble: {e}"))?;
    let prog = Program::load_plain(&insns).map_err(|e| format!("load: {e}"))?;
    let mut helpers = Helpers::new();
    helpers.register(5, return_first);
    let jit = JitProgram::compile(&prog, &helpers, opts).map_err(|e| format!("compile: {e}"))?;

    let mut jit_mem = vector.mem.clone();
    let mut interp_mem = vector.mem.clone();
    let args = |m: &mut Vec<u8>| {
        let ptr = if m.is_empty() { 0 } else { m.as_mut_ptr() as u64 };
        [ptr, m.len() as u64, 0, 0, 0]
    };
    // SAFETY: conformance programs only touch their memory and stack.
    let jit_r0 = unsafe { jit.try_call_with_args(args(&mut jit_mem), std::ptr::null_mut()) }
        .map_err(|e| format!("jit run: {e}"))?;
    // SAFETY: as above.
    let interp_r0 = unsafe {
        interp::run_with_args(&prog, &helpers, args(&mut interp_mem), std::ptr::null_mut(), &RunOptions::default())
    }
    .map_err(|e| format!("interpreter run: {e}"))?;
    if let Some(expected) = vector.result {
        if jit_r0 != expected {
            return Err(format!("jit returned {jit_r0:#x}, expected {expected:#x}"));
        }
    }
    if jit_r0 != interp_r0 {
        return Err(format!("jit returned {jit_r0:#x}, interpreter {interp_r0:#x}"));
    }
    if jit_mem != interp_mem {
        return Err("memory after the run differs from the interpreter's".into());
    }
    Ok(())
}

fn run_suite(opts: &JitOptions) {
    let Some(dir) = vectors_dir() else {
        eprintln!("skipping: conformance vectors not found beside the project (../shared)");
        return;
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no vectors in {}", dir.display());
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| run_vector(p, opts).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    eprintln!("{} vectors, {} failures", paths.len(), failures.len());
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}

#[test]
fn conformance_suite_jit() {
    run_suite(&JitOptions::default());
}

#[test]
fn conformance_suite_jit_without_bmi2() {
    run_suite(&JitOptions { bmi2: false, ..JitOptions::default() });
}
