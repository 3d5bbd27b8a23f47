//! Calling a function inside another, already running process, by ptrace:
//! the engine behind `userbpf attach` (call `dlopen`) and `userbpf detach`
//! (call the agent's exported detach function).
//!
//! One thread of the target is borrowed; the others keep running.
//! 1. Pick the thread least likely to hold a libc lock (blocked in an
//!    ordinary system call, main thread first), `PTRACE_SEIZE` it and
//!    `PTRACE_INTERRUPT` it. If it stopped at an unsafe point (executing inside
//!    libc, the dynamic loader or the agent, or in a memory-allocation system
//!    call that malloc makes with its arena lock held), let it run 1 ms and try again.
//! 2. Save its general registers, its FP/vector state (XSAVE area) and the
//!    stack bytes we are about to use (all below the 128-byte red zone).
//! 3. Write the call's data (a path) and a return address of 0 on its stack,
//!    point `rip` at the function, set `orig_rax = -1` (so the kernel does not
//!    apply system-call restart to the injected registers), resume.
//! 4. The function returns to address 0: the tracer sees the SIGSEGV
//!    signal-delivery-stop with `rip == 0`, reads `rax`, and suppresses the signal.
//!    Signals the app receives meanwhile are delivered to it as usual.
//! 5. Restore memory, FP state and registers (a thread stopped inside a
//!    restartable system call gets it restarted by the kernel exactly as
//!    after any signal), and `PTRACE_DETACH`, re-delivering any signal that
//!    was about to be delivered when we stopped it.
//!
//! If anything fails after the thread stopped, [`StoppedThread`]'s `Drop`
//! restores the saved state and detaches, so the target never stays stopped.

use crate::elfsym;
use crate::error::{exit, os_error_text, CliError, CliResult};
use crate::procfs::{self, Mapping, ThreadActivity};
use crate::ptrace::{self, FpState, Stop};
use std::time::{Duration, Instant};

/// Bytes below `rsp` that the System V ABI lets a leaf function use without moving `rsp`.
const RED_ZONE: u64 = 128;
/// Extra room left between the call's data and its frame.
const FRAME_SLACK: u64 = 256;
/// How many times to look for a safe point on one thread before giving up on it.
const SAFE_POINT_ATTEMPTS: u32 = 20;
/// How many threads to try.
const THREADS_TO_TRY: usize = 3;

/// x86-64 Linux system calls during which the thread may hold a libc lock that
/// `dlopen` also takes (malloc calls these with its arena lock held).
const ALLOCATION_SYSCALLS: [i64; 6] = [
    9,  // mmap
    10, // mprotect
    11, // munmap
    12, // brk
    25, // mremap
    28, // madvise
];

/// System calls that return EINTR to the application (rather than being
/// restarted) when the thread is stopped and resumed, see signal(7). Threads
/// blocked in these are used only when no other thread is available.
const EINTR_ON_STOP_SYSCALLS: [i64; 6] = [
    232, // epoll_wait
    281, // epoll_pwait
    441, // epoll_pwait2
    65,  // semop
    220, // semtimedop
    128, // rt_sigtimedwait
];

/// What happened to a thread we borrowed, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PauseReport {
    /// The thread that ran the call.
    pub tid: i32,
    /// Total time the thread was stopped, all attempts included.
    pub paused: Duration,
    /// Of which: running the injected call(s).
    pub call_time: Duration,
    /// How many stops it took to reach a safe point.
    pub attempts: u32,
}

/// A thread of the target, stopped by us at a safe point, with its state saved.
pub struct StoppedThread {
    pid: i32,
    tid: i32,
    regs: libc::user_regs_struct,
    fp_state: FpState,
    /// Signal that was about to be delivered when the thread stopped; re-delivered on detach.
    pending_signal: i32,
    /// Original bytes of the stack area the calls used: (lowest address, bytes).
    stack_backup: Option<(u64, Vec<u8>)>,
    /// When the last (successful) `PTRACE_INTERRUPT` was sent.
    interrupted_at: Instant,
    paused_before: Duration,
    call_time: Duration,
    attempts: u32,
    released: bool,
}

/// Code ranges where stopping a thread is not safe (it may hold a lock the call needs).
pub struct UnsafeCode {
    ranges: Vec<(u64, u64, String)>,
}

impl UnsafeCode {
    /// libc, the dynamic loader, the userbpf agent, and anonymous executable
    /// memory (JIT code and trampolines) of the process.
    pub fn of_process(maps: &[Mapping]) -> Self {
        let ranges = maps
            .iter()
            .filter(|m| m.is_executable())
            .filter_map(|m| {
                let what = match m.file_name() {
                    Some(name) if elfsym::is_libc(name) => "libc",
                    Some(name) if elfsym::is_dynamic_loader(name) => "the dynamic loader",
                    Some("libagent.so") => "the userbpf agent",
                    Some(_) => return None,
                    None if m.path.is_empty() => "generated code",
                    None => return None,
                };
                Some((m.start, m.end, what.to_string()))
            })
            .collect();
        UnsafeCode { ranges }
    }

    fn containing(&self, addr: u64) -> Option<&str> {
        self.ranges.iter().find(|(s, e, _)| *s <= addr && addr < *e).map(|(_, _, w)| w.as_str())
    }
}

/// Why a stop point is not safe, or None if it is.
fn unsafe_reason(regs: &libc::user_regs_struct, code: &UnsafeCode) -> Option<String> {
    let syscall = regs.orig_rax as i64;
    if syscall >= 0 {
        return ALLOCATION_SYSCALLS
            .contains(&syscall)
            .then(|| format!("in memory-allocation system call {syscall}"));
    }
    code.containing(regs.rip).map(|what| format!("executing inside {what}"))
}

/// Orders threads by how safe they are to borrow: blocked in an ordinary system
/// call first, then running, then the rest; the main thread first among equals.
/// Threads that have exited (a main thread that called `pthread_exit` stays
/// listed as a zombie while the others run) cannot run anything and are left out.
fn rank_threads(pid: i32, tids: &[i32]) -> Vec<i32> {
    let mut ranked: Vec<(u8, i32)> = tids
        .iter()
        .filter(|&&tid| !matches!(procfs::thread_state(pid, tid), Some('Z' | 'X') | None))
        .map(|&tid| {
            let rank = match procfs::thread_activity(pid, tid) {
                Some(ThreadActivity::InSyscall { nr, .. }) if ALLOCATION_SYSCALLS.contains(&nr) => 3,
                Some(ThreadActivity::InSyscall { nr, .. }) if EINTR_ON_STOP_SYSCALLS.contains(&nr) => 2,
                Some(ThreadActivity::InSyscall { .. }) => 0,
                Some(ThreadActivity::Running) | Some(ThreadActivity::BlockedOutsideSyscall) => 1,
                None => 2,
            };
            (rank, tid)
        })
        .collect();
    ranked.sort_by_key(|&(rank, tid)| (rank, tid != pid));
    ranked.into_iter().map(|(_, tid)| tid).collect()
}

/// Checks that `pid` can be traced by us, turning each known obstacle into a
/// clear error with the fix.
pub fn check_traceable(pid: i32) -> CliResult<()> {
    if !procfs::process_exists(pid) {
        return Err(CliError::with_code(exit::NOT_FOUND, format!("no process with pid {pid}"))
            .hint("check the pid with `ps -e`; in a container, use the pid as this shell's pid namespace sees it"));
    }
    if pid == std::process::id() as i32 {
        return Err(CliError::new("refusing to attach to userbpf itself"));
    }
    let name = procfs::command_name(pid);
    // Another user's process: the kernel would refuse ptrace and every
    // /proc read behind it; say so before any of that (root may).
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let owner = procfs::status_field(pid, "Uid").ok().flatten().and_then(|v| v.split_whitespace().nth(1)?.parse::<u32>().ok());
    if let Some(owner) = owner.filter(|&o| euid != 0 && o != euid) {
        return Err(CliError::with_code(
            exit::ENVIRONMENT,
            format!("process {pid} ({name}) belongs to uid {owner}, and you are uid {euid}: only its owner (or root) may attach to it"),
        )
        .hint(format!("run userbpf as uid {owner}, or start the app with `userbpf run` as that user")));
    }
    let state = procfs::status_field(pid, "State").ok().flatten().unwrap_or_default();
    if state.starts_with('T') || state.starts_with('t') {
        return Err(CliError::new(format!("process {pid} ({name}) is stopped ({state})"))
            .hint(format!("resume it first (`kill -CONT {pid}`), then attach")));
    }
    let live_threads = || {
        procfs::thread_ids(pid)
            .unwrap_or_default()
            .into_iter()
            .any(|tid| !matches!(procfs::thread_state(pid, tid), Some('Z' | 'X') | None))
    };
    if (state.starts_with('Z') || state.starts_with('X')) && !live_threads() {
        return Err(CliError::with_code(exit::NOT_FOUND, format!("process {pid} ({name}) has exited")));
    }
    let has_memory = procfs::status_field(pid, "VmSize").ok().flatten().is_some();
    if !has_memory && live_threads() && procfs::thread_state(pid, pid).is_some_and(|s| s != 'Z') {
        return Err(CliError::new(format!("process {pid} ({name}) is a kernel thread; only user-space programs can be traced")));
    }
    if let Some(tracer) = procfs::status_field(pid, "TracerPid").ok().flatten() {
        if tracer != "0" {
            let tracer_pid: i32 = tracer.parse().unwrap_or(0);
            return Err(CliError::with_code(
                exit::ENVIRONMENT,
                format!(
                    "process {pid} ({name}) is already traced by pid {tracer} ({})",
                    procfs::command_name(tracer_pid)
                ),
            )
            .hint("a process can have one tracer at a time: detach the debugger or strace first"));
        }
    }
    let elf_class = std::fs::read(procfs::live_dir(pid).join("exe")).ok().and_then(|b| b.get(4).copied());
    if elf_class == Some(1) {
        return Err(CliError::new(format!("process {pid} ({name}) is a 32-bit program; userbpf supports x86-64 only")));
    }
    Ok(())
}

/// Explains a failed `PTRACE_SEIZE`.
fn seize_error(pid: i32, err: std::io::Error) -> CliError {
    let name = procfs::command_name(pid);
    match err.raw_os_error() {
        Some(libc::ESRCH) => CliError::with_code(exit::NOT_FOUND, format!("process {pid} ({name}) has exited")),
        Some(libc::EPERM) => {
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            let owner = procfs::status_field(pid, "Uid")
                .ok()
                .flatten()
                .and_then(|uids| uids.split_whitespace().nth(1).and_then(|u| u.parse::<u32>().ok()));
            let base = format!("the kernel does not let userbpf trace process {pid} ({name})");
            if euid != 0 && owner.is_some_and(|o| o != euid) {
                CliError::with_code(exit::ENVIRONMENT, format!("{base}: it belongs to uid {}", owner.unwrap_or(0)))
                    .hint("attach as the user that runs it (or as root)")
            } else if procfs::yama_ptrace_scope().is_some_and(|s| s >= 3 || (s >= 1 && euid != 0)) {
                let scope = procfs::yama_ptrace_scope().unwrap_or(1);
                let hint = match scope {
                    1 => "Yama ptrace_scope 1 lets only a parent trace its children. As root: \
                          `echo 0 > /proc/sys/kernel/yama/ptrace_scope`, or start the app with `userbpf run`",
                    2 => "Yama ptrace_scope 2 lets only root (CAP_SYS_PTRACE) trace: attach as root, \
                          or start the app with `userbpf run`",
                    _ => "Yama ptrace_scope 3 forbids tracing until reboot: start the app with `userbpf run`",
                };
                CliError::with_code(exit::ENVIRONMENT, format!("{base} (Yama ptrace_scope = {scope})")).hint(hint)
            } else {
                CliError::with_code(exit::ENVIRONMENT, format!("{base} (permission denied)")).hint(
                    "the process may be setuid/setgid, have made itself non-dumpable (PR_SET_DUMPABLE 0), \
                     or run in another user namespace; start it with `userbpf run` instead",
                )
            }
        }
        _ => CliError::new(format!("cannot trace process {pid} ({name}): {}", os_error_text(&err))),
    }
}

impl StoppedThread {
    /// Stops one thread of `pid` at a safe point and saves its state.
    pub fn stop(pid: i32, timeout: Duration) -> CliResult<StoppedThread> {
        check_traceable(pid)?;
        ptrace::block_signals_for_injection().map_err(|e| CliError::new(format!("cannot block signals: {e}")))?;
        let tids = procfs::thread_ids(pid)
            .map_err(|e| CliError::new(format!("cannot list threads of process {pid}: {}", os_error_text(&e))))?;
        let maps = procfs::read_maps(pid)
            .map_err(|e| CliError::new(format!("cannot read /proc/{pid}/maps: {}", os_error_text(&e))))?;
        let code = UnsafeCode::of_process(&maps);
        let mut last_reason = String::from("it has no live thread");
        for tid in rank_threads(pid, &tids).into_iter().take(THREADS_TO_TRY) {
            match Self::stop_thread(pid, tid, &code, timeout)? {
                Ok(stopped) => return Ok(stopped),
                Err(reason) => last_reason = reason,
            }
        }
        Err(CliError::new(format!("could not stop process {pid} at a safe point: {last_reason}"))
            .hint("the app was busy inside libc on every try; try again in a moment"))
    }

    /// Seizes `tid` and tries to stop it at a safe point. The outer error is
    /// fatal; the inner one says why this thread could not be used.
    fn stop_thread(pid: i32, tid: i32, code: &UnsafeCode, timeout: Duration) -> CliResult<Result<StoppedThread, String>> {
        match ptrace::seize(tid) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) && tid != pid => {
                return Ok(Err(format!("thread {tid} exited")));
            }
            Err(e) => return Err(seize_error(pid, e)),
        }
        let mut paused = Duration::ZERO;
        let mut pending_signal = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The pause is counted from here: an upper bound of the thread's stop.
            let interrupted_at = Instant::now();
            if let Err(e) = ptrace::interrupt(tid) {
                let _ = ptrace::detach(tid, 0);
                return Err(CliError::new(format!("cannot interrupt thread {tid}: {}", os_error_text(&e))));
            }
            wait_for_interrupt(tid, interrupted_at + timeout, &mut pending_signal)?;
            let regs = match ptrace::get_regs(tid) {
                Ok(regs) => regs,
                Err(e) => {
                    let _ = ptrace::detach(tid, pending_signal);
                    return Err(CliError::new(format!("cannot read registers of thread {tid}: {}", os_error_text(&e))));
                }
            };
            if regs.cs != 0x33 {
                let _ = ptrace::detach(tid, pending_signal);
                return Err(CliError::new(format!("thread {tid} of process {pid} runs 32-bit code; x86-64 only")));
            }
            match unsafe_reason(&regs, code) {
                None => {
                    let fp_state = match ptrace::get_fp_state(tid) {
                        Ok(state) => state,
                        Err(e) => {
                            let _ = ptrace::detach(tid, pending_signal);
                            return Err(CliError::new(format!("cannot save FP registers of thread {tid}: {e}")));
                        }
                    };
                    return Ok(Ok(StoppedThread {
                        pid,
                        tid,
                        regs,
                        fp_state,
                        pending_signal,
                        stack_backup: None,
                        interrupted_at,
                        paused_before: paused,
                        call_time: Duration::ZERO,
                        attempts: attempt,
                        released: false,
                    }));
                }
                Some(reason) => {
                    // Not here: let it run a little and stop it again.
                    if attempt == SAFE_POINT_ATTEMPTS {
                        let _ = ptrace::detach(tid, pending_signal);
                        return Ok(Err(format!("thread {tid} was {reason}")));
                    }
                    let resume = ptrace::cont(tid, pending_signal);
                    pending_signal = 0;
                    paused += interrupted_at.elapsed();
                    if let Err(e) = resume {
                        let _ = ptrace::detach(tid, 0);
                        return Err(CliError::new(format!("cannot resume thread {tid}: {}", os_error_text(&e))));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Calls `function` in the target with `data` copied onto its stack; `args`
    /// receives the data's address and returns up to six integer arguments.
    /// Returns the function's `rax`.
    pub fn call(
        &mut self,
        function: u64,
        data: &[u8],
        args: impl FnOnce(u64) -> Vec<u64>,
        timeout: Duration,
        what: &str,
    ) -> CliResult<u64> {
        let (tid, pid) = (self.tid, self.pid);
        let top = self.regs.rsp - RED_ZONE;
        let data_addr = (top - data.len() as u64) & !15;
        let return_slot = ((data_addr - FRAME_SLACK) & !15) - 8;
        let io = |e: std::io::Error, doing: &str| CliError::new(format!("cannot {doing} in process {pid}: {}", os_error_text(&e)));
        let backup_covers_call = matches!(&self.stack_backup, Some((low, _)) if *low <= return_slot);
        if !backup_covers_call {
            let original = ptrace::read_memory(pid, return_slot, (top - return_slot) as usize)
                .map_err(|e| io(e, "read the stack"))?;
            self.stack_backup = Some((return_slot, original));
        }
        ptrace::write_memory(pid, data_addr, data).map_err(|e| io(e, "write the stack"))?;
        ptrace::write_memory(pid, return_slot, &0u64.to_ne_bytes()).map_err(|e| io(e, "write the stack"))?;

        let args = args(data_addr);
        let mut regs = self.regs;
        regs.rip = function;
        regs.rsp = return_slot;
        regs.rax = 0;
        regs.orig_rax = u64::MAX; // -1: "not in a system call": the kernel must not restart anything on these registers
        regs.eflags &= !(0x400 | 0x100); // the ABI wants DF clear; no single-stepping
        let slots = [&mut regs.rdi, &mut regs.rsi, &mut regs.rdx, &mut regs.rcx, &mut regs.r8, &mut regs.r9];
        for (slot, value) in slots.into_iter().zip(args) {
            *slot = value;
        }
        ptrace::set_regs(tid, &regs).map_err(|e| io(e, "set registers"))?;
        let started = Instant::now();
        ptrace::cont(tid, 0).map_err(|e| io(e, "resume the thread"))?;
        let result = self.wait_for_return(started + timeout, what);
        self.call_time += started.elapsed();
        result
    }

    fn wait_for_return(&mut self, deadline: Instant, what: &str) -> CliResult<u64> {
        let (tid, pid) = (self.tid, self.pid);
        loop {
            let stop = ptrace::wait_stop(tid, deadline)
                .map_err(|e| CliError::new(format!("waiting for process {pid}: {}", os_error_text(&e))))?;
            match stop {
                None => {
                    // Stop it again so that Drop can restore it.
                    let _ = ptrace::interrupt(tid);
                    let _ = ptrace::wait_stop(tid, Instant::now() + Duration::from_secs(2));
                    return Err(CliError::new(format!("{what} did not return in time in process {pid}; its registers were restored"))
                        .hint("the thread may have been waiting for a lock it holds itself; retry, or use --timeout"));
                }
                Some(Stop::Signal(libc::SIGSEGV)) => {
                    let regs = ptrace::get_regs(tid)
                        .map_err(|e| CliError::new(format!("cannot read registers of thread {tid}: {}", os_error_text(&e))))?;
                    if regs.rip == 0 {
                        return Ok(regs.rax);
                    }
                    let (_, _, fault) = ptrace::get_siginfo(tid).unwrap_or((0, 0, 0));
                    return Err(CliError::new(format!(
                        "{what} crashed in process {pid} (SIGSEGV at ip {:#x}, address {fault:#x}); the signal was suppressed and the thread's state restored",
                        regs.rip
                    )));
                }
                Some(Stop::Signal(signal)) => {
                    // A signal for the app: deliver it, as it would have been without us.
                    ptrace::cont(tid, signal)
                        .map_err(|e| CliError::new(format!("cannot resume thread {tid}: {}", os_error_text(&e))))?;
                }
                Some(Stop::Interrupt { .. }) | Some(Stop::OtherEvent { .. }) => {
                    ptrace::cont(tid, 0)
                        .map_err(|e| CliError::new(format!("cannot resume thread {tid}: {}", os_error_text(&e))))?;
                }
                Some(Stop::Exited(code)) => {
                    self.released = true;
                    return Err(CliError::new(format!("process {pid} exited (status {code}) during {what}")));
                }
                Some(Stop::Killed(signal)) => {
                    self.released = true;
                    return Err(CliError::new(format!("process {pid} was killed by signal {signal} during {what}")));
                }
            }
        }
    }

    /// Reads a C string from the target (for `dlerror`).
    pub fn read_string(&self, addr: u64) -> String {
        ptrace::read_c_string(self.pid, addr, 1024).unwrap_or_else(|e| format!("<unreadable: {e}>"))
    }

    /// Restores the thread's memory and registers and lets it go.
    pub fn resume(mut self) -> CliResult<PauseReport> {
        self.restore_and_detach().map_err(|e| {
            CliError::new(format!("restoring thread {} of process {}: {}", self.tid, self.pid, os_error_text(&e)))
        })?;
        Ok(PauseReport {
            tid: self.tid,
            paused: self.paused_before + self.interrupted_at.elapsed(),
            call_time: self.call_time,
            attempts: self.attempts,
        })
    }

    fn restore_and_detach(&mut self) -> std::io::Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let mut first_error = None;
        if let Some((low, bytes)) = &self.stack_backup {
            if let Err(e) = ptrace::write_memory(self.pid, *low, bytes) {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = ptrace::set_fp_state(self.tid, &self.fp_state) {
            first_error.get_or_insert(e);
        }
        if let Err(e) = ptrace::set_regs(self.tid, &self.regs) {
            first_error.get_or_insert(e);
        }
        if let Err(e) = ptrace::detach(self.tid, self.pending_signal) {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        // An error path: put everything back so the target goes on unchanged.
        let _ = self.restore_and_detach();
    }
}

/// Waits for the stop asked for by `PTRACE_INTERRUPT`; a signal-delivery
/// stop that comes first serves as the stop, its signal held in `pending_signal`.
fn wait_for_interrupt(tid: i32, deadline: Instant, pending_signal: &mut i32) -> CliResult<()> {
    loop {
        match ptrace::wait_stop(tid, deadline) {
            Ok(Some(Stop::Interrupt { .. })) => return Ok(()),
            Ok(Some(Stop::Signal(signal))) => {
                // The thread was about to receive a signal: hold it; it is
                // delivered when we detach. The interrupt stop follows.
                *pending_signal = signal;
                return Ok(());
            }
            Ok(Some(Stop::OtherEvent { .. })) => {
                let _ = ptrace::cont(tid, 0);
            }
            Ok(Some(Stop::Exited(_))) | Ok(Some(Stop::Killed(_))) => {
                return Err(CliError::with_code(exit::NOT_FOUND, format!("thread {tid} exited while being stopped")));
            }
            Ok(None) => {
                let _ = ptrace::detach(tid, 0);
                return Err(CliError::new(format!("thread {tid} did not stop within the timeout"))
                    .hint("the process may be in uninterruptible sleep (state D); retry later"));
            }
            Err(e) => return Err(CliError::new(format!("waiting for thread {tid}: {}", os_error_text(&e)))),
        }
    }
}
