//! Kernel functions (kfuncs) programs may call, under the ids
//! `verifier::KFUNC_BASE` gives them (the syscall server rewrites a
//! loader's BTF-id calls into those): today the read-only string functions
//! of Linux 6.17 that bpftrace 0.24+ calls, `bpf_strnlen` (`strlen()`) and
//! `bpf_strnstr` (`strstr()`, `strcontains()`).
//!
//! The kernel's versions read only kernel memory (`-ERANGE` for any other
//! address, `-EFAULT` if a read faults); here "kernel memory" is the run's
//! own memory, as for `bpf_probe_read_kernel` (see `helpers::probe`): the
//! BPF stack, the context and the program's maps. A string that runs off
//! the end of that memory is a fault. Strings are bounded by the kernel's
//! `XATTR_SIZE_MAX` (64 KiB, `-E2BIG`).

use std::ffi::c_void;

use super::probe::runtime_memory_from;

/// The kernel's bound on every string these functions read.
const XATTR_SIZE_MAX: usize = 65536;

const fn neg(errno: i32) -> u64 {
    -(errno as i64) as u64
}

/// The run's memory from `p` on, as the bytes a kernel function may read
/// (empty: `p` is not runtime memory).
///
/// # Safety
/// `env` is the helper's env argument.
unsafe fn readable<'a>(p: u64, env: *mut c_void) -> &'a [u8] {
    // SAFETY: forwarded; the extent is memory this run may read (its stack
    // above this frame, its context, a mapped map) and stays mapped while
    // the program runs.
    unsafe {
        let n = runtime_memory_from(p, env).min(XATTR_SIZE_MAX as u64 + 1) as usize;
        super::guest_bytes(p, n as u64)
    }
}

/// `int bpf_strnlen(const char *s, size_t count)`: the length of `s`, at
/// most `count`; -ERANGE when `s` is not runtime memory, -EFAULT when it
/// runs off it before a NUL, -E2BIG for 64 KiB without one.
pub unsafe extern "C" fn strnlen(
    s: u64,
    count: u64,
    _: u64,
    _: u64,
    _: u64,
    env: *mut c_void,
) -> u64 {
    // SAFETY: env is the helper's env argument.
    let bytes = unsafe { readable(s, env) };
    if bytes.is_empty() {
        return neg(libc::ERANGE);
    }
    let limit = (count as usize).min(XATTR_SIZE_MAX);
    match bytes.iter().take(limit).position(|&c| c == 0) {
        Some(i) => i as u64,
        None if bytes.len() < limit => neg(libc::EFAULT),
        None if limit == XATTR_SIZE_MAX => neg(libc::E2BIG),
        None => limit as u64,
    }
}

/// `int bpf_strnstr(const char *s1, const char *s2, size_t len)`: the
/// index of the first occurrence of `s2` within the first `len` characters
/// of `s1`; -ENOENT when there is none, -ERANGE/-EFAULT/-E2BIG as
/// [`strnlen`]. The loop is the kernel's (Linux 6.17 with its fix for a
/// match that ends exactly at `len`), so the answers are its answers.
pub unsafe extern "C" fn strnstr(
    s1: u64,
    s2: u64,
    len: u64,
    _: u64,
    _: u64,
    env: *mut c_void,
) -> u64 {
    // SAFETY: env is the helper's env argument.
    let (a, b) = unsafe { (readable(s1, env), readable(s2, env)) };
    if a.is_empty() || b.is_empty() {
        return neg(libc::ERANGE);
    }
    let len = len.min(u64::MAX / 2) as usize;
    let at = |s: &[u8], k: usize| s.get(k).copied();
    for i in 0..XATTR_SIZE_MAX {
        let mut j = 0;
        while i + j <= len && j < XATTR_SIZE_MAX {
            let Some(c2) = at(b, j) else {
                return neg(libc::EFAULT);
            };
            if c2 == 0 {
                return i as u64;
            }
            if i + j == len {
                break;
            }
            let Some(c1) = at(a, i + j) else {
                return neg(libc::EFAULT);
            };
            if c1 == 0 {
                return neg(libc::ENOENT);
            }
            if c1 != c2 {
                break;
            }
            j += 1;
        }
        if j == XATTR_SIZE_MAX {
            return neg(libc::E2BIG);
        }
        if i + j == len {
            return neg(libc::ENOENT);
        }
    }
    neg(libc::E2BIG)
}
