//! The `probe_read*` helper family. User-memory reads go through the
//! fault-tolerant copy in [`crate::fault`]: a bad pointer yields `-EFAULT`
//! (destination zeroed), never a crash. There is no kernel memory here, so
//! the `_kernel` variants always fail with `-EFAULT`, zeroing the buffer
//! exactly as the kernel does for an unreadable kernel address.

use std::ffi::c_void;

use crate::fault;

const EFAULT: u64 = -(libc::EFAULT as i64) as u64;

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

/// `bpf_probe_read_kernel(dst, size, src)`: no kernel memory is readable
/// from user space; the buffer is zeroed and `-EFAULT` returned.
pub unsafe extern "C" fn probe_read_kernel(dst: u64, size: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `dst` writable for `size` bytes.
    std::ptr::write_bytes(dst as *mut u8, 0, size as usize);
    EFAULT
}

/// `bpf_probe_read_kernel_str(dst, size, src)`: as `probe_read_kernel`.
pub unsafe extern "C" fn probe_read_kernel_str(dst: u64, size: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: as above.
    std::ptr::write_bytes(dst as *mut u8, 0, size as usize);
    EFAULT
}
