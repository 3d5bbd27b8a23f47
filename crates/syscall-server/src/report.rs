//! One-line diagnostics on stderr and errno plumbing.
//!
//! Messages go straight to fd 2 with `write(2)` (no stdio locks, safe from
//! any thread) and always name the feature that is not supported.

use std::sync::atomic::{AtomicI32, Ordering};

/// Print `userbpf: <feature> is not supported: <why>` once per feature.
pub fn unsupported(feature: &str, why: &str) {
    once(
        feature,
        &format!("userbpf: {feature} is not supported: {why}"),
    );
}

/// Print `msg` unless a message with the same `key` was printed already
/// (loaders retry failed calls, e.g. bpftrace loads a program up to six
/// times with growing log buffers).
pub fn once(key: &str, msg: &str) {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if let Ok(mut seen) = SEEN.lock() {
        if seen.iter().any(|s| s == key) {
            return;
        }
        seen.push(key.to_string());
    }
    line(msg);
}

/// A duplicate of the loader's stderr taken at load time: bpftrace points
/// fd 2 at /dev/null around `BPF_PROG_LOAD`, which would swallow the
/// server's explanation of a refused program. (If the user redirected
/// stderr, the duplicate goes to the same place.) -1 until saved.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// Keep a close-on-exec duplicate of fd 2 for messages (from the constructor).
pub fn save_stderr() {
    // SAFETY: duplicating our own stderr; failure leaves messages on fd 2.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if fd >= 0 {
        SAVED_STDERR.store(fd, Ordering::Relaxed);
    }
}

/// Print one line to stderr, prefixed message already formatted.
pub fn line(msg: &str) {
    let mut buf = Vec::with_capacity(msg.len() + 1);
    buf.extend_from_slice(msg.as_bytes());
    buf.push(b'\n');
    let saved = SAVED_STDERR.load(Ordering::Relaxed);
    let fd = if saved >= 0 { saved } else { 2 };
    // SAFETY: writing an owned buffer to a descriptor we own (or stderr).
    unsafe { libc::write(fd, buf.as_ptr() as *const _, buf.len()) };
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
