//! System calls made with the `syscall` instruction itself.
//!
//! The probe path and the patching code must call nothing a user can probe:
//! `uprobe:libc:gettid` would otherwise fire inside the code that decides
//! whether a probe may fire, and recurse until the stack overflows. libc's
//! wrappers (`gettid`, `getpid`, even `syscall`) are all probe-able, so the
//! few ids that code needs come from here. x86-64 only, as the JIT is.

use std::arch::asm;

/// # Safety
/// `number` must be a system call that takes no argument and has no effect
/// on memory this program relies on.
#[inline(always)]
unsafe fn syscall0(number: libc::c_long) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: the caller picks an argument-less system call; the kernel
    // clobbers rcx and r11 only, and touches no stack.
    unsafe {
        asm!("syscall", inlateout("rax") number => ret, out("rcx") _, out("r11") _, options(nostack, preserves_flags));
    }
    ret
}

/// The calling thread's kernel id (`gettid(2)`), without libc.
#[inline]
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid takes no argument and cannot fail.
    unsafe { syscall0(libc::SYS_gettid) as libc::pid_t }
}

/// The calling process's id (`getpid(2)`), without libc.
#[inline]
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid takes no argument and cannot fail.
    unsafe { syscall0(libc::SYS_getpid) as libc::pid_t }
}

/// # Safety
/// `number` must be a system call whose three integer arguments are
/// `a`, `b`, `c` and that has no effect on memory this program relies on.
#[inline(always)]
unsafe fn syscall3(number: libc::c_long, a: libc::c_long, b: libc::c_long, c: libc::c_long) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: as for `syscall0`, with the arguments in rdi, rsi, rdx.
    unsafe {
        asm!("syscall", inlateout("rax") number => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             out("rcx") _, out("r11") _, options(nostack, preserves_flags));
    }
    ret
}

/// Send `sig` to thread `tid` of process `tgid` (`tgkill(2)`), without
/// libc. Returns 0 or -errno.
#[inline]
pub fn tgkill(tgid: libc::pid_t, tid: libc::pid_t, sig: libc::c_int) -> libc::c_long {
    // SAFETY: tgkill takes three integers and touches no memory of ours.
    unsafe { syscall3(libc::SYS_tgkill, tgid as libc::c_long, tid as libc::c_long, sig as libc::c_long) }
}

/// Send `sig` to process `pid` (`kill(2)`), without libc. Returns 0 or -errno.
#[inline]
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> libc::c_long {
    // SAFETY: kill takes two integers and touches no memory of ours.
    unsafe { syscall3(libc::SYS_kill, pid as libc::c_long, sig as libc::c_long, 0) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_match_libc() {
        // SAFETY: trivial libc calls.
        assert_eq!(super::gettid(), unsafe { libc::gettid() });
        // SAFETY: as above.
        assert_eq!(super::getpid(), unsafe { libc::getpid() });
        let from_thread = std::thread::spawn(super::gettid).join().unwrap();
        assert_ne!(from_thread, super::gettid());
    }
}
