//! Copies to and from the loader's memory that fail with EFAULT, as the
//! kernel's `copy_from_user`/`copy_to_user` do, instead of crashing the
//! loader when it passes a bad pointer (a `bpf_attr`, a key or value
//! buffer, a log buffer, a uprobe_multi array).
//!
//! The copies go through `process_vm_readv`/`process_vm_writev` on this
//! very process, which checks the addresses (a process may always access
//! itself). Where those calls are not allowed (a seccomp filter) the copy
//! is direct, and a bad pointer faults as it would in the loader's own code.

/// How a copy failed for a reason other than a bad address.
fn unavailable(errno: i32) -> bool {
    matches!(errno, libc::ENOSYS | libc::EPERM)
}

/// `len` bytes of the loader's memory at `ptr`, or EFAULT.
///
/// # Safety
/// `ptr` should be readable for `len` bytes; if it is not and the checked
/// copy is unavailable, the process faults.
pub unsafe fn read(ptr: u64, len: usize) -> Result<Vec<u8>, i32> {
    if ptr == 0 {
        return Err(libc::EFAULT);
    }
    let mut out = vec![0u8; len];
    if len == 0 {
        return Ok(out);
    }
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: ptr as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` is our own buffer of `len` bytes; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == len as isize {
        return Ok(out);
    }
    if unavailable(crate::report::errno()) {
        // SAFETY: caller contract.
        unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, out.as_mut_ptr(), len) };
        return Ok(out);
    }
    Err(libc::EFAULT)
}

/// Copy `data` into the loader's memory at `ptr`, or EFAULT.
///
/// # Safety
/// `ptr` should be writable for `data.len()` bytes; if it is not and the
/// checked copy is unavailable, the process faults.
pub unsafe fn write(ptr: u64, data: &[u8]) -> Result<(), i32> {
    if ptr == 0 {
        return Err(libc::EFAULT);
    }
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let remote = libc::iovec { iov_base: ptr as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: `local` is our own buffer; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == data.len() as isize {
        return Ok(());
    }
    if unavailable(crate::report::errno()) {
        // SAFETY: caller contract.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr as *mut u8, data.len()) };
        return Ok(());
    }
    Err(libc::EFAULT)
}

/// A NUL-terminated string of at most `max` bytes (NUL excluded) from the
/// loader, read page by page so a string ending just before unmapped memory
/// reads fine: EFAULT for a bad pointer, ENAMETOOLONG past `max` (the
/// kernel's `strndup_user`).
///
/// # Safety
/// As [`read`].
pub unsafe fn read_cstr(ptr: u64, max: usize) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    let mut at = ptr;
    while out.len() <= max {
        let chunk = (4096 - (at % 4096) as usize).min(max + 1 - out.len());
        // SAFETY: forwarded; a bad pointer gives EFAULT.
        let bytes = unsafe { read(at, chunk)? };
        if let Some(end) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&bytes);
        at += chunk as u64;
    }
    Err(libc::ENAMETOOLONG)
}
