//! The plumbing that every piece of userbpf running inside somebody else's
//! process shares: `libagent.so` (and the runtime and rewriter it links) in
//! a traced application, `libsyscall_server.so` in a loader.
//!
//! Why a crate of its own: code in a preloaded library must never reach
//! the functions it interposes (that would recurse) and, in a traced
//! process, must never run through a function that can carry a probe while
//! the probe machinery itself is working (that would recurse or, with a
//! breakpoint in flight and SIGTRAP blocked, kill the process). Both rules
//! need the same two tools, kept here once:
//! - [`next`]: libc's own definition of a symbol we interpose
//!   (`dlsym(RTLD_NEXT)`, resolved once), e.g. [`next::real_sigaction`];
//! - [`raw`]: system calls issued with the `syscall` instruction, never
//!   through a libc wrapper that a user may have probed (`gettid`,
//!   `getpid`).
//!
//! Modelled on bytehound's thin preload layer: no policy here, only the
//! mechanism the crates above it share.

pub mod next;
pub mod raw;
