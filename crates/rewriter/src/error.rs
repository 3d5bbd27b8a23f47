//! The crate's error type: every refusal names what was refused and why.

use std::path::PathBuf;

/// Everything that can go wrong while resolving or attaching a probe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a usable ELF file: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("{path}: no function symbol named `{name}` in .symtab or .dynsym")]
    SymbolNotFound { path: PathBuf, name: String },
    #[error("{path}: virtual address {vaddr:#x} is not inside any PT_LOAD segment's file image")]
    AddressNotInFile { path: PathBuf, vaddr: u64 },
    #[error("file {file} offset {offset:#x} is not mapped executable in this process")]
    OffsetNotMapped { file: String, offset: u64 },
    #[error("address {0:#x} is not in an executable mapping of this process")]
    AddressNotExecutable(usize),
    #[error("cannot relocate the prologue at {address:#x}: {reason}")]
    Relocation { address: usize, reason: String },
    #[error("no free memory within ±2 GiB of {0:#x} for a trampoline")]
    NoNearMemory(usize),
    #[error("cannot write the code at {address:#x}: {reason}")]
    Patch { address: usize, reason: String },
    #[error("no probe with id {0}")]
    UnknownProbe(u64),
    #[error("too many handlers on the function at {0:#x} (limit {1})")]
    TooManyHandlers(usize, usize),
    #[error("breakpoint table is full ({0} sites)")]
    BreakpointTableFull(usize),
    #[error("could not prove that no thread is inside the bytes to patch at {address:#x}: {reason}")]
    ThreadsNotQuiescent { address: usize, reason: String },
    #[error("{feature} is not supported: {reason}")]
    Unsupported { feature: &'static str, reason: String },
    #[error("system call {call} failed: {source}")]
    Sys { call: &'static str, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn sys(call: &'static str) -> Self {
        Error::Sys { call, source: std::io::Error::last_os_error() }
    }
}
