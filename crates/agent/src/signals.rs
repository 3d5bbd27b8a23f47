//! Keeps userbpf's signal handlers first in line when the application
//! installs its own after the agent loaded. `libagent.so` exports
//! `sigaction` and `signal`; for the signals userbpf owns it records the
//! application's handler as the one to chain to (and answers queries with
//! it), so the application sees exactly what it set while userbpf's
//! handlers keep working:
//! - SIGSEGV/SIGBUS: `runtime::fault` (bad `probe_read` pointers resolve
//!   to `-EFAULT`);
//! - SIGTRAP and `SIGRTMAX - 1`: the rewriter's breakpoint and rendezvous
//!   handlers ([`rewriter::owned_signals`]); an application SIGTRAP handler
//!   installed after attach would otherwise turn every breakpoint probe
//!   into the application's trap, and a rendezvous into a lost patch.
//!
//! Every other signal, and every call before the corresponding handler is
//! installed, goes to libc unchanged. The owners install their own handlers
//! with libc's `sigaction` (`preload::next::real_sigaction`), never through
//! these interposers.

use libc::{c_int, sighandler_t};

/// The application's previous disposition of `signal` if userbpf owns the
/// signal now (after recording `new` as the application's handler), or
/// `None` when the call belongs to libc.
fn route_owned(signal: c_int, new: Option<&libc::sigaction>) -> Option<libc::sigaction> {
    if signal == libc::SIGSEGV || signal == libc::SIGBUS {
        return runtime::fault::replace_chained_handler(signal, new);
    }
    if rewriter::owned_signals().contains(&signal) {
        return rewriter::replace_application_handler(signal, new);
    }
    None
}

/// Interposed `sigaction(2)`.
///
/// # Safety
/// Same contract as libc's `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(signal: c_int, action: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: `action` is null or a valid sigaction (caller contract).
    let new = unsafe { action.as_ref() };
    if let Some(previous) = route_owned(signal, new) {
        if !old.is_null() {
            // SAFETY: `old` is writable (caller contract).
            unsafe { *old = previous };
        }
        return 0;
    }
    // SAFETY: forwarding the caller's arguments to libc.
    unsafe { preload::next::real_sigaction()(signal, action, old) }
}

/// Interposed `signal(3)` (glibc's `signal` does not go through the
/// exported `sigaction`), with BSD semantics like glibc's.
///
/// # Safety
/// Same contract as libc's `signal`.
#[no_mangle]
pub unsafe extern "C" fn signal(signal: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: an all-zero sigaction is valid; the fields are then set.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: initialising the mask of our local struct.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid local structs.
    if unsafe { sigaction(signal, &action, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}
