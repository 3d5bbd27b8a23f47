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

/// `USERBPF_TRACE=1`: each `bpf()` and `perf_event_open` the server
/// answers is printed with its answer, like `strace` would show a kernel's
/// (which sees none of them). For operators asking "what did the loader
/// ask for that failed?".
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("USERBPF_TRACE").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Print one traced call (see [`tracing`]).
pub fn trace(call: &str, result: Result<std::ffi::c_long, i32>) {
    let answer = match result {
        Ok(v) => format!("= {v}"),
        Err(e) => format!("= -1 {} ({})", errno_name(e), std::io::Error::from_raw_os_error(e)),
    };
    line(&format!("userbpf trace: {call} {answer}"));
}

/// The symbolic name of the errnos the server answers with.
fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::E2BIG => "E2BIG",
        libc::ENOTTY => "ENOTTY",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        crate::abi::ENOTSUPP => "ENOTSUPP",
        _ => "E?",
    }
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
