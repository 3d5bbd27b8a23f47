//! Thin, checked wrappers over the `ptrace` requests `attach`/`detach` use,
//! waiting for a tracee's stop with a deadline, and reading/writing its memory.
//!
//! Waiting with a deadline: a tracer gets `SIGCHLD` whenever a tracee stops,
//! so [`block_signals_for_injection`] blocks it once (before any thread exists) and
//! [`wait_stop`] sleeps in `sigtimedwait` between non-blocking `waitpid`s.

use std::io;
use std::time::Instant;

/// How a traced thread stopped (or ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A `PTRACE_EVENT_STOP`: the stop asked for by `PTRACE_INTERRUPT`, or a group stop.
    Interrupt { signal: i32 },
    /// A signal is about to be delivered to the thread (signal-delivery-stop).
    Signal(i32),
    /// Another ptrace event (not requested by us; reported for completeness).
    OtherEvent { event: i32, signal: i32 },
    /// The process exited with this status.
    Exited(i32),
    /// The process was killed by this signal.
    Killed(i32),
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn request(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every request issued through here passes either plain integers or
    // pointers to live buffers of the size the request expects (see callers).
    check(unsafe { libc::ptrace(req, tid, addr as *mut libc::c_void, data as *mut libc::c_void) })
}

/// Becomes the tracer of thread `tid` without stopping it (`PTRACE_SEIZE`).
pub fn seize(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_SEIZE, tid, 0, 0).map(drop)
}

/// Asks a seized thread to stop (`PTRACE_INTERRUPT`); wait with [`wait_stop`].
pub fn interrupt(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// Resumes a stopped thread, delivering `signal` (0 for none).
pub fn cont(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_CONT, tid, 0, signal as usize).map(drop)
}

/// Stops tracing a stopped thread, which resumes, receiving `signal` (0 for none).
pub fn detach(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_DETACH, tid, 0, signal as usize).map(drop)
}

/// The general registers of a stopped thread.
pub fn get_regs(tid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    request(libc::PTRACE_GETREGS, tid, 0, &mut regs as *mut _ as usize)?;
    Ok(regs)
}

/// Sets the general registers of a stopped thread.
pub fn set_regs(tid: i32, regs: &libc::user_regs_struct) -> io::Result<()> {
    request(libc::PTRACE_SETREGS, tid, 0, regs as *const _ as usize).map(drop)
}

const NT_PRFPREG: usize = 2;
const NT_X86_XSTATE: usize = 0x202;

/// The floating-point and vector state of a stopped thread (XSAVE area when
/// the CPU has it, the legacy FXSAVE area otherwise), as opaque bytes that
/// [`set_fp_state`] puts back.
pub struct FpState {
    note_type: usize,
    bytes: Vec<u8>,
}

/// Saves the FP/vector state of a stopped thread.
pub fn get_fp_state(tid: i32) -> io::Result<FpState> {
    for note_type in [NT_X86_XSTATE, NT_PRFPREG] {
        let mut bytes = vec![0u8; 64 * 1024];
        let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
        match request(libc::PTRACE_GETREGSET, tid, note_type, &mut iov as *mut _ as usize) {
            Ok(_) => {
                bytes.truncate(iov.iov_len);
                return Ok(FpState { note_type, bytes });
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENODEV) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::Unsupported, "no readable FP register set"))
}

/// Restores FP/vector state saved by [`get_fp_state`].
pub fn set_fp_state(tid: i32, state: &FpState) -> io::Result<()> {
    let mut bytes = state.bytes.clone();
    let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
    request(libc::PTRACE_SETREGSET, tid, state.note_type, &mut iov as *mut _ as usize).map(drop)
}

/// The signal information of a thread in signal-delivery-stop: `(signo, code, fault address)`.
pub fn get_siginfo(tid: i32) -> io::Result<(i32, i32, u64)> {
    // SAFETY: siginfo_t is plain data; all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    request(libc::PTRACE_GETSIGINFO, tid, 0, &mut info as *mut _ as usize)?;
    // SAFETY: si_addr reads the union member used by SIGSEGV/SIGBUS/SIGILL/SIGTRAP; for other
    // signals the value is meaningless but still initialised memory.
    let addr = unsafe { info.si_addr() } as u64;
    Ok((info.si_signo, info.si_code, addr))
}

/// Signals that would end userbpf in the middle of an injected call, leaving
/// the target's thread to return to address 0 with no tracer to catch it.
/// They are held while a thread is borrowed and act once it is given back.
const HELD_SIGNALS: [i32; 5] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE];

/// Blocks SIGCHLD in the calling thread (and so in threads it creates later)
/// and restores its default disposition, so that tracee stops queue a SIGCHLD
/// that [`wait_stop`] can wait for; also holds the terminating signals of
/// `HELD_SIGNALS` until [`release_held_signals`]. Call before any other thread exists.
pub fn block_signals_for_injection() -> io::Result<()> {
    // SAFETY: plain libc signal-mask calls on a locally owned sigset_t.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for signal in HELD_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Unblocks the terminating signals held by [`block_signals_for_injection`]
/// (a pending one then takes effect).
pub fn release_held_signals() {
    // SAFETY: plain libc signal-mask calls on a locally owned sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in HELD_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until traced thread `tid` stops or ends, or `deadline` passes (then `Ok(None)`).
pub fn wait_stop(tid: i32, deadline: Instant) -> io::Result<Option<Stop>> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the status integer we own.
        let ret = unsafe { libc::waitpid(tid, &mut status, libc::WNOHANG | libc::__WALL) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if ret == tid {
            return Ok(Some(decode_status(status)));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let left = deadline - now;
        let timeout = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: local sigset and timespec; sigtimedwait only reads them and consumes a
        // pending SIGCHLD (blocked by block_signals_for_injection, so nothing else would handle it).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout);
        }
    }
}

fn decode_status(status: i32) -> Stop {
    if libc::WIFEXITED(status) {
        Stop::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Stop::Killed(libc::WTERMSIG(status))
    } else {
        let signal = libc::WSTOPSIG(status);
        match status >> 16 {
            0 => Stop::Signal(signal),
            libc::PTRACE_EVENT_STOP => Stop::Interrupt { signal },
            event => Stop::OtherEvent { event, signal },
        }
    }
}

/// Writes `bytes` at `addr` in process `pid` (a stopped tracee), through
/// `/proc/PID/mem` so that it works whatever the page protections.
pub fn write_memory(pid: i32, addr: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::OpenOptions::new().write(true).open(crate::procfs::live_dir(pid).join("mem"))?;
    mem.write_all_at(bytes, addr)
}

/// Reads `len` bytes at `addr` in process `pid`.
pub fn read_memory(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(crate::procfs::live_dir(pid).join("mem"))?;
    let mut bytes = vec![0u8; len];
    mem.read_exact_at(&mut bytes, addr)?;
    Ok(bytes)
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr` in process `pid`.
pub fn read_c_string(pid: i32, addr: u64, max: usize) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(crate::procfs::live_dir(pid).join("mem"))?;
    let mut bytes = vec![0u8; max];
    // A short read is fine: the string may end near the end of its mapping.
    let n = mem.read_at(&mut bytes, addr)?;
    bytes.truncate(n);
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
