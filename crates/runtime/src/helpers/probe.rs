//! The `probe_read*` helper family. User-memory reads go through the
//! fault-tolerant copy in [`crate::fault`]: a bad pointer yields `-EFAULT`
//! (destination zeroed), never a crash.
//!
//! The `_kernel` variants read what a BPF program knows as kernel memory:
//! here, the memory the runtime owns for the run, i.e. the values of the
//! program's maps, the run's context (the probe's saved registers: libbpf's
//! `usdt.bpf.h`, which bpftrace 0.27 uses, reads USDT arguments from
//! `struct pt_regs` with it) and the BPF stack (which lives on the native
//! stack, a little above the helper's own frame). bpftrace 0.20 and later copy
//! strings between its scratch map values with `bpf_probe_read_kernel`, and
//! zero buffers with `probe_read_kernel(dst, n, NULL)`. Anything else fails
//! with `-ERANGE` and a zeroed buffer, as the kernel's
//! `copy_from_kernel_nofault` does for a user address (NULL included): the
//! app's own memory is user memory. A `_str` read that runs off the end of
//! runtime memory before its NUL is a fault (`-EFAULT`).

use std::ffi::c_void;

use crate::fault;

const EFAULT: u64 = -(libc::EFAULT as i64) as u64;
const ERANGE: u64 = -(libc::ERANGE as i64) as u64;

/// `bpf_probe_read(dst, size, src)` (legacy: user or kernel address; in a
/// user process only user addresses exist).
pub unsafe extern "C" fn probe_read(dst: u64, size: u64, src: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `dst` writable for `size` bytes.
    fault::read_user(dst as *mut u8, src, size as usize) as u64
}

/// `bpf_probe_read_user(dst, size, src)`.
pub unsafe extern "C" fn probe_read_user(dst: u64, size: u64, src: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: as for `probe_read`.
    fault::read_user(dst as *mut u8, src, size as usize) as u64
}

/// `bpf_probe_read_str(dst, size, src)`.
pub unsafe extern "C" fn probe_read_str(dst: u64, size: u64, src: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `dst` writable for `size` bytes.
    fault::read_user_str(dst as *mut u8, src, size as usize) as u64
}

/// `bpf_probe_read_user_str(dst, size, src)`.
pub unsafe extern "C" fn probe_read_user_str(dst: u64, size: u64, src: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: as for `probe_read_str`.
    fault::read_user_str(dst as *mut u8, src, size as usize) as u64
}

/// Bytes of the largest context a run gets (`struct bpf_perf_event_data`:
/// `struct pt_regs` and two u64s).
const CTX_BYTES: u64 = 21 * 8 + 16;

/// Whether `[src, src + len)` is runtime memory of the running program:
/// a value of one of its maps, its context, or the BPF stack.
///
/// The BPF stack is in the JIT's (or the interpreter's) frame, which lies
/// between this helper's frame and the run's `RunEnv`, which the caller of
/// the run keeps in its own frame: the app's stack is above that, so it
/// stays user memory.
///
/// # Safety
/// `env` is the helper's env argument.
unsafe fn is_runtime_memory(src: u64, len: u64, env: *mut c_void) -> bool {
    // SAFETY: forwarded.
    len <= unsafe { runtime_memory_from(src, env) }
}

/// How many bytes from `src` on are runtime memory of the running program
/// (0: `src` is not): the rest of the BPF stack, of the context, or of the
/// map mapping `src` lies in. See [`is_runtime_memory`].
///
/// # Safety
/// `env` is the helper's env argument.
#[inline(never)]
pub(crate) unsafe fn runtime_memory_from(src: u64, env: *mut c_void) -> u64 {
    let here = &src as *const u64 as u64; // an address in this frame
    let limit = env as u64;
    if !env.is_null() && src >= here && src < limit {
        return limit - src;
    }
    // SAFETY: forwarded.
    let ctx = unsafe { crate::env::RunEnv::from_helper_arg(env) }.map_or(0, |e| e.ctx);
    if ctx != 0 && src >= ctx && src < ctx + CTX_BYTES {
        return ctx + CTX_BYTES - src;
    }
    // SAFETY: forwarded.
    unsafe { super::running_program(env) }.map_or(0, |p| p.map_memory_from(src))
}

/// `bpf_probe_read_kernel(dst, size, src)`: reads runtime memory (see the
/// module docs); anything else zeroes `dst` and returns `-ERANGE`.
pub unsafe extern "C" fn probe_read_kernel(dst: u64, size: u64, src: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: env is the helper's env argument.
    if unsafe { is_runtime_memory(src, size.max(1), env) } {
        // SAFETY: the verifier proved `dst` writable for `size` bytes; the
        // copy tolerates faults anyway.
        return fault::read_user(dst as *mut u8, src, size as usize) as u64;
    }
    // SAFETY: the verifier proved `dst` writable for `size` bytes.
    std::ptr::write_bytes(dst as *mut u8, 0, size as usize);
    ERANGE
}

/// `bpf_probe_read_kernel_str(dst, size, src)`: as `probe_read_kernel`,
/// for a NUL-terminated string (the first byte must be runtime memory; the
/// copy stops at the NUL).
pub unsafe extern "C" fn probe_read_kernel_str(dst: u64, size: u64, src: u64, _: u64, _: u64, env: *mut c_void) -> u64 {
    // SAFETY: env is the helper's env argument.
    if size == 0 {
        return 0; // strncpy_from_kernel_nofault's `count <= 0`
    }
    // SAFETY: env is the helper's env argument.
    let room = unsafe { runtime_memory_from(src, env) };
    if room > 0 {
        // SAFETY: the verifier proved `dst` writable for `size` bytes; the
        // copy stops at the end of runtime memory (a fault, as when the
        // kernel's copy runs off a mapping).
        let n = fault::read_user_str(dst as *mut u8, src, size.min(room) as usize);
        // SAFETY: src + room - 1 is the last byte of runtime memory.
        if size > room && n as u64 == room && unsafe { *((src + room - 1) as *const u8) } != 0 {
            std::ptr::write_bytes(dst as *mut u8, 0, size as usize);
            return EFAULT;
        }
        return n as u64;
    }
    // SAFETY: as above.
    std::ptr::write_bytes(dst as *mut u8, 0, size as usize);
    ERANGE
}
