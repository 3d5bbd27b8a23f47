//! One-line diagnostics on stderr and errno plumbing.
//!
//! Messages go straight to fd 2 with `write(2)` (no stdio locks, safe from
//! any thread) and always name the feature that is not supported.

/// Print `userbpf: <feature> is not supported: <why>` once per feature.
pub fn unsupported(feature: &str, why: &str) {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if let Ok(mut seen) = SEEN.lock() {
        if seen.iter().any(|s| s == feature) {
            return;
        }
        seen.push(feature.to_string());
    }
    line(&format!("userbpf: {feature} is not supported: {why}"));
}

/// Print one line to stderr, prefixed message already formatted.
pub fn line(msg: &str) {
    let mut buf = Vec::with_capacity(msg.len() + 1);
    buf.extend_from_slice(msg.as_bytes());
    buf.push(b'\n');
    // SAFETY: writing an owned buffer to stderr.
    unsafe { libc::write(2, buf.as_ptr() as *const _, buf.len()) };
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Set errno and return the C error value `-1` in the caller's type.
pub fn fail<T: From<i8>>(e: i32) -> T {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e };
    T::from(-1)
}
