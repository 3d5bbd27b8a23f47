//! The agent's only output: one-line messages on the application's stderr,
//! prefixed `userbpf-agent:`, silenced by `USERBPF_QUIET=1`. Written with a
//! single `write(2)` so lines from several threads never interleave and no
//! Rust stdio lock the application might hold is taken.

use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Apply the environment's verbosity (`USERBPF_QUIET`, `USERBPF_AGENT_DEBUG`).
pub fn configure(quiet: bool, debug: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    DEBUG.store(debug && !quiet, Ordering::Relaxed);
}

fn emit(message: &str) {
    let line = format!("userbpf-agent[{}]: {message}\n", std::process::id());
    // SAFETY: writing an initialised buffer to fd 2; a failed write is ignored.
    unsafe { libc::write(2, line.as_ptr() as *const libc::c_void, line.len()) };
}

/// A problem the user should see (the agent carries on, inert if need be).
pub fn warn(message: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        emit(message);
    }
}

/// Progress detail, shown only with `USERBPF_AGENT_DEBUG=1`.
pub fn debug(message: impl FnOnce() -> String) {
    if DEBUG.load(Ordering::Relaxed) {
        emit(&message());
    }
}
