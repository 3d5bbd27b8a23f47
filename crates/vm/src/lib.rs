//! userbpf's eBPF virtual machine.
//!
//! One file per concern, in the style of rbpf: `insn` (encoding),
//! `program` (embedding API and structural validation), `error` (load and
//! run errors), `asm`/`disasm` (ubpf-style text), `interp` (the oracle),
//! `conformance` (the bpf_conformance `.data` format), `jit` (x86-64).

pub mod asm;
pub mod conformance;
pub mod disasm;
pub mod error;
pub mod exec_mem;
#[doc(hidden)]
pub mod fixtures;
pub mod insn;
#[cfg(target_arch = "x86_64")]
pub mod jit;
pub mod interp;
pub mod program;
