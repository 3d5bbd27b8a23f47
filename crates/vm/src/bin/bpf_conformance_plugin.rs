//! `bpf_conformance_plugin`: userbpf's VM behind the bpf_conformance plugin
//! protocol, so the official `bpf_conformance_runner` can measure it:
//!
//! ```text
//! bpf_conformance_runner --test_file_directory tests \
//!     --plugin_path target/release/bpf_conformance_plugin [--plugin_options --jit]
//! ```
//!
//! - stdin: the program as whitespace-separated hex bytes (`b7  00  00 ...`);
//! - first argument, when it does not start with `--`: the memory as hex
//!   bytes; r1 points to a copy, r2 holds its length;
//! - `--jit` runs the x86-64 JIT (after a checked interpreter pre-flight,
//!   see `vm::conformance::execute`), `--interpret` (default) the
//!   interpreter in checked mode; `--elf` (ELF input) is not supported;
//! - helper 5 returns its first argument;
//! - stdout: r0 in hex; a rejected or failed program exits with status 1 and
//!   the reason on stderr.

use std::io::Read;
use std::process::ExitCode;

use vm::conformance::{self, Engine};

fn run() -> Result<u64, String> {
    let mut engine = Engine::Interpreter;
    let mut memory_hex: Option<String> = None;
    for (index, arg) in std::env::args().skip(1).enumerate() {
        match arg.as_str() {
            "" => {}
            "--jit" => engine = Engine::Jit,
            "--interpret" | "--interpreter" => engine = Engine::Interpreter,
            "--elf" => return Err("ELF input (--elf) is not supported; pass raw instructions".into()),
            option if option.starts_with("--") => return Err(format!("unknown option {option}")),
            memory if index == 0 => memory_hex = Some(memory.to_string()),
            other => return Err(format!("unexpected argument {other:?} (memory must be the first argument)")),
        }
    }

    let mut program_hex = String::new();
    std::io::stdin()
        .read_to_string(&mut program_hex)
        .map_err(|e| format!("cannot read the program from stdin: {e}"))?;
    let bytes = conformance::parse_hex_bytes(&program_hex).map_err(|e| format!("program: {e}"))?;
    if bytes.len() % 8 != 0 {
        return Err(format!("program is {} bytes, not a whole number of 8-byte instructions", bytes.len()));
    }
    let insns = vm::insn::decode_all(&bytes);
    let mut memory = match memory_hex {
        Some(hex) => conformance::parse_hex_bytes(&hex).map_err(|e| format!("memory: {e}"))?,
        None => Vec::new(),
    };
    conformance::execute(&insns, &mut memory, engine).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(r0) => {
            println!("{r0:x}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
