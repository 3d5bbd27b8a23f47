//! userbpf's eBPF virtual machine.
//!
//! One file per concern, in the style of rbpf: `insn` (encoding),
//! `program` (embedding API and structural validation), `asm`/`disasm`
//! (ubpf-style text), `interp` (the oracle), `jit` (x86-64).

pub mod insn;
pub mod program;
