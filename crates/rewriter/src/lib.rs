//! Live patching of function prologues into trampolines (uprobes and
//! uretprobes inside the running process), ELF symbol resolution and
//! instruction relocation with iced-x86.
//!
//! Typical use (the agent):
//! ```no_run
//! # use std::path::Path;
//! # unsafe extern "C" fn handler(_: *mut rewriter::PtRegs, _: *mut std::ffi::c_void) {}
//! let lib = Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1");
//! let offset = rewriter::elf::resolve_symbol(lib, "crc32")?;           // like bpftrace
//! let address = rewriter::maps::file_offset_to_address(rewriter::maps::FileRef::Path(lib), offset)?;
//! // SAFETY: `handler` is thread-safe and ignores its null data pointer.
//! let id = unsafe { rewriter::attach_uprobe(address, handler, std::ptr::null_mut())? };
//! rewriter::detach(id)?;
//! # Ok::<(), rewriter::Error>(())
//! ```
//! See `docs/arch/rewriter.md` for the design and its safety arguments.

pub mod elf;
mod error;
pub mod maps;
mod memory;
mod probes;
mod regs;
mod relocate;
mod signals;
mod thread_state;
mod trampoline;
mod uretprobe;

pub use error::{Error, Result};
pub use probes::{Mechanism, ProbeHandler, ProbeId};
pub use regs::PtRegs;

use probes::Kind;
use std::ffi::c_void;
use std::sync::atomic::Ordering;

/// Does now the one-time set-up that the first attach would otherwise do
/// (installing the signal handlers, registering for `membarrier`, which
/// costs milliseconds): call it once, off the application's hot path.
/// Idempotent; callable from any thread.
pub fn prepare() -> Result<()> {
    probes::registry()?.as_mut().expect("initialised by registry()").prepare()
}

/// Runs `handler(regs, data)` every time the function at `address` (a
/// running address, see [`maps::file_offset_to_address`]) is entered, before
/// its first instruction; `regs.ip` is `address`, `regs.sp` the entry stack
/// pointer. Uses a trampoline when the prologue can be relocated, a
/// breakpoint otherwise (see [`mechanism`]).
///
/// # Safety
/// `handler` must be safe to call from any thread, concurrently, with
/// `data`, until [`detach`] returns; it must not unwind, and must not call
/// `attach_*`/`detach`. Patching code changes the process: `address` must be
/// an instruction boundary of code that is not modified by anyone else.
pub unsafe fn attach_uprobe(address: usize, handler: ProbeHandler, data: *mut c_void) -> Result<ProbeId> {
    probes::registry()?.as_mut().expect("initialised by registry()").attach(address, Kind::Entry, handler, data)
}

/// Runs `handler(regs, data)` every time the function whose entry is
/// `address` returns: `regs.ax` is the return value, `regs.ip` the address
/// it returns to.
///
/// # Safety
/// As [`attach_uprobe`]; `address` must be a function's entry.
pub unsafe fn attach_uretprobe(address: usize, handler: ProbeHandler, data: *mut c_void) -> Result<ProbeId> {
    probes::registry()?.as_mut().expect("initialised by registry()").attach(address, Kind::Return, handler, data)
}

/// Removes a probe. When it returns, the handler is not running and will not
/// run again on any thread; the probed code is restored once its last probe
/// is gone.
pub fn detach(id: ProbeId) -> Result<()> {
    probes::registry()?.as_mut().expect("initialised by registry()").detach(id)
}

/// The signals whose handlers the rewriter installs: SIGTRAP (breakpoints)
/// and `SIGRTMAX - 1` (rendezvous).
pub fn owned_signals() -> [libc::c_int; 2] {
    [libc::SIGTRAP, signals::rendezvous_signal()]
}

/// For an interposed `sigaction(2)` (the agent's): when the application
/// sets a handler for one of [`owned_signals`] after ours were installed,
/// record it as the handler ours chain to (instead of letting it replace
/// ours) and return the application's previous disposition to report as
/// `oldact`. `None` means "not ours (yet)": pass the call to libc.
pub fn replace_application_handler(signal: libc::c_int, action: Option<&libc::sigaction>) -> Option<libc::sigaction> {
    signals::replace_application_handler(signal, action)
}

/// Keeps every probe from firing on the calling thread while the returned
/// guard lives; hits there are skipped and counted in
/// [`Counters::skipped_suppressed`]. For the code of the tracer itself
/// (the agent's constructor and watcher thread): its calls to probed
/// functions (`malloc`, `read`, `getpid`…) are not the application's, and
/// a probe that fires inside the patching code could recurse. Guards nest;
/// the thread can still attach and detach while suppressed.
pub fn suppress_probes_on_this_thread() -> ProbesSuppressed {
    ProbesSuppressed { _guard: thread_state::Suppressed::new() }
}

/// See [`suppress_probes_on_this_thread`]. Not `Send`: dropped on the
/// thread it was made on.
pub struct ProbesSuppressed {
    _guard: thread_state::Suppressed,
}

pub use signals::SampleHandler;

/// The signal and `sigev_value` a sampling timer must deliver for
/// [`set_sample_handler`]'s handler to run: the rewriter's own real-time
/// signal (so applications' handlers of it are chained as for every signal
/// it owns), with `value` (up to 32 bits, handed to the handler) tagged.
pub fn sampling_signal(value: u32) -> (libc::c_int, u64) {
    (signals::rendezvous_signal(), signals::SAMPLE_MAGIC | value as u64)
}

/// Installs (or with `None` removes) the handler of sampling ticks. It runs
/// inside a signal handler on the interrupted thread, in probe context:
/// ticks on a thread that is inside a probe handler or suppresses probes
/// are skipped and counted ([`Counters::samples_skipped`]), and
/// [`synchronize`] waits for handlers in flight. The rewriter's signal
/// handlers must be installed ([`prepare`]).
///
/// # Safety
/// `handler` must be async-signal-safe, must not unwind, and must not call
/// `attach_*`/`detach`.
pub unsafe fn set_sample_handler(handler: Option<SampleHandler>) {
    signals::set_sample_handler(handler)
}

/// Whether thread `tid` of this process blocks the sampling signal: a
/// timer must not tick into it (a thread waiting in `sigwait`/`signalfd`
/// for a set that includes it would take the tick as its own signal).
pub fn thread_blocks_sampling(tid: libc::pid_t) -> bool {
    signals::thread_blocks(tid, signals::rendezvous_signal())
}

/// For a library loaded by `dlopen` (whose thread-local storage is
/// allocated on each thread's first use): the code (`[start, end)` ranges,
/// at most 8: the C library and the dynamic loader) where a sampling tick
/// must not be a thread's first, as that allocation takes their locks.
/// Empty (the default) when the library was preloaded.
pub fn set_sampling_unsafe_ranges(ranges: &[(usize, usize)]) {
    for (i, (start, end)) in thread_state::UNSAFE_RANGES.iter().enumerate() {
        let (s, e) = ranges.get(i).copied().unwrap_or((0, 0));
        end.store(0, Ordering::Relaxed);
        start.store(s, Ordering::Relaxed);
        end.store(e, Ordering::Release);
    }
}

/// Waits until no thread still runs a handler (probe or sampling) that it
/// entered before this call: data only such handlers read can be freed
/// afterwards. Must not be called from inside a handler.
pub fn synchronize() {
    thread_state::synchronize()
}

/// How the probe's site runs handlers.
pub fn mechanism(id: ProbeId) -> Result<Mechanism> {
    probes::registry()?.as_mut().expect("initialised by registry()").mechanism(id)
}

/// Process-wide event counters (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Probe hits skipped because the thread was already running a handler.
    pub skipped_reentrant: u64,
    /// Probe hits skipped on threads (or during calls) that suppress probes:
    /// the tracer's own work (see [`suppress_probes_on_this_thread`]).
    pub skipped_suppressed: u64,
    /// uretprobes skipped because the thread's shadow stack was full.
    pub shadow_stack_overflows: u64,
    /// uretprobes not reported because an exception or cancellation
    /// unwound their frame (the real return address was restored).
    pub uretprobes_lost_to_unwinding: u64,
    /// Probe hits skipped because more threads than supported hit probes.
    pub thread_slots_exhausted: u64,
    /// Sampling ticks skipped: the thread was inside a handler, suppressed
    /// probes, blocked SIGSEGV/SIGBUS, or ran short of alternate stack.
    pub samples_skipped: u64,
    /// Of those, ticks that would have been a thread's first inside the C
    /// library or dynamic loader of a `dlopen`ed agent.
    pub samples_skipped_first: u64,
}

pub fn counters() -> Counters {
    Counters {
        skipped_reentrant: thread_state::SKIPPED_REENTRANT.load(Ordering::Relaxed),
        skipped_suppressed: thread_state::SKIPPED_SUPPRESSED.load(Ordering::Relaxed),
        shadow_stack_overflows: thread_state::SHADOW_STACK_OVERFLOWS.load(Ordering::Relaxed),
        uretprobes_lost_to_unwinding: uretprobe::LOST_TO_UNWINDING.load(Ordering::Relaxed),
        thread_slots_exhausted: thread_state::THREAD_SLOTS_EXHAUSTED.load(Ordering::Relaxed),
        samples_skipped: signals::SAMPLES_SKIPPED.load(Ordering::Relaxed),
        samples_skipped_first: thread_state::SAMPLES_SKIPPED_FIRST.load(Ordering::Relaxed),
    }
}
