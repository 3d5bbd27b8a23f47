//! The agent's attached probes: which registry attachments are live in this
//! process, the per-probe data the trampoline hands back on every hit, and
//! the hit handler itself.
//!
//! Per-hit path (`on_hit`): the rewriter calls it with the saved
//! registers (`struct pt_regs`, kernel layout) and the probe's
//! [`ProbeSlot`]; it builds a [`RunEnv`] on the stack and runs the JIT'd
//! program with `ctx = regs`. No allocation, no lock, no system call.
//!
//! Lifetime: a slot and its program must outlive every hit in flight.
//! `rewriter::detach` returns only once no thread runs the handler, so a
//! detached probe is freed at once; one whose detach failed is kept forever.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rewriter::PtRegs;
use runtime::{LoadedProgram, RunEnv};

/// What the trampoline hands back to `on_hit`. Immutable while attached.
#[repr(C)]
pub struct ProbeSlot {
    program: *const LoadedProgram,
    cookie: u64,
    func_ip: u64,
    program_id: u32,
    attachment_id: u32,
    /// Only fire in this process (-1: any). Checked per hit so a forked
    /// child never runs a probe meant for its parent, even before its own
    /// watcher has detached it.
    pid_filter: i32,
    /// Cleared to switch the probe off without touching the code (see
    /// [`switch_off`]).
    enabled: AtomicBool,
    /// Runs of the program here (published in the agent's status).
    hits: AtomicU64,
}

// SAFETY: a ProbeSlot is immutable after creation; its program pointer is
// kept alive by the owning ActiveProbe's Arc, and LoadedProgram is Sync.
unsafe impl Send for ProbeSlot {}
unsafe impl Sync for ProbeSlot {}

/// One attachment live in this process.
pub struct ActiveProbe {
    pub attachment_id: u32,
    pub program_id: u32,
    pub address: usize,
    /// `(st_dev, st_ino)` of the file the probed code belongs to.
    pub file: (u64, u64),
    probe: rewriter::ProbeId,
    /// Handed to the trampoline as `data`; owned here so it outlives every hit.
    _slot: Box<ProbeSlot>,
    /// Keeps the program (and its JIT code and maps) alive.
    _program: Arc<LoadedProgram>,
}

/// The trampoline's callback for every probe the agent attaches.
///
/// # Safety
/// Called by the rewriter with valid saved registers and the `data` pointer
/// given at attach time (a `ProbeSlot` kept alive past detach).
unsafe extern "C" fn on_hit(regs: *mut PtRegs, data: *mut c_void) {
    // SAFETY: `data` is the `ProbeSlot` we registered (see `attach`).
    let slot = unsafe { &*(data as *const ProbeSlot) };
    if !slot.enabled.load(Ordering::Relaxed) {
        return;
    }
    if slot.pid_filter >= 0 && runtime::helpers::task::current_tgid() != slot.pid_filter as u32 {
        return;
    }
    slot.hits.fetch_add(1, Ordering::Relaxed);
    let mut env = RunEnv {
        cookie: slot.cookie,
        func_ip: slot.func_ip,
        program_id: slot.program_id,
        attachment_id: slot.attachment_id,
        program: slot.program as *const c_void,
        ctx: 0,                         // set by `run`
        ringbuf_wake: std::ptr::null(), // set by `run`
        pending_signal: 0,              // set by `run`
        signal_thread: false,
        cpu: shm_maps::cpu::CURRENT,    // set by `run`
    };
    // SAFETY: the program was verified for a pt_regs context, and the slot
    // keeps it alive; `env` lives on this stack for the whole run. A panic
    // must not unwind into the trampoline (the result is ignored, as the
    // kernel ignores a uprobe program's return value).
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        (*slot.program).run(regs as *mut u8, &mut env)
    }));
}

/// Kind of probe to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Entry,
    Return,
}

/// Attach `program` at `address` for registry attachment `attachment_id`,
/// firing only in process `pid_filter` (-1: any).
pub fn attach(
    kind: ProbeKind,
    address: usize,
    file: (u64, u64),
    attachment_id: u32,
    cookie: u64,
    pid_filter: i32,
    program: Arc<LoadedProgram>,
) -> Result<ActiveProbe, rewriter::Error> {
    let slot = Box::new(ProbeSlot {
        program: Arc::as_ptr(&program),
        cookie,
        func_ip: address as u64,
        program_id: program.id(),
        attachment_id,
        pid_filter,
        enabled: AtomicBool::new(true),
        hits: AtomicU64::new(0),
    });
    let data = &*slot as *const ProbeSlot as *mut c_void;
    // SAFETY: `on_hit` only reads `data` as the ProbeSlot, which lives in
    // the returned ActiveProbe until detach returned (or forever).
    let probe = unsafe {
        match kind {
            ProbeKind::Entry => rewriter::attach_uprobe(address, on_hit, data)?,
            ProbeKind::Return => rewriter::attach_uretprobe(address, on_hit, data)?,
        }
    };
    Ok(ActiveProbe { attachment_id, program_id: program.id(), address, file, probe, _slot: slot, _program: program })
}

/// Switch `probe` off without patching code: its handler returns at once
/// from now on. Used when the probed library was unmapped (restoring bytes
/// there could corrupt whatever is mapped now). The probe must then be kept
/// alive forever (any remaining jump still leads to it).
pub fn switch_off(probe: &ActiveProbe) {
    probe._slot.enabled.store(false, Ordering::Relaxed);
}

/// Detach `probe`. `rewriter::detach` guarantees that, once it returns,
/// the handler is not running and will not run again on any thread, so the
/// probe's data is freed at once. If detaching fails the probe may still
/// fire: it is handed back so the caller keeps it alive.
pub fn detach(probe: ActiveProbe) -> Result<(), (ActiveProbe, rewriter::Error)> {
    match rewriter::detach(probe.probe) {
        Ok(()) => Ok(()),
        Err(e) => Err((probe, e)),
    }
}

impl ActiveProbe {
    /// How many times the program ran here.
    pub fn hits(&self) -> u64 {
        self._slot.hits.load(Ordering::Relaxed)
    }

    /// The rewriter's id of this probe.
    pub fn probe_id(&self) -> rewriter::ProbeId {
        self.probe
    }
}
