//! Ctrl-C and SIGTERM for commands that run until told to stop (`export`,
//! `profile`): the signal only sets a flag the command's loop polls, so it
//! ends its work (and removes what it put in the registry) before exiting.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the flag [`requested`] reads.
pub fn on_interrupt() {
    // SAFETY: on_stop only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

/// Whether SIGINT or SIGTERM arrived since [`on_interrupt`].
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
