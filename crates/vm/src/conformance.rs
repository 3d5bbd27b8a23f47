//! The bpf_conformance test-vector format (`*.data`) and a runner for one
//! vector, shared by the conformance tests, the negative tests and the
//! `bpf_conformance_plugin` executable.
//!
//! Format: sections introduced by a line starting with `-- `:
//! `-- asm` (program text, see [`crate::asm`]), `-- raw` (encoded program:
//! `0x`-prefixed 64-bit words, or hex bytes 8 per instruction), `-- mem`
//! (hex bytes; r1 points to a copy, r2 holds its length), `-- result`
//! (expected r0, hex with `0x` or decimal), `-- error` (the program must be
//! rejected). Text after `#` is a comment. Any other section (`-- c`,
//! `-- no register offset`, ...) is ignored together with its content.
//!
//! Execution ([`execute`]) always uses the interpreter's *checked* mode with
//! an instruction budget: vectors are untrusted input (the plugin receives
//! arbitrary programs), so a bad program yields an error, never a crash.

use std::ffi::c_void;

use crate::asm::assemble;
use crate::error::{LoadError, RunError};
use crate::insn::Insn;
use crate::interp::{self, MemoryRegion, RunOptions};
use crate::program::{Helpers, Program};

/// Instruction budget of one conformance run (the slowest vector needs a few
/// thousand; this only stops runaway loops).
pub const INSTRUCTION_BUDGET: u64 = 100_000_000;

/// One parsed `.data` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestCase {
    /// `-- asm` text, if the section is present.
    pub asm: Option<String>,
    /// `-- raw` words, if the section is present.
    pub raw: Option<Vec<Insn>>,
    /// `-- mem` bytes (empty when absent).
    pub mem: Vec<u8>,
    /// `-- result`, if present.
    pub result: Option<u64>,
    /// `-- error` text (`Some("")` when the section is present but empty).
    pub error: Option<String>,
}

impl TestCase {
    /// The program's instruction slots: the assembled `-- asm` text, which
    /// must equal `-- raw` when both are present; `-- raw` alone otherwise.
    pub fn program(&self) -> Result<Vec<Insn>, String> {
        match (&self.asm, &self.raw) {
            (Some(text), raw) => {
                let insns = assemble(text).map_err(|e| format!("assembler: {e}"))?;
                if let Some(raw) = raw {
                    if raw != &insns {
                        return Err(format!(
                            "assembler output differs from -- raw:\n  asm: {}\n  raw: {}",
                            words(&insns),
                            words(raw)
                        ));
                    }
                }
                Ok(insns)
            }
            (None, Some(raw)) => Ok(raw.clone()),
            (None, None) => Err("no -- asm or -- raw section".to_string()),
        }
    }
}

fn words(insns: &[Insn]) -> String {
    insns.iter().map(|i| format!("{:#018x}", i.to_u64())).collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Ignored,
    Asm,
    Raw,
    Mem,
    Result,
    Error,
}

/// Parse the text of a `.data` file.
pub fn parse(text: &str) -> Result<TestCase, String> {
    let mut case = TestCase::default();
    let mut section = Section::Ignored;
    let mut asm = String::new();
    let mut raw = String::new();
    let mut mem = String::new();
    let mut result = String::new();
    let mut error = String::new();
    let (mut has_asm, mut has_raw) = (false, false);

    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim_end_matches('\r');
        if let Some(header) = line.trim_start().strip_prefix("--") {
            section = match header.trim() {
                "asm" => {
                    has_asm = true;
                    Section::Asm
                }
                "raw" => {
                    has_raw = true;
                    Section::Raw
                }
                "mem" => Section::Mem,
                "result" => Section::Result,
                "error" => {
                    case.error.get_or_insert_with(String::new);
                    Section::Error
                }
                _ => Section::Ignored,
            };
            continue;
        }
        let target = match section {
            Section::Ignored => continue,
            Section::Asm => &mut asm,
            Section::Raw => &mut raw,
            Section::Mem => &mut mem,
            Section::Result => &mut result,
            Section::Error => &mut error,
        };
        target.push_str(line);
        target.push('\n');
    }

    if has_asm {
        case.asm = Some(asm);
    }
    if has_raw {
        case.raw = Some(parse_raw(&raw)?);
    }
    case.mem = parse_hex_bytes(&mem)?;
    let result = result.trim();
    if !result.is_empty() {
        let value = match result.strip_prefix("0x").or_else(|| result.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => result.parse::<u64>(),
        };
        case.result = Some(value.map_err(|e| format!("bad -- result {result:?}: {e}"))?);
    }
    if case.error.is_some() {
        case.error = Some(error.trim().to_string());
    }
    Ok(case)
}

/// Whitespace-separated hex bytes (`00 0a ff`), as in `-- mem` and the
/// plugin protocol.
pub fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    text.split_whitespace()
        .map(|token| {
            let digits = token.strip_prefix("0x").unwrap_or(token);
            if digits.is_empty() || digits.len() > 2 {
                return Err(format!("bad hex byte {token:?}"));
            }
            u8::from_str_radix(digits, 16).map_err(|_| format!("bad hex byte {token:?}"))
        })
        .collect()
}

/// `-- raw`: either `0x`-prefixed 64-bit words (one instruction slot each,
/// as the reference parser reads them) or plain hex bytes without prefix,
/// 8 per instruction (little-endian `struct bpf_insn`, as the negative
/// vectors are written).
pub fn parse_raw(text: &str) -> Result<Vec<Insn>, String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if !tokens.is_empty() && tokens.iter().all(|t| t.starts_with("0x")) {
        tokens
            .iter()
            .map(|t| {
                u64::from_str_radix(&t[2..], 16)
                    .map(Insn::from_u64)
                    .map_err(|_| format!("bad raw word {t:?}"))
            })
            .collect()
    } else {
        let bytes = parse_hex_bytes(text)?;
        if bytes.len() % 8 != 0 {
            return Err(format!("raw program is {} bytes, not a multiple of 8", bytes.len()));
        }
        Ok(crate::insn::decode_all(&bytes))
    }
}

/// Which engine runs a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// [`crate::interp`], checked mode.
    Interpreter,
    /// The x86-64 JIT (after a checked interpreter pre-flight, see
    /// [`execute`]).
    Jit,
}

/// Why [`execute`] produced no r0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// `Program::load` refused the program.
    Load(LoadError),
    /// The run stopped abnormally.
    Run(RunError),
    /// The engine cannot run it (JIT unavailable or compilation failed).
    Engine(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Load(e) => write!(f, "rejected: {e}"),
            ExecError::Run(e) => write!(f, "run failed: {e}"),
            ExecError::Engine(e) => f.write_str(e),
        }
    }
}

/// The conformance suite's helper 5: returns its first argument.
unsafe extern "C" fn helper_return_first_arg(
    r1: u64,
    _r2: u64,
    _r3: u64,
    _r4: u64,
    _r5: u64,
    _env: *mut c_void,
) -> u64 {
    r1
}

/// The helpers every conformance run gets.
pub fn conformance_helpers() -> Helpers {
    let mut helpers = Helpers::new();
    helpers.register(5, helper_return_first_arg);
    helpers
}

/// Load `insns` and run them on `engine` with r1 = `mem` (a scratch copy the
/// program may modify), r2 = its length; returns r0.
///
/// The JIT does no bounds checks, so before a JIT run the program is run
/// once by the checked interpreter on a copy of `mem`: conformance programs
/// are deterministic (helper 5 is pure), so that run performs exactly the
/// accesses the JIT run will, and an out-of-bounds program is refused
/// instead of being executed natively.
pub fn execute(insns: &[Insn], mem: &mut [u8], engine: Engine) -> Result<u64, ExecError> {
    let program = Program::load_plain(insns).map_err(ExecError::Load)?;
    let helpers = conformance_helpers();
    match engine {
        Engine::Interpreter => interpret_checked(&program, &helpers, mem),
        Engine::Jit => {
            interpret_checked(&program, &helpers, &mut mem.to_vec())?;
            run_jit(&program, &helpers, mem)
        }
    }
}

fn interpret_checked(program: &Program, helpers: &Helpers, mem: &mut [u8]) -> Result<u64, ExecError> {
    let args = [mem.as_mut_ptr() as u64, mem.len() as u64, 0, 0, 0];
    let regions = [MemoryRegion::from_mut_slice(mem)];
    let opts = RunOptions {
        memory_regions: Some(&regions),
        instruction_limit: Some(INSTRUCTION_BUDGET),
        tail_call_resolver: None,
    };
    // SAFETY: checked mode confines every access to the stack and `mem`;
    // helper 5 touches no memory.
    unsafe { interp::run_with_args(program, helpers, args, std::ptr::null_mut(), &opts) }
        .map_err(ExecError::Run)
}

#[cfg(target_arch = "x86_64")]
fn run_jit(program: &Program, helpers: &Helpers, mem: &mut [u8]) -> Result<u64, ExecError> {
    use crate::jit::{JitOptions, JitProgram};
    let compiled = JitProgram::compile(program, helpers, &JitOptions::default())
        .map_err(|e| ExecError::Engine(format!("JIT compilation failed: {e}")))?;
    let args = [mem.as_mut_ptr() as u64, mem.len() as u64, 0, 0, 0];
    // SAFETY: the checked interpreter run in `execute` showed this
    // deterministic program stays within the stack and `mem`.
    unsafe { compiled.try_call_with_args(args, std::ptr::null_mut()) }.map_err(ExecError::Run)
}

#[cfg(not(target_arch = "x86_64"))]
fn run_jit(_: &Program, _: &Helpers, _: &mut [u8]) -> Result<u64, ExecError> {
    Err(ExecError::Engine("the JIT is only available on x86-64".to_string()))
}

/// Run one parsed vector on `engine`: `Ok(())` when the outcome matches the
/// vector's expectation, `Err(explanation)` otherwise.
///
/// A vector with `-- error` passes when the program is rejected at any stage
/// (assembler, loader or run); the error text is not compared, since it is
/// specific to the reference implementation.
pub fn run_case(case: &TestCase, engine: Engine) -> Result<(), String> {
    if case.result.is_none() && case.error.is_none() {
        return Err("vector has neither -- result nor -- error".to_string());
    }
    let outcome = case.program().and_then(|insns| {
        let mut mem = case.mem.clone();
        execute(&insns, &mut mem, engine).map_err(|e| e.to_string())
    });
    match (outcome, &case.error, case.result) {
        (Err(_), Some(_), _) => Ok(()),
        (Err(e), None, _) => Err(e),
        (Ok(r0), Some(expected), _) => {
            Err(format!("expected rejection ({expected:?}) but the program returned {r0:#x}"))
        }
        (Ok(r0), None, Some(expected)) if r0 == expected => Ok(()),
        (Ok(r0), None, expected) => {
            Err(format!("returned {r0:#x}, expected {:#x}", expected.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_comments_and_ignored_content() {
        let text = "# header\n-- asm\nmov %r0, %r2 # len\nexit\n-- mem\n00 01\n02\n\
                    -- no register offset\ncall instruction\n-- c\nint main() { return i--; }\n-- result\n0x3\n";
        let case = parse(text).unwrap();
        assert_eq!(case.asm.as_deref(), Some("mov %r0, %r2 \nexit\n"));
        assert_eq!(case.mem, vec![0, 1, 2]);
        assert_eq!(case.result, Some(3));
        assert_eq!(case.error, None);
        assert_eq!(run_case(&case, Engine::Interpreter), Ok(()));
    }

    #[test]
    fn raw_words_and_bytes() {
        let words = parse_raw("0x5566778800000018\n0x1122334400000000\n0x0000000000000095").unwrap();
        assert_eq!(words[0], Insn::new(0x18, 0, 0, 0, 0x55667788));
        assert_eq!(parse_raw("0x95").unwrap(), vec![Insn::new(0x95, 0, 0, 0, 0)]);
        let bytes = parse_raw("95 00 00 00 00 00 00 00").unwrap();
        assert_eq!(bytes, vec![Insn::new(0x95, 0, 0, 0, 0)]);
        assert!(parse_raw("95 00").is_err());
    }

    #[test]
    fn mismatches_are_reported() {
        let case = parse("-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n").unwrap();
        assert_eq!(run_case(&case, Engine::Interpreter), Err("returned 0x1, expected 0x2".to_string()));
        let case = parse("-- raw\n95 00 00 00 01 00 00 00\n-- error\n").unwrap();
        assert_eq!(case.error.as_deref(), Some(""));
        assert_eq!(run_case(&case, Engine::Interpreter), Ok(()));
        let case = parse("-- asm\nmov %r0, 1\nexit\n-- raw\n0x0000000000000095\n-- result\n1").unwrap();
        assert!(run_case(&case, Engine::Interpreter).unwrap_err().contains("differs from -- raw"));
    }
}
