//! Keeps the fault handler of `runtime::fault` first in line when the
//! application installs its own SIGSEGV/SIGBUS handler after the agent
//! loaded: `libagent.so` exports `sigaction` and `signal`, and for those two
//! signals records the application's handler as the one to chain to (and
//! answers queries with it), so the application sees exactly what it set
//! while bad `probe_read` pointers still resolve to `-EFAULT`. Every other
//! signal, and every call before the fault handler is installed, goes to
//! libc unchanged.

use libc::{c_int, sighandler_t};

type SigactionFn = unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

fn next_sigaction() -> Option<SigactionFn> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut address = NEXT.load(Ordering::Relaxed);
    if address == 0 {
        // SAFETY: dlsym with a NUL-terminated name.
        address = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) } as usize;
        NEXT.store(address, Ordering::Relaxed);
    }
    // SAFETY: a non-null `sigaction` symbol has this signature.
    (address != 0).then(|| unsafe { std::mem::transmute::<usize, SigactionFn>(address) })
}

/// Interposed `sigaction(2)`.
///
/// # Safety
/// Same contract as libc's `sigaction`.
#[no_mangle]
pub unsafe extern "C" fn sigaction(signal: c_int, action: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    if signal == libc::SIGSEGV || signal == libc::SIGBUS {
        // SAFETY: `action` is null or a valid sigaction (caller contract).
        let new = unsafe { action.as_ref() };
        if let Some(previous) = runtime::fault::replace_chained_handler(signal, new) {
            if !old.is_null() {
                // SAFETY: `old` is writable (caller contract).
                unsafe { *old = previous };
            }
            return 0;
        }
    }
    match next_sigaction() {
        // SAFETY: forwarding the caller's arguments to libc.
        Some(next) => unsafe { next(signal, action, old) },
        None => {
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = libc::ENOSYS };
            -1
        }
    }
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
