//! The SIGTRAP side of the rewriter:
//! - breakpoints (`int3`) of sites being patched or unpatched, which send the
//!   thread to the trampoline or to the relocated original instructions;
//! - breakpoints of sites that use the slow `int3` probe (prologues that
//!   cannot be relocated): handlers run in the signal handler, then the
//!   displaced instruction runs out of line (a displaced `call` is emulated);
//! - the rendezvous: a real-time signal (`SIGRTMAX - 1`, see
//!   `rendezvous_signal`) queued to every other thread with a magic value,
//!   whose handler serializes the core (`cpuid`) and moves a thread
//!   that was stopped between the displaced instructions of a prologue being
//!   patched to the same point of their relocated copy;
//! - every other SIGTRAP (and every rendezvous-signal that does not carry
//!   our magic value) goes to the handler the application had installed (or
//!   gets the default action), so the app's own signal use is unchanged.
//!
//! The rendezvous cannot use SIGTRAP itself: standard signals do not queue,
//! so a queued SIGTRAP pending when a thread hits an `int3` would swallow
//! the breakpoint's SIGTRAP (and the thread would run on past the `int3`).
//!
//! The breakpoint table is a fixed open-addressing array written under the
//! registry lock and read lock-free; entries are never removed (sites live
//! for the whole process), so lookups always terminate.

use crate::error::{Error, Result};
use crate::probes::Site;
use crate::regs::{PtRegs, USER_CS, USER_SS};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TABLE_SIZE: usize = 8192;
static TABLE_KEYS: [AtomicUsize; TABLE_SIZE] = [const { AtomicUsize::new(0) }; TABLE_SIZE];
static TABLE_SITES: [AtomicPtr<Site>; TABLE_SIZE] = [const { AtomicPtr::new(std::ptr::null_mut()) }; TABLE_SIZE];
static TABLE_USED: AtomicUsize = AtomicUsize::new(0);

/// What a thread that traps on one of our breakpoints does.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrapAction {
    /// Not ours any more: re-execute the (restored) original instruction.
    Retired = 0,
    /// Patch in progress with handlers installed: go to the trampoline.
    ToTrampoline = 1,
    /// Unpatch in progress: run the relocated original instructions.
    ToOriginal = 2,
    /// Slow probe: run the handlers here, then the displaced instruction.
    RunHandlers = 3,
}

impl TrapAction {
    pub(crate) fn from_u8(v: u8) -> TrapAction {
        match v {
            1 => TrapAction::ToTrampoline,
            2 => TrapAction::ToOriginal,
            3 => TrapAction::RunHandlers,
            _ => TrapAction::Retired,
        }
    }
}

fn hash(address: usize) -> usize {
    (address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) % TABLE_SIZE
}

/// Registers `site` as owner of the breakpoint at `address` (idempotent).
pub(crate) fn register_breakpoint(address: usize, site: &'static Site) -> Result<()> {
    let mut i = hash(address);
    for _ in 0..TABLE_SIZE {
        let key = TABLE_KEYS[i].load(Ordering::Acquire);
        if key == address {
            TABLE_SITES[i].store(site as *const Site as *mut Site, Ordering::Release);
            return Ok(());
        }
        if key == 0 {
            TABLE_SITES[i].store(site as *const Site as *mut Site, Ordering::Release);
            TABLE_KEYS[i].store(address, Ordering::Release);
            TABLE_USED.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        i = (i + 1) % TABLE_SIZE;
    }
    Err(Error::BreakpointTableFull(TABLE_SIZE))
}

fn lookup_breakpoint(address: usize) -> Option<&'static Site> {
    let mut i = hash(address);
    for _ in 0..TABLE_SIZE {
        let key = TABLE_KEYS[i].load(Ordering::Acquire);
        if key == address {
            let site = TABLE_SITES[i].load(Ordering::Acquire);
            // SAFETY: sites are leaked `&'static Site`s, never freed.
            return unsafe { site.as_ref() };
        }
        if key == 0 {
            return None;
        }
        i = (i + 1) % TABLE_SIZE;
    }
    None
}

/// The application's handlers before ours, readable from signal handlers:
/// index 0 for SIGTRAP, 1 for the rendezvous signal.
static PREVIOUS_HANDLER: [AtomicUsize; 2] = [AtomicUsize::new(libc::SIG_DFL), AtomicUsize::new(libc::SIG_DFL)];
static PREVIOUS_FLAGS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// The application's full dispositions (what it would read back), once ours
/// are installed.
static APPLICATION_ACTION: Mutex<[Option<libc::sigaction>; 2]> = Mutex::new([None, None]);

fn owned_index(signal: libc::c_int) -> Option<usize> {
    if signal == libc::SIGTRAP {
        Some(0)
    } else if signal == rendezvous_signal() {
        Some(1)
    } else {
        None
    }
}

/// For an interposed `sigaction(2)`: records `action` (if any) as the
/// application's handler of `signal`, which ours chains to, and returns the
/// application's previous disposition. `None` when `signal` is not one of
/// ours or our handlers are not installed yet (then the call belongs to libc).
pub(crate) fn replace_application_handler(signal: libc::c_int, action: Option<&libc::sigaction>) -> Option<libc::sigaction> {
    let index = owned_index(signal)?;
    let mut actions = APPLICATION_ACTION.lock().unwrap_or_else(|e| e.into_inner());
    let previous = actions[index]?;
    if let Some(new) = action {
        actions[index] = Some(*new);
        PREVIOUS_FLAGS[index].store(new.sa_flags as usize, Ordering::Relaxed);
        PREVIOUS_HANDLER[index].store(new.sa_sigaction, Ordering::Release);
    }
    Some(previous)
}

/// The real-time signal used for rendezvous.
pub(crate) fn rendezvous_signal() -> libc::c_int {
    libc::SIGRTMAX() - 1
}

/// Installs our SIGTRAP and rendezvous-signal handlers (again, if the
/// application replaced them since), remembering the application's.
pub(crate) fn install() -> Result<()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    install_one(0, libc::SIGTRAP, "sigaction(SIGTRAP)")?;
    install_one(1, rendezvous_signal(), "sigaction(SIGRTMAX-1)")
}

fn install_one(index: usize, signal: libc::c_int, call: &'static str) -> Result<()> {
    // libc's own sigaction: the agent interposes `sigaction` and routes the
    // application's calls for these signals to `replace_application_handler`.
    let current = preload::next::disposition(signal).map_err(|_| Error::sys(call))?;
    if current.sa_sigaction == on_signal as *const () as usize {
        return Ok(());
    }
    // SAFETY: building a sigaction for our handler. SA_NODEFER: a breakpoint
    // hit inside our handler must not find SIGTRAP blocked (the kernel would
    // then reset it to the default action and kill the process).
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    ours.sa_sigaction = on_signal as *const () as usize;
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_RESTART | libc::SA_ONSTACK;
    PREVIOUS_FLAGS[index].store(current.sa_flags as usize, Ordering::Relaxed);
    PREVIOUS_HANDLER[index].store(current.sa_sigaction, Ordering::Release);
    APPLICATION_ACTION.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(current);
    // `ours.sa_mask` is empty (zeroed).
    preload::next::set_disposition(signal, &ours).map_err(|_| Error::sys(call))?;
    Ok(())
}

/// `si_value` of rendezvous signals: magic in the high half, generation low.
const RENDEZVOUS_MAGIC: u64 = 0x7573_6266_0000_0000; // "usbf"
static RENDEZVOUS_GENERATION: AtomicU64 = AtomicU64::new(0);
static RENDEZVOUS_ACKS: AtomicUsize = AtomicUsize::new(0);
/// Interior redirection of the rendezvous in progress (null: none).
static INTERIOR: AtomicPtr<Interior> = AtomicPtr::new(std::ptr::null_mut());

/// The inside of a prologue being patched: a thread stopped at
/// `start + boundaries[i].0` resumes at `boundaries[i].1`.
pub(crate) struct Interior {
    pub start: usize,
    pub length: usize,
    pub boundaries: Vec<(usize, usize)>,
}

impl Interior {
    fn redirect(&self, ip: usize) -> Option<usize> {
        if ip <= self.start || ip >= self.start + self.length {
            return None;
        }
        self.boundaries.iter().find(|(offset, _)| self.start + offset == ip).map(|&(_, to)| to)
    }
}

/// Runs the rendezvous handler on every other thread of the process and
/// waits for all of them. With `interior`, threads stopped inside it are
/// moved to the relocated copy; threads asleep in the kernel (seen through
/// `/proc/self/task/*/syscall`) with their pc outside the interior are not
/// signalled at all, and threads that block the signal must be seen so.
/// Returns how many threads were signalled.
pub(crate) fn rendezvous(interior: Option<&Interior>) -> Result<usize> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    install()?;
    let generation = RENDEZVOUS_GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    RENDEZVOUS_ACKS.store(0, Ordering::Release);
    INTERIOR.store(interior.map_or(std::ptr::null_mut(), |i| i as *const Interior as *mut Interior), Ordering::Release);
    let result = signal_all_and_wait(generation, interior);
    INTERIOR.store(std::ptr::null_mut(), Ordering::Release);
    result
}

fn signal_all_and_wait(generation: u64, interior: Option<&Interior>) -> Result<usize> {
    let me = preload::raw::gettid();
    let address = interior.map_or(0, |i| i.start);
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|source| Error::Io { path: "/proc/self/task".into(), source })?;
    let mut unanswered: Vec<libc::pid_t> = tasks
        .flatten()
        .filter_map(|t| t.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|&tid| tid != me)
        .collect();
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A thread either gets the signal, or (while it blocks it) must be
        // seen asleep outside the interior; blocking is often momentary
        // (glibc blocks all signals around thread creation, for example).
        unanswered.retain(|&tid| {
            // For the interior check, a thread asleep in the kernel with its
            // pc outside needs no signal (so a sleeping system call is never
            // interrupted by us); it can only come back in through the int3.
            if interior.is_some() && sleeping_outside(tid, interior) {
                return false;
            }
            if !thread_blocks(tid, rendezvous_signal()) {
                if send_rendezvous(tid, generation) {
                    sent += 1;
                }
                return false; // answered through the signal, or exited
            }
            !sleeping_outside(tid, interior)
        });
        let acks = RENDEZVOUS_ACKS.load(Ordering::Acquire);
        if unanswered.is_empty() && acks >= sent {
            return Ok(sent);
        }
        if Instant::now() > deadline {
            return Err(Error::ThreadsNotQuiescent {
                address,
                reason: if unanswered.is_empty() {
                    format!("{} of {sent} threads did not answer the rendezvous signal within 5 s", sent - acks)
                } else {
                    format!(
                        "threads {unanswered:?} block the rendezvous signal and kept running or stayed inside the patched bytes for 5 s"
                    )
                },
            });
        }
        if unanswered.is_empty() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Queues the rendezvous signal to `tid`; false if the thread is gone.
fn send_rendezvous(tid: libc::pid_t, generation: u64) -> bool {
    let pid = preload::raw::getpid();
    // SAFETY: zeroed siginfo filled as rt_tgsigqueueinfo expects for SI_QUEUE.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = rendezvous_signal();
    info.si_code = libc::SI_QUEUE;
    // SAFETY: writing the sender fields of the SI_QUEUE union member
    // (pid at offset 16, uid at 20, value at 24 on x86-64).
    unsafe {
        let base = &mut info as *mut libc::siginfo_t as *mut u8;
        *(base.add(16) as *mut i32) = pid;
        *(base.add(20) as *mut u32) = libc::getuid();
        *(base.add(24) as *mut u64) = RENDEZVOUS_MAGIC | (generation & 0xffff_ffff);
    }
    // SAFETY: valid siginfo pointer.
    unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, rendezvous_signal(), &info) == 0 }
}

pub(crate) fn thread_blocks(tid: libc::pid_t, signal: libc::c_int) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// Whether `tid` is asleep in the kernel with its user instruction pointer
/// outside the interior (kernel: `/proc/<tid>/syscall` gives the user pc
/// of a sleeping task, "running" otherwise), or has exited. A sleeping
/// thread runs no user code until woken and re-enters user mode through
/// the kernel, which serializes.
fn sleeping_outside(tid: libc::pid_t, interior: Option<&Interior>) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return true; // the thread exited
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.first() == Some(&"running") {
        return false;
    }
    let pc = fields.last().and_then(|pc| usize::from_str_radix(pc.trim_start_matches("0x"), 16).ok());
    pc.is_some_and(|pc| interior.is_none_or(|i| i.redirect(pc).is_none()))
}

/// Our handler of both signals.
extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to an
    // SA_SIGINFO handler.
    let (info_ref, uc) = unsafe { (&*info, &mut *(context as *mut libc::ucontext_t)) };
    if signal != libc::SIGTRAP {
        if info_ref.si_code == libc::SI_TIMER {
            // SAFETY: an SI_TIMER siginfo: si_overrun (int) at 20, si_value at 24.
            let (overrun, value) =
                unsafe { (*((info as *const u8).add(20) as *const i32), *((info as *const u8).add(24) as *const u64)) };
            if value & 0xffff_ffff_0000_0000 == SAMPLE_MAGIC {
                on_sample(value & 0xffff_ffff, 1 + overrun.max(0) as u32, uc);
                return;
            }
        }
        if info_ref.si_code == libc::SI_QUEUE {
        // SAFETY: reading the SI_QUEUE sender fields (see signal_all_and_wait).
        let (pid, value) = unsafe {
            let base = info as *const u8;
            (*(base.add(16) as *const i32), *(base.add(24) as *const u64))
        };
            if pid == preload::raw::getpid() && value & 0xffff_ffff_0000_0000 == RENDEZVOUS_MAGIC {
                on_rendezvous(value & 0xffff_ffff, uc);
                return;
            }
        }
        chain_to_application(1, signal, info, context);
        return;
    }
    if info_ref.si_code == libc::SI_KERNEL && handle_breakpoint(uc) {
        return;
    }
    chain_to_application(0, signal, info, context);
}

/// `sigev_value` of the sampling timers: magic in the high half, the
/// sampler's own value (its period) in the low half.
pub(crate) const SAMPLE_MAGIC: u64 = 0x7573_6273_0000_0000; // "usbs"

/// What the agent runs on a sampling tick: the interrupted thread's
/// registers, the timer's low 32 bits of `sigev_value`, and how many
/// expirations this one signal stands for (1 + the timer's overrun: CPU-time
/// timers fire at most once per scheduler tick).
pub type SampleHandler = unsafe extern "C" fn(regs: *mut PtRegs, value: u32, expirations: u32);

static SAMPLE_HANDLER: AtomicUsize = AtomicUsize::new(0);
pub(crate) static SAMPLES_SKIPPED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn set_sample_handler(handler: Option<SampleHandler>) {
    SAMPLE_HANDLER.store(handler.map_or(0, |h| h as usize), Ordering::Release);
}

/// Stack a tick needs below the interrupted frame when the handler runs on
/// an alternate signal stack (which may be as small as 8 KiB): the
/// program's 512-byte stack, helpers' stack buffers, and a nested fault.
const ALTSTACK_HEADROOM: usize = 16 * 1024;

/// A sampling tick (a CPU-time timer of this thread expired): run the
/// handler on the interrupted registers, inside probe context, so it is
/// skipped (and counted) while the thread already runs a probe or the
/// agent's own code, and so `detach`'s grace period covers it. Skipped too
/// when the thread blocks SIGSEGV or SIGBUS (a fault-tolerant read would
/// then kill it) or the alternate stack it runs on is nearly full. errno is
/// the application's again when the handler returns.
fn on_sample(value: u64, expirations: u32, uc: &mut libc::ucontext_t) {
    // SAFETY: __errno_location is async-signal-safe and returns this thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    let handler = SAMPLE_HANDLER.load(Ordering::Acquire);
    let ip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    // SAFETY: sigismember reads the interrupted thread's mask from the context.
    let faults_blocked = unsafe {
        libc::sigismember(&uc.uc_sigmask, libc::SIGSEGV) == 1 || libc::sigismember(&uc.uc_sigmask, libc::SIGBUS) == 1
    };
    let here = &errno as *const i32 as usize;
    let (alt, alt_size) = (uc.uc_stack.ss_sp as usize, uc.uc_stack.ss_size);
    let short_stack = uc.uc_stack.ss_flags & libc::SS_ONSTACK != 0
        && here >= alt
        && here < alt + alt_size
        && here - alt < ALTSTACK_HEADROOM;
    if handler == 0 {
        // Not sampling (any more): nothing to do.
    } else if faults_blocked || short_stack {
        SAMPLES_SKIPPED.fetch_add(1, Ordering::Relaxed);
    } else {
        match crate::thread_state::InProbe::enter_for_sample(ip) {
            Some(_in_probe) => {
                let mut regs = PtRegs::default();
                for (index, field) in GREG_ORDER {
                    *field(&mut regs) = uc.uc_mcontext.gregs[index] as u64;
                }
                regs.ip = ip as u64;
                regs.flags = uc.uc_mcontext.gregs[libc::REG_EFL as usize] as u64;
                regs.orig_ax = u64::MAX;
                regs.cs = USER_CS;
                regs.ss = USER_SS;
                // SAFETY: the handler was registered as a SampleHandler; `regs` lives for the call.
                let f: SampleHandler = unsafe { std::mem::transmute::<usize, SampleHandler>(handler) };
                // SAFETY: as above.
                unsafe { f(&mut regs, value as u32, expirations) };
            }
            None => {
                SAMPLES_SKIPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn on_rendezvous(generation: u64, uc: &mut libc::ucontext_t) {
    let interior = INTERIOR.load(Ordering::Acquire);
    // SAFETY: INTERIOR points to the `Interior` the rendezvous caller keeps
    // alive until every thread has acknowledged.
    if let Some(interior) = unsafe { interior.as_ref() } {
        let ip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        if let Some(to) = interior.redirect(ip) {
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = to as i64;
        }
    }
    // cpuid is a serializing instruction (available on every x86-64).
    core::arch::x86_64::__cpuid(0);
    if generation == RENDEZVOUS_GENERATION.load(Ordering::Acquire) & 0xffff_ffff {
        RENDEZVOUS_ACKS.fetch_add(1, Ordering::AcqRel);
    }
}

/// Handles an `int3` trap at one of our sites; false if it is not ours.
fn handle_breakpoint(uc: &mut libc::ucontext_t) -> bool {
    let ip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    let breakpoint = ip.wrapping_sub(1);
    let Some(site) = lookup_breakpoint(breakpoint) else { return false };
    match site.trap_action() {
        TrapAction::ToTrampoline => set_ip(uc, site.trampoline_entry()),
        TrapAction::ToOriginal => set_ip(uc, site.original_copy()),
        TrapAction::RunHandlers => run_breakpoint_probe(site, uc),
        TrapAction::Retired => {
            // SAFETY: `breakpoint` is inside the code of a site we patched.
            let byte = unsafe { std::ptr::read_volatile(breakpoint as *const u8) };
            if byte == 0xcc {
                return false; // an int3 someone else wrote there since
            }
            set_ip(uc, breakpoint);
        }
    }
    true
}

fn set_ip(uc: &mut libc::ucontext_t, ip: usize) {
    uc.uc_mcontext.gregs[libc::REG_RIP as usize] = ip as i64;
}

/// A `pt_regs` field, by accessor.
type RegsField = fn(&mut PtRegs) -> &mut u64;

/// Signal-context register index → `pt_regs` field.
const GREG_ORDER: [(usize, RegsField); 16] = [
    (libc::REG_R15 as usize, |r| &mut r.r15),
    (libc::REG_R14 as usize, |r| &mut r.r14),
    (libc::REG_R13 as usize, |r| &mut r.r13),
    (libc::REG_R12 as usize, |r| &mut r.r12),
    (libc::REG_RBP as usize, |r| &mut r.bp),
    (libc::REG_RBX as usize, |r| &mut r.bx),
    (libc::REG_R11 as usize, |r| &mut r.r11),
    (libc::REG_R10 as usize, |r| &mut r.r10),
    (libc::REG_R9 as usize, |r| &mut r.r9),
    (libc::REG_R8 as usize, |r| &mut r.r8),
    (libc::REG_RAX as usize, |r| &mut r.ax),
    (libc::REG_RCX as usize, |r| &mut r.cx),
    (libc::REG_RDX as usize, |r| &mut r.dx),
    (libc::REG_RSI as usize, |r| &mut r.si),
    (libc::REG_RDI as usize, |r| &mut r.di),
    (libc::REG_RSP as usize, |r| &mut r.sp),
];

/// Slow probe: build `pt_regs` from the signal context, run the handlers,
/// then continue with the displaced instruction. The kernel saved the full
/// register and vector state in the signal frame and restores it.
fn run_breakpoint_probe(site: &'static Site, uc: &mut libc::ucontext_t) {
    let mut regs = PtRegs::default();
    for (index, field) in GREG_ORDER {
        *field(&mut regs) = uc.uc_mcontext.gregs[index] as u64;
    }
    regs.ip = site.function_address() as u64;
    regs.flags = uc.uc_mcontext.gregs[libc::REG_EFL as usize] as u64;
    regs.orig_ax = u64::MAX;
    regs.cs = USER_CS;
    regs.ss = USER_SS;
    // SAFETY: `regs` is a valid PtRegs for the duration of the call.
    unsafe { crate::probes::dispatch_entry(&mut regs, site) };
    match site.displaced_call() {
        Some((target, return_to)) => {
            // Emulate `call target`: push the original return address.
            let sp = uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize - 8;
            // SAFETY: the thread's stack grows into memory below sp, which
            // is what the call instruction itself would have written.
            unsafe { (sp as *mut usize).write(return_to) };
            uc.uc_mcontext.gregs[libc::REG_RSP as usize] = sp as i64;
            set_ip(uc, target);
        }
        None => set_ip(uc, site.original_copy()),
    }
}

fn chain_to_application(index: usize, signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let handler = PREVIOUS_HANDLER[index].load(Ordering::Acquire);
    let flags = PREVIOUS_FLAGS[index].load(Ordering::Relaxed) as libc::c_int;
    if handler == libc::SIG_IGN {
        return;
    }
    if handler == libc::SIG_DFL {
        // Default action (terminate, with a core dump for SIGTRAP), exactly
        // as without us: restore it (with libc's own sigaction: the agent's
        // interposer would only record SIG_DFL as the application's choice)
        // and re-raise (the signal is not blocked inside our handler thanks
        // to SA_NODEFER).
        // SAFETY: an all-zero sigaction is SIG_DFL with no flags.
        let default: libc::sigaction = unsafe { std::mem::zeroed() };
        let _ = preload::next::set_disposition(signal, &default);
        // SAFETY: async-signal-safe libc call.
        unsafe { libc::raise(signal) };
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the application installed this three-argument handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: the application installed this one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}
