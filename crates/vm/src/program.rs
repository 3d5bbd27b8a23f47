//! The embedding API: how other crates (agent, syscall-server, tools, tests)
//! hand instructions to the VM, resolve `lddw` pseudo sources, register
//! helpers, and run a program interpreted or JIT-compiled.
//!
//! Contract (shared by interpreter and JIT, relied on by the agent):
//! - A helper is a plain C-ABI function taking r1..r5 plus the *environment*
//!   pointer the embedder passed to `run` (its per-call context: the agent
//!   puts the probe's cookie, function ip, map handles there). Plain function
//!   pointers keep a JIT helper call to one indirect `call`.
//! - `lddw` pseudo sources (map fd, map value, map index, function, ...) are
//!   resolved once at load time through a callback; afterwards the program only
//!   holds 64-bit immediates (for maps: whatever handle the embedder chose,
//!   typically a pointer to its process-local map object).
//! - Tail calls (helper 12) go through a resolver the embedder provides, which
//!   maps (prog-array handle, index) to another loaded program.

use std::ffi::c_void;

use crate::insn::Insn;

/// C ABI of a helper: `(r1, r2, r3, r4, r5, env) -> r0`.
pub type HelperFn = unsafe extern "C" fn(u64, u64, u64, u64, u64, *mut c_void) -> u64;

/// Helper table indexed by helper id (the `imm` of `call` with src 0).
#[derive(Clone, Default)]
pub struct Helpers {
    table: Vec<Option<HelperFn>>,
}

impl Helpers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register (or replace) the helper with kernel id `id`.
    pub fn register(&mut self, id: u32, f: HelperFn) -> &mut Self {
        let id = id as usize;
        if self.table.len() <= id {
            self.table.resize(id + 1, None);
        }
        self.table[id] = Some(f);
        self
    }

    #[inline]
    pub fn get(&self, id: u32) -> Option<HelperFn> {
        self.table.get(id as usize).copied().flatten()
    }

    /// Raw view for the JIT (index = helper id).
    pub fn as_slice(&self) -> &[Option<HelperFn>] {
        &self.table
    }
}

/// A `lddw` with a pseudo source, handed to the embedder's resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PseudoLoad {
    /// Index of the first slot of the `lddw`.
    pub pc: usize,
    /// `src` field: one of `insn::BPF_PSEUDO_*`.
    pub src: u8,
    /// First slot's imm (map fd, fd_array index, ...).
    pub imm: i32,
    /// Second slot's imm (value offset for the `*_VALUE` kinds).
    pub next_imm: i32,
}

// The rest of the embedding API (Program::load with structural validation,
// the interpreter entry point, the JIT entry point and tail-call resolver) is
// added by the interpreter/JIT work; see docs/ARCHITECTURE.md.
