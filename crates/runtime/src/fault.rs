//! Fault-tolerant reads of arbitrary (possibly bad) addresses without a
//! system call: the kernel's "exception table" technique, in user space.
//!
//! Two hand-written copy routines (`fault_copy`, `fault_strcpy`) are the only
//! code allowed to touch an untrusted source pointer. A SIGSEGV/SIGBUS handler
//! checks whether the faulting instruction lies inside those routines; if so
//! it rewrites the saved instruction pointer to a fixup label that returns
//! `-EFAULT`, and the copy returns normally to its caller. Any other fault is
//! handed to whatever handler the application had installed before (or to
//! the default action), so the application's own fault handling is unchanged.
//!
//! The routines do not touch the stack and only read through `rsi`, so
//! resuming at the fixup label leaves no state behind.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use libc::{c_int, c_void, siginfo_t};
// libc's own `sigaction`, bypassing any interposer (the agent exports one
// that keeps our handler first; calling it from here would recurse).
use preload::next::real_sigaction;

std::arch::global_asm!(
    ".pushsection .text.userbpf_fault,\"ax\",@progbits",
    ".globl userbpf_fault_region_start",
    ".hidden userbpf_fault_region_start",
    ".globl userbpf_fault_copy",
    ".hidden userbpf_fault_copy",
    ".globl userbpf_fault_strcpy",
    ".hidden userbpf_fault_strcpy",
    ".globl userbpf_fault_region_end",
    ".hidden userbpf_fault_region_end",
    ".globl userbpf_fault_fixup",
    ".hidden userbpf_fault_fixup",
    ".p2align 4",
    "userbpf_fault_region_start:",
    // fault_copy(dst = rdi, src = rsi, len = rdx) -> 0
    "userbpf_fault_copy:",
    "    mov rcx, rdx",
    "    rep movsb",
    "    xor eax, eax",
    "    ret",
    // fault_strcpy(dst = rdi, src = rsi, size = rdx >= 1) -> bytes copied
    // including the terminating NUL; the result is always NUL-terminated.
    "userbpf_fault_strcpy:",
    "    lea r8, [rdx - 1]",
    "    xor eax, eax",
    "2:",
    "    cmp rax, r8",
    "    jae 3f",
    "    movzx ecx, byte ptr [rsi + rax]",
    "    mov byte ptr [rdi + rax], cl",
    "    inc rax",
    "    test cl, cl",
    "    jnz 2b",
    "    ret",
    "3:",
    "    mov byte ptr [rdi + rax], 0",
    "    inc rax",
    "    ret",
    "userbpf_fault_region_end:",
    // Resumption point after a fault inside the region.
    "userbpf_fault_fixup:",
    "    mov rax, -14",
    "    ret",
    ".popsection",
);

extern "C" {
    fn userbpf_fault_copy(dst: *mut u8, src: *const u8, len: usize) -> i64;
    fn userbpf_fault_strcpy(dst: *mut u8, src: *const u8, size: usize) -> i64;
    static userbpf_fault_region_start: u8;
    static userbpf_fault_region_end: u8;
    static userbpf_fault_fixup: u8;
}

/// Highest user-space address + 1 on x86-64 with 4-level paging (5-level
/// paging raises it, but a pointer above this is never a plain user pointer
/// a probe should read).
const USER_ADDRESS_LIMIT: u64 = 0x0000_8000_0000_0000;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Bumped by [`recheck_signal_masks`]: each thread re-reads its signal mask
/// (one system call) on its next read after a bump.
static MASK_EPOCH: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// (mask epoch, whether SIGSEGV and SIGBUS are deliverable here)
    static FAULTS_DELIVERABLE: Cell<(u64, bool)> = const { Cell::new((0, false)) };
}

/// Whether a fault on this thread would reach our handler. A thread that
/// blocks SIGSEGV/SIGBUS (worker threads created with every signal blocked
/// are common) would instead be killed by the kernel on the first bad
/// read, so such threads use the system-call fallback.
#[inline]
fn faults_deliverable_here() -> bool {
    let epoch = MASK_EPOCH.load(Ordering::Relaxed);
    FAULTS_DELIVERABLE.with(|cache| {
        let (cached_epoch, deliverable) = cache.get();
        if cached_epoch == epoch {
            return deliverable;
        }
        // SAFETY: querying the mask (no new mask) into a local.
        let deliverable = unsafe {
            let mut current: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current) == 0
                && libc::sigismember(&current, libc::SIGSEGV) == 0
                && libc::sigismember(&current, libc::SIGBUS) == 0
        };
        cache.set((epoch, deliverable));
        deliverable
    })
}

/// Make every thread re-check whether it blocks SIGSEGV/SIGBUS before its
/// next fast read (call now and then from a background thread: the agent's
/// watcher does on every tick, so a thread that changes its mask later is
/// noticed within one tick).
pub fn recheck_signal_masks() {
    MASK_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// The handlers that were installed before ours (index 0: SIGSEGV, 1: SIGBUS).
static PREVIOUS: Mutex<[Option<libc::sigaction>; 2]> = Mutex::new([None, None]);
/// Lock-free copy of `PREVIOUS` for the signal handler (which must not lock).
// SAFETY: an all-zero sigaction is SIG_DFL with no flags.
static mut PREVIOUS_FOR_HANDLER: [libc::sigaction; 2] = unsafe { std::mem::zeroed() };

/// Error installing the fault handler.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {signal} handler for fault-tolerant probe reads: {source}")]
pub struct InstallError {
    signal: &'static str,
    source: std::io::Error,
}

/// Install the SIGSEGV/SIGBUS handlers (idempotent); also resolves libc's
/// `sigaction` so the signal handler never has to. Until this has run,
/// the `read_*` functions fall back to `process_vm_readv`.
pub fn install() -> Result<(), InstallError> {
    let mut previous = PREVIOUS.lock().unwrap_or_else(|e| e.into_inner());
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    let _ = real_sigaction();
    for (slot, (signal, name)) in [(libc::SIGSEGV, "SIGSEGV"), (libc::SIGBUS, "SIGBUS")].into_iter().enumerate() {
        // SAFETY: plain sigaction(2) calls with properly initialised structs.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if real_sigaction()(signal, &action, &mut old) != 0 {
                return Err(InstallError { signal: name, source: std::io::Error::last_os_error() });
            }
            PREVIOUS_FOR_HANDLER[slot] = old;
            previous[slot] = Some(old);
        }
    }
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Record `action` as the application's handler for `signal`, to be chained
/// to for faults outside the copy routines, and return the one it replaces.
/// Used by an interposed `sigaction` so a later application handler does not
/// displace ours. Returns `None` for signals this module does not own.
pub fn replace_chained_handler(signal: c_int, action: Option<&libc::sigaction>) -> Option<libc::sigaction> {
    let slot = match signal {
        libc::SIGSEGV => 0,
        libc::SIGBUS => 1,
        _ => return None,
    };
    if !INSTALLED.load(Ordering::Acquire) {
        return None;
    }
    let mut previous = PREVIOUS.lock().unwrap_or_else(|e| e.into_inner());
    let old = previous[slot].unwrap_or_else(|| {
        // SAFETY: an all-zero sigaction is SIG_DFL with no flags.
        unsafe { std::mem::zeroed() }
    });
    if let Some(new) = action {
        previous[slot] = Some(*new);
        // SAFETY: the handler only reads this slot; a torn read during the
        // update could at worst chain to the old handler for one fault,
        // which is what an application racing its own sigaction gets anyway.
        unsafe { std::ptr::addr_of_mut!(PREVIOUS_FOR_HANDLER[slot]).write_volatile(*new) };
    }
    Some(old)
}

/// Whether the fault handler is active (reads then cost no system call).
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

extern "C" fn on_fault(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel hands us a valid ucontext for SA_SIGINFO handlers.
    unsafe {
        let uc = context as *mut libc::ucontext_t;
        let rip = &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize];
        let start = std::ptr::addr_of!(userbpf_fault_region_start) as i64;
        let end = std::ptr::addr_of!(userbpf_fault_region_end) as i64;
        if *rip >= start && *rip < end {
            *rip = std::ptr::addr_of!(userbpf_fault_fixup) as i64;
            return;
        }
        let slot = if signal == libc::SIGBUS { 1 } else { 0 };
        let previous = std::ptr::addr_of!(PREVIOUS_FOR_HANDLER[slot]).read_volatile();
        chain(signal, info, context, &previous);
    }
}

/// Hand a fault that is not ours to the application's previous disposition.
///
/// # Safety
/// Called only from the signal handler with the kernel's arguments.
unsafe fn chain(signal: c_int, info: *mut siginfo_t, context: *mut c_void, previous: &libc::sigaction) {
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // A synchronous fault cannot be ignored: restore the default action
        // and return; the faulting instruction runs again and the kernel
        // delivers the signal with its default effect (core dump).
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        real_sigaction()(signal, &dfl, std::ptr::null_mut());
        return;
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = std::mem::transmute(handler);
        f(signal, info, context);
    } else {
        let f: extern "C" fn(c_int) = std::mem::transmute(handler);
        f(signal);
    }
}

fn range_is_user(src: u64, len: u64) -> bool {
    match src.checked_add(len) {
        Some(end) => src != 0 && end <= USER_ADDRESS_LIMIT,
        None => false,
    }
}

/// Copy `dst.len()` bytes from the untrusted address `src`. On failure the
/// destination is zeroed and `-EFAULT` returned, as the kernel's
/// `bpf_probe_read_user` does.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
pub unsafe fn read_user(dst: *mut u8, src: u64, len: usize) -> i64 {
    if len == 0 {
        return 0;
    }
    let ret = if !range_is_user(src, len as u64) {
        -(libc::EFAULT as i64)
    } else if INSTALLED.load(Ordering::Relaxed) && faults_deliverable_here() {
        userbpf_fault_copy(dst, src as *const u8, len)
    } else {
        read_with_syscall(dst, src, len)
    };
    if ret < 0 {
        std::ptr::write_bytes(dst, 0, len);
    }
    ret
}

/// Copy a NUL-terminated string of at most `size` bytes (terminator
/// included) from the untrusted address `src`. Returns the length copied
/// including the NUL, or `-EFAULT` with `dst` zeroed, as the kernel's
/// `bpf_probe_read_user_str` does.
///
/// # Safety
/// `dst` must be valid for writes of `size` bytes.
pub unsafe fn read_user_str(dst: *mut u8, src: u64, size: usize) -> i64 {
    if size == 0 {
        return 0;
    }
    let ret = if src == 0 || src >= USER_ADDRESS_LIMIT {
        -(libc::EFAULT as i64)
    } else if INSTALLED.load(Ordering::Relaxed) && faults_deliverable_here() {
        userbpf_fault_strcpy(dst, src as *const u8, size)
    } else {
        read_str_with_syscall(dst, src, size)
    };
    if ret < 0 {
        std::ptr::write_bytes(dst, 0, size);
    }
    ret
}

/// Fallback when no handler is installed: one `process_vm_readv` per read.
unsafe fn read_with_syscall(dst: *mut u8, src: u64, len: usize) -> i64 {
    let local = libc::iovec { iov_base: dst as *mut c_void, iov_len: len };
    let remote = libc::iovec { iov_base: src as *mut c_void, iov_len: len };
    let n = libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0);
    if n == len as isize {
        0
    } else {
        -(libc::EFAULT as i64)
    }
}

/// Fallback string read: byte-wise `process_vm_readv` (slow, rare path).
unsafe fn read_str_with_syscall(dst: *mut u8, src: u64, size: usize) -> i64 {
    for i in 0..size - 1 {
        let mut byte = 0u8;
        if read_with_syscall(&mut byte, src + i as u64, 1) != 0 {
            return -(libc::EFAULT as i64);
        }
        *dst.add(i) = byte;
        if byte == 0 {
            return i as i64 + 1;
        }
    }
    *dst.add(size - 1) = 0;
    size as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page no access is allowed to (PROT_NONE), leaked for the test.
    fn inaccessible_page() -> u64 {
        // SAFETY: a fresh anonymous mapping; nothing else uses it.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            assert_ne!(p, libc::MAP_FAILED);
            p as u64
        }
    }

    #[test]
    fn copies_good_memory_and_faults_cleanly_on_bad() {
        install().unwrap();
        let src = *b"hello, world";
        let mut dst = [0xaau8; 12];
        // SAFETY: dst is 12 writable bytes.
        assert_eq!(unsafe { read_user(dst.as_mut_ptr(), src.as_ptr() as u64, 12) }, 0);
        assert_eq!(&dst, &src);

        let bad = inaccessible_page();
        let mut dst = [0xaau8; 16];
        // SAFETY: dst is 16 writable bytes; the source is a PROT_NONE page.
        assert_eq!(unsafe { read_user(dst.as_mut_ptr(), bad, 16) }, -14);
        assert_eq!(dst, [0u8; 16]);
        // SAFETY: as above; NULL and kernel addresses are refused up front.
        assert_eq!(unsafe { read_user(dst.as_mut_ptr(), 0, 16) }, -14);
        assert_eq!(unsafe { read_user(dst.as_mut_ptr(), 0xffff_ffff_8100_0000, 16) }, -14);
    }

    #[test]
    fn partial_read_across_a_bad_page_fails_whole() {
        install().unwrap();
        // SAFETY: two fresh pages, the second made inaccessible.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as *mut u8;
            assert_ne!(p as *mut c_void, libc::MAP_FAILED);
            libc::mprotect(p.add(4096) as *mut c_void, 4096, libc::PROT_NONE);
            let mut dst = [0xaau8; 32];
            assert_eq!(read_user(dst.as_mut_ptr(), p.add(4096 - 16) as u64, 32), -14);
            assert_eq!(dst, [0u8; 32]);
            // A string ending before the bad page reads fine.
            std::ptr::copy_nonoverlapping(c"abc".as_ptr() as *const u8, p.add(4096 - 4), 4);
            assert_eq!(read_user_str(dst.as_mut_ptr(), p.add(4096 - 4) as u64, 32), 4);
            assert_eq!(&dst[..4], b"abc\0");
            // One running into it does not.
            std::ptr::copy_nonoverlapping(b"abcd".as_ptr(), p.add(4096 - 4), 4);
            assert_eq!(read_user_str(dst.as_mut_ptr(), p.add(4096 - 4) as u64, 32), -14);
            libc::munmap(p as *mut c_void, 8192);
        }
    }

    #[test]
    fn string_reads_truncate_like_the_kernel() {
        install().unwrap();
        let src = b"abcdef\0";
        let mut dst = [0xffu8; 4];
        // SAFETY: dst is 4 writable bytes.
        assert_eq!(unsafe { read_user_str(dst.as_mut_ptr(), src.as_ptr() as u64, 4) }, 4);
        assert_eq!(&dst, b"abc\0");
        let mut dst = [0xffu8; 16];
        // SAFETY: dst is 16 writable bytes.
        assert_eq!(unsafe { read_user_str(dst.as_mut_ptr(), src.as_ptr() as u64, 16) }, 7);
        assert_eq!(&dst[..7], b"abcdef\0");
    }

    #[test]
    fn faults_outside_the_copy_routines_reach_the_application_handler() {
        // A child process installs its own SIGSEGV handler, then ours on top
        // (as the agent does when preloaded into an app that already has
        // one), then faults in ordinary code: the app's handler must run.
        // SAFETY: fork in a test; the child only calls async-signal-safe
        // functions and _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                extern "C" fn app_handler(_: c_int) {
                    // SAFETY: _exit is async-signal-safe.
                    unsafe { libc::_exit(42) };
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = app_handler as *const () as usize;
                libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
                if install().is_err() {
                    libc::_exit(1);
                }
                let mut dst = [0u8; 8];
                if read_user(dst.as_mut_ptr(), inaccessible_page(), 8) != -14 {
                    libc::_exit(2);
                }
                std::ptr::read_volatile(inaccessible_page() as *const u8);
                libc::_exit(3);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
            assert_eq!(libc::WEXITSTATUS(status), 42);
        }
    }

    #[test]
    fn threads_blocking_sigsegv_fall_back_instead_of_dying() {
        install().unwrap();
        // In a child: if the fast path were taken with SIGSEGV blocked, the
        // kernel would kill the process.
        // SAFETY: the child blocks signals, reads, and _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                recheck_signal_masks();
                let mut dst = [0xaau8; 8];
                let bad = read_user(dst.as_mut_ptr(), inaccessible_page(), 8);
                let good = read_user(dst.as_mut_ptr(), b"12345678".as_ptr() as u64, 8);
                let ok = bad == -14 && good == 0 && &dst == b"12345678";
                libc::_exit(if ok { 0 } else { 1 });
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status), "child killed: status {status:#x}");
            assert_eq!(libc::WEXITSTATUS(status), 0);
        }
    }

    #[test]
    fn syscall_fallback_agrees() {
        let src = *b"xyz\0";
        let mut dst = [0u8; 4];
        // SAFETY: dst is 4 writable bytes.
        unsafe {
            assert_eq!(read_with_syscall(dst.as_mut_ptr(), src.as_ptr() as u64, 4), 0);
            assert_eq!(read_with_syscall(dst.as_mut_ptr(), inaccessible_page(), 4), -14);
            assert_eq!(read_str_with_syscall(dst.as_mut_ptr(), src.as_ptr() as u64, 4), 4);
        }
        assert_eq!(&dst, b"xyz\0");
    }
}
