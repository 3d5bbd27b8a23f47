//! Memory the rewriter writes: pages for trampolines allocated within reach
//! of a `jmp rel32` from the probed code, and the probed text itself.
//!
//! Text is written through `/proc/self/mem` when the kernel allows it (no
//! protection change at all), otherwise by `mprotect`ing the page(s) to
//! read-write-execute for the duration of the write and back to their
//! original protection. Execute permission is never removed, so threads
//! running code on that page never fault; the first write makes the kernel
//! give the process a private copy of the page (copy-on-write), which other
//! threads switch to atomically through the page tables.
//!
//! `sync_all_cores` makes every thread of the process execute a
//! core-serializing instruction before it runs user code again, which is
//! what Intel's cross-modifying-code rule requires between the steps of the
//! breakpoint poke sequence (see `patch.rs`).

use crate::error::{Error, Result};
use crate::maps;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

pub(crate) const PAGE_SIZE: usize = 4096;
/// Trampolines are placed within this distance of the probed code, leaving
/// another GiB of reach for RIP-relative operands copied out of the prologue.
const REACH: usize = 1 << 30;
/// Lowest address ever tried (`vm.mmap_min_addr` is usually 64 KiB).
const LOWEST_ADDRESS: usize = 1 << 20;
/// End of the 47-bit user address space.
const HIGHEST_ADDRESS: usize = 0x7fff_ffff_f000;

/// Maps one read-write page within `REACH` of `target`.
pub(crate) fn alloc_page_near(target: usize) -> Result<usize> {
    let maps = maps::read_self_maps()?;
    let mut candidates: Vec<usize> = Vec::new();
    let mut previous_end = LOWEST_ADDRESS;
    for m in maps.iter().chain(std::iter::once(&maps::Mapping {
        start: HIGHEST_ADDRESS,
        end: HIGHEST_ADDRESS,
        readable: false,
        writable: false,
        executable: false,
        shared: false,
        offset: 0,
        dev: 0,
        inode: 0,
        path: Default::default(),
    })) {
        let (gap_start, gap_end) = (previous_end.max(LOWEST_ADDRESS), m.start);
        previous_end = previous_end.max(m.end);
        if gap_end < gap_start + PAGE_SIZE {
            continue;
        }
        // The page of this gap nearest to the target.
        let candidate = if target < gap_start { gap_start } else { gap_end - PAGE_SIZE };
        if candidate.abs_diff(target) < REACH {
            candidates.push(candidate);
        }
    }
    candidates.sort_by_key(|c| c.abs_diff(target));
    for candidate in candidates {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the
        // new anonymous page is owned by the caller.
        let page = unsafe {
            libc::mmap(
                candidate as *mut libc::c_void,
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if page != libc::MAP_FAILED && page as usize == candidate {
            return Ok(candidate);
        }
        if page != libc::MAP_FAILED {
            // An old kernel ignoring MAP_FIXED_NOREPLACE put it elsewhere.
            // SAFETY: unmapping the page just mapped, which nothing uses.
            unsafe { libc::munmap(page, PAGE_SIZE) };
        }
    }
    Err(Error::NoNearMemory(target))
}

/// Writes `code` at the start of a page from `alloc_page_near` and makes the
/// page read+execute (never writable again).
///
/// # Safety
/// `page` must come from `alloc_page_near` and not be executable yet.
pub(crate) unsafe fn seal_code_page(page: usize, code: &[u8]) -> Result<()> {
    assert!(code.len() <= PAGE_SIZE, "trampoline larger than a page");
    // SAFETY: the page is ours, mapped read-write, at least `code.len()` long.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len()) };
    // SAFETY: changing the protection of our own page.
    if unsafe { libc::mprotect(page as *mut libc::c_void, PAGE_SIZE, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
        return Err(Error::sys("mprotect(trampoline, PROT_READ|PROT_EXEC)"));
    }
    Ok(())
}

/// `/proc/self/mem` of *this* process. The path is resolved when opened,
/// so a descriptor inherited through `fork` names the parent: reopen when
/// the pid changed.
fn with_proc_self_mem<T>(f: impl FnOnce(&File) -> T) -> Option<T> {
    static FILE: Mutex<Option<(libc::pid_t, Option<File>)>> = Mutex::new(None);
    let pid = preload::raw::getpid();
    let mut cached = FILE.lock().unwrap_or_else(|e| e.into_inner());
    if cached.as_ref().is_none_or(|(opened_by, _)| *opened_by != pid) {
        *cached = Some((pid, File::options().read(true).write(true).open("/proc/self/mem").ok()));
    }
    cached.as_ref().and_then(|(_, file)| file.as_ref()).map(f)
}

/// Writes `bytes` into the code at `address` (any protection).
///
/// Callers are responsible for the ordering that makes this safe for
/// threads executing nearby (`patch.rs`).
pub(crate) fn write_text(address: usize, bytes: &[u8]) -> Result<()> {
    if with_proc_self_mem(|mem| mem.write_at(bytes, address as u64)).is_some_and(|r| r.is_ok_and(|n| n == bytes.len())) {
        return Ok(());
    }
    write_text_with_mprotect(address, bytes)
}

fn write_text_with_mprotect(address: usize, bytes: &[u8]) -> Result<()> {
    let mapping = maps::mapping_of(address)?.ok_or(Error::AddressNotExecutable(address))?;
    if address + bytes.len() > mapping.end {
        return Err(Error::Patch { address, reason: "the bytes cross the end of their mapping".into() });
    }
    let first_page = address & !(PAGE_SIZE - 1);
    let length = (address + bytes.len()).next_multiple_of(PAGE_SIZE) - first_page;
    let original = (if mapping.readable { libc::PROT_READ } else { 0 })
        | (if mapping.writable { libc::PROT_WRITE } else { 0 })
        | (if mapping.executable { libc::PROT_EXEC } else { 0 });
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: the range lies inside an existing mapping; adding permissions
    // never makes running threads fault.
    if unsafe { libc::mprotect(first_page as *mut libc::c_void, length, rwx) } != 0 {
        return Err(Error::Patch {
            address,
            reason: format!("mprotect to read-write-execute failed: {}", std::io::Error::last_os_error()),
        });
    }
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: the page is now writable; byte stores are single-copy
        // atomic, so a concurrent reader sees the old or the new byte.
        unsafe { std::ptr::write_volatile((address + i) as *mut u8, *b) };
    }
    // SAFETY: restores the protection the mapping had.
    if unsafe { libc::mprotect(first_page as *mut libc::c_void, length, original) } != 0 {
        return Err(Error::sys("mprotect(restore text protection)"));
    }
    Ok(())
}

/// Reads `len` bytes of code at `address`.
pub(crate) fn read_text(address: usize, len: usize) -> Result<Vec<u8>> {
    let mapping = maps::mapping_of(address)?.ok_or(Error::AddressNotExecutable(address))?;
    if !mapping.executable {
        return Err(Error::AddressNotExecutable(address));
    }
    let len = len.min(mapping.end - address);
    let mut out = vec![0u8; len];
    if mapping.readable {
        // SAFETY: [address, address+len) is inside a readable mapping.
        unsafe { std::ptr::copy_nonoverlapping(address as *const u8, out.as_mut_ptr(), len) };
        return Ok(out);
    }
    with_proc_self_mem(|mem| mem.read_exact_at(&mut out, address as u64))
        .ok_or(Error::Unsupported { feature: "probing execute-only code", reason: "/proc/self/mem is not accessible".into() })?
        .map_err(|source| Error::Io { path: "/proc/self/mem".into(), source })?;
    Ok(out)
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Which membarrier commands this kernel granted the process.
#[derive(Clone, Copy)]
pub(crate) struct Barriers {
    pub sync_core: bool,
    pub expedited: bool,
}

/// Registers (once per process: registration is per address space and a
/// `fork` child starts unregistered) and returns what the kernel granted.
pub(crate) fn barriers() -> Barriers {
    static REGISTERED: Mutex<Option<(libc::pid_t, Barriers)>> = Mutex::new(None);
    let pid = preload::raw::getpid();
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    match *registered {
        Some((registered_by, barriers)) if registered_by == pid => barriers,
        _ => {
            let barriers = Barriers {
                sync_core: membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE),
                expedited: membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED),
            };
            *registered = Some((pid, barriers));
            barriers
        }
    }
}

/// Every thread of the process executes a core-serializing instruction
/// before running user code again.
pub(crate) fn sync_all_cores() -> Result<()> {
    if barriers().sync_core && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) {
        return Ok(());
    }
    // Without membarrier: every other thread runs our signal handler, which
    // executes `cpuid` and returns through the kernel.
    crate::signals::rendezvous(None).map(|_| ())
}

/// A full memory barrier executed by every running thread of the process
/// (the writer side of the thread-state grace period). Returns false when
/// the kernel cannot do it, in which case readers fence themselves.
pub(crate) fn heavy_barrier() -> bool {
    barriers().expedited && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
}
