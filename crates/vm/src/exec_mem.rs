//! Executable memory for JIT-compiled code, W^X.
//!
//! This module owns the only place where the VM turns bytes into code. A
//! region is mapped read-write, the code is copied in, and the mapping is
//! flipped to read-execute with `mprotect` before anyone can obtain a pointer
//! into it. At no point is the region writable and executable at once. The
//! mapping is released when the [`ExecMem`] is dropped.

use std::io;
use std::ptr::NonNull;

/// A read-execute mapping holding a copy of some machine code.
#[derive(Debug)]
pub struct ExecMem {
    base: NonNull<u8>,
    /// Mapped length (whole pages).
    mapped_len: usize,
    /// Bytes of code actually copied in.
    code_len: usize,
}

// SAFETY: the mapping is immutable (read-execute) after construction and owned
// exclusively by this value; sharing pointers to immutable code between
// threads is sound.
unsafe impl Send for ExecMem {}
// SAFETY: see `Send`; no interior mutability.
unsafe impl Sync for ExecMem {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if sz <= 0 {
        4096
    } else {
        sz as usize
    }
}

impl ExecMem {
    /// Map a fresh region, copy `code` into it and make it read-execute.
    ///
    /// Unused bytes at the end of the last page are filled with `int3` so a
    /// stray jump past the code traps instead of running garbage.
    pub fn new(code: &[u8]) -> io::Result<ExecMem> {
        ExecMem::with_placement(code, None, |_, _| {})
    }

    /// Like [`ExecMem::new`], asking the kernel for an address near
    /// `near` (a hint: the kernel may place the code elsewhere), and letting
    /// `fixup` adjust the copied code for its final address (e.g. turn
    /// absolute calls into relative ones) while it is still writable and
    /// not yet executable.
    pub fn with_placement(
        code: &[u8],
        near: Option<usize>,
        fixup: impl FnOnce(&mut [u8], usize),
    ) -> io::Result<ExecMem> {
        if code.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no code to map",
            ));
        }
        let page = page_size();
        let mapped_len = code.len().div_ceil(page) * page;
        let hint = near.map_or(std::ptr::null_mut(), |addr| {
            (addr & !(page - 1)) as *mut libc::c_void
        });
        // MAP_POPULATE: one fault-in for the whole region instead of a page
        // fault per page while copying (the dominant cost of compiling a
        // small program under virtualization).
        // SAFETY: anonymous private mapping; the address is only a hint (no
        // MAP_FIXED), so nothing existing can be replaced; we check for
        // MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                hint,
                mapped_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr as *mut u8).expect("mmap returned null without MAP_FAILED");
        // From here on `mem` unmaps the region on every exit path.
        let mem = ExecMem {
            base,
            mapped_len,
            code_len: code.len(),
        };
        // SAFETY: the region is `mapped_len >= code.len()` bytes, freshly
        // mapped read-write and exclusively ours; `code` cannot overlap it.
        let writable = unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), base.as_ptr(), code.len());
            std::ptr::write_bytes(base.as_ptr().add(code.len()), 0xcc, mapped_len - code.len());
            std::slice::from_raw_parts_mut(base.as_ptr(), code.len())
        };
        fixup(writable, base.as_ptr() as usize);
        // SAFETY: flips our own mapping from RW to RX; `writable` is not
        // used after this point and no other write through `base` happens.
        let rc = unsafe { libc::mprotect(ptr, mapped_len, libc::PROT_READ | libc::PROT_EXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(mem)
    }

    /// Start of the code.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.base.as_ptr()
    }

    /// Number of code bytes (without the page padding).
    #[inline]
    pub fn len(&self) -> usize {
        self.code_len
    }

    /// Always false: empty code is rejected by [`ExecMem::new`].
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.code_len == 0
    }

    /// The code as bytes (readable: the mapping is read-execute).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the region is mapped readable for `code_len` bytes and lives
        // as long as `self`; nothing writes to it after construction.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.code_len) }
    }
}

impl Drop for ExecMem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region we mapped; no pointer into it may
        // outlive `self` (callers of `as_ptr` are bound by JitProgram's
        // lifetime rules).
        unsafe {
            libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.mapped_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_runs_code() {
        // mov eax, 42; ret
        let code = [0xb8, 42, 0, 0, 0, 0xc3];
        let mem = ExecMem::new(&code).unwrap();
        assert_eq!(mem.bytes(), &code);
        // SAFETY: the bytes above are a complete function with the C ABI.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(mem.as_ptr()) };
        assert_eq!(f(), 42);
    }

    #[test]
    fn mapping_is_not_writable() {
        let mem = ExecMem::new(&[0xc3]).unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let addr = mem.as_ptr() as usize;
        let line = maps
            .lines()
            .find(|l| {
                let range = l.split_whitespace().next().unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let lo = usize::from_str_radix(lo, 16).unwrap();
                let hi = usize::from_str_radix(hi, 16).unwrap();
                (lo..hi).contains(&addr)
            })
            .expect("mapping present");
        let perms = line.split_whitespace().nth(1).unwrap();
        assert!(perms.starts_with("r-x"), "permissions {perms}");
    }

    #[test]
    fn fixup_sees_the_final_address_before_protection() {
        // mov eax, imm32 (patched to the low bits of the address); ret
        let code = [0xb8, 0, 0, 0, 0, 0xc3];
        let mut seen = 0;
        let mem = ExecMem::with_placement(&code, None, |bytes, addr| {
            bytes[1..5].copy_from_slice(&(addr as u32).to_le_bytes());
            seen = addr;
        })
        .unwrap();
        assert_eq!(seen, mem.as_ptr() as usize);
        // SAFETY: a complete C-ABI function.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(mem.as_ptr()) };
        assert_eq!(f(), seen as u32);
    }

    #[test]
    fn rejects_empty_code() {
        assert!(ExecMem::new(&[]).is_err());
    }
}
