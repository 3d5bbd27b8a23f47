//! libc's own definitions of the functions userbpf's libraries interpose.
//!
//! A preloaded library that exports `sigaction` (the agent does, to keep
//! its signal handlers first) must reach libc's `sigaction` to install its
//! own handlers: calling `libc::sigaction` would bind to the interposer
//! itself. [`NextSymbol`] resolves `dlsym(RTLD_NEXT, name)` once and caches
//! the address in an atomic, so later uses (including from signal handlers)
//! make no call into the dynamic loader.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A symbol's next definition after this library, resolved on first use.
pub struct NextSymbol {
    name: &'static CStr,
    address: AtomicUsize,
}

impl NextSymbol {
    /// The next definition of `name` (not yet resolved).
    pub const fn new(name: &'static CStr) -> NextSymbol {
        NextSymbol { name, address: AtomicUsize::new(0) }
    }

    /// Its address, or `None` if no later object defines it. Resolving
    /// twice from two threads is harmless: both find the same address.
    pub fn address(&self) -> Option<usize> {
        let mut address = self.address.load(Ordering::Relaxed);
        if address == 0 {
            // SAFETY: dlsym with a NUL-terminated name; null is handled.
            address = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
            self.address.store(address, Ordering::Relaxed);
        }
        (address != 0).then_some(address)
    }
}

/// The signature of `sigaction(2)`.
pub type SigactionFn = unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;

static SIGACTION: NextSymbol = NextSymbol::new(c"sigaction");

/// libc's own `sigaction`, bypassing the agent's interposer. Falls back to
/// the linked `sigaction` when nothing follows this object (a test binary
/// that links the agent statically and so defines the interposer itself
/// still finds libc's through `RTLD_NEXT`).
pub fn real_sigaction() -> SigactionFn {
    let address = SIGACTION.address().unwrap_or(libc::sigaction as *const () as usize);
    // SAFETY: `address` is a definition of `sigaction`, which has exactly
    // this signature.
    unsafe { std::mem::transmute::<usize, SigactionFn>(address) }
}

/// Set `signal`'s disposition with libc's own `sigaction` (see
/// [`real_sigaction`]). Returns the previous one, or the OS error.
pub fn set_disposition(signal: libc::c_int, action: &libc::sigaction) -> std::io::Result<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid out-parameter.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to initialised structs.
    if unsafe { real_sigaction()(signal, action, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(old)
}

/// `signal`'s current disposition, read with libc's own `sigaction`.
pub fn disposition(signal: libc::c_int) -> std::io::Result<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid out-parameter.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries.
    if unsafe { real_sigaction()(signal, std::ptr::null(), &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libc_sigaction_and_reads_a_disposition() {
        let sigaction = SIGACTION.address().expect("libc defines sigaction after this test binary");
        assert_ne!(sigaction, 0);
        let usr2 = disposition(libc::SIGUSR2).unwrap();
        assert_eq!(usr2.sa_sigaction, libc::SIG_DFL);
    }

    #[test]
    fn unknown_symbols_resolve_to_none() {
        static MISSING: NextSymbol = NextSymbol::new(c"userbpf_no_such_symbol");
        assert_eq!(MISSING.address(), None);
    }
}
