//! The in-process eBPF runtime shared by `libagent.so` (programs attached to
//! a traced app's functions) and `libsyscall_server.so` (programs the loader
//! runs itself: BEGIN/END, `interval:`): loading a program from the registry,
//! binding its maps, JIT-compiling it, and the helper implementations.
//!
//! Modules:
//! - [`fault`]: fault-tolerant reads of untrusted pointers (no syscall).
//! - [`env`](mod@env): the per-run environment helpers receive as `env`.
//! - [`helpers`]: every helper of `verifier::HELPERS`, kernel semantics.
//! - [`maps`]: process-local map handles (what `lddw` map references become).
//! - [`program`]: [`LoadedProgram`], a registry program made runnable.
//! - [`tail`]: PROG_ARRAY maps and the tail-call resolver.

pub mod env;
pub mod fault;
pub mod helpers;
pub mod maps;
pub mod program;
pub mod tail;

pub use env::RunEnv;
pub use program::{LoadError, LoadedProgram};
pub use vm::program::HelperFn;

/// Prepare the process for running programs: install the fault handler
/// used by `probe_read*` and the fork handler that keeps pid caches right.
/// Cheap (a few `sigaction`s); the slow caches (uid/gid, cgroup id) fill on
/// first use or through `helpers::task::refresh_slow_caches`. Idempotent.
pub fn init_process() -> Result<(), fault::InstallError> {
    helpers::task::install_fork_handler();
    fault::install()
}
