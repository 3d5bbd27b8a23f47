//! CPU slots: "preemption disabled" for a program run in user space.
//!
//! In the kernel a BPF program owns its CPU for its whole run, so the
//! non-atomic `lookup → add → update` that bpftrace emits for `sum()`,
//! `avg()`, `hist()`… on a per-CPU value can never lose an update. Here two
//! threads (of any processes sharing the registry) can time-share one CPU,
//! and one preempted between its load and its store would write a stale
//! value over its CPU-mate's additions.
//!
//! The registry file therefore holds one **CPU slot** word per possible CPU
//! (capped at [`MAX_CPU_SLOTS`]), each alone on a cache line. A run that may
//! touch per-CPU state claims one exclusively — CAS of the word from 0 to
//! the run's *token* (`owner id | tid << 32`) — and the claimed index is then
//! *the* CPU of that run for every per-CPU map access and for
//! `bpf_get_smp_processor_id`; the run releases it with one store at its end.
//! Two concurrent runs therefore never share a per-CPU value slot, across
//! processes too, which is the kernel's guarantee.
//!
//! Claim order: the slot of the CPU the thread runs on (`cpu::current()`,
//! rseq) — uncontended, one CAS on a line this CPU usually owns already —
//! then every other slot. When every slot is held (more runs in flight than
//! slots: holders were preempted mid-run), the **bounded wait policy**:
//!
//! 1. rescan with `spin_loop` hints for [`SPIN_ROUNDS`] rounds, then
//!    **sleep** between rounds, from [`SLEEP_MIN`] doubling up to
//!    [`SLEEP_MAX`] — the only system calls, and only on this contended
//!    path. Sleeping, not `sched_yield`: the holders are runs preempted
//!    mid-program and need a CPU to finish; with more waiters than CPUs,
//!    `sched_yield` (which CFS often answers by rescheduling the caller at
//!    once) kept the waiters spinning on the CPUs and starved the holders
//!    past [`MAX_WAIT`] (seen as lost updates under CI load);
//! 2. after [`LIVENESS_AFTER`] (then every [`LIVENESS_EVERY`]), probe the
//!    holders' owners (the registry's OFD owner files) and take over the slot
//!    of a holder whose process died (SIGKILL mid-run) — counted as a
//!    *steal*;
//! 3. after [`MAX_WAIT`] give up: the run proceeds **without a slot** (its
//!    per-CPU accesses use the thread's real CPU, as before this mechanism
//!    existed, so it may race) — counted as a *timeout*. A probe hit is never
//!    delayed by more than about `MAX_WAIT`, and never dropped.
//!
//! A holder alive but stopped (SIGSTOP, debugger) keeps its slot; the others
//! keep working on the remaining slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::registry::Shared;

/// Upper bound on the number of CPU slots in a registry (slots are sized by
/// the possible-CPU count at registry creation, capped here).
pub const MAX_CPU_SLOTS: usize = 1024;
pub(crate) const CPU_SLOT_SIZE: usize = 64;

/// Rescans with only a `spin_loop` hint between them before yielding.
const SPIN_ROUNDS: u32 = 64;
/// First sleep of a waiter once spinning is over; doubles up to [`SLEEP_MAX`].
const SLEEP_MIN: Duration = Duration::from_micros(10);
/// Longest single sleep of a waiter between rescans.
const SLEEP_MAX: Duration = Duration::from_micros(500);
/// How long a waiter waits before probing the holders' liveness.
const LIVENESS_AFTER: Duration = Duration::from_millis(2);
/// Interval between liveness probes afterwards.
const LIVENESS_EVERY: Duration = Duration::from_millis(5);
/// Longest wait for a slot; the run then goes ahead without one. Holders
/// are runs of a few hundred nanoseconds that were preempted; on an
/// overloaded machine the scheduler can take tens of milliseconds to give
/// one its CPU back (several times in a row for one waiter), and giving up
/// early reintroduces lost updates: 50 ms still timed out about once in 15
/// runs of `percpu_exact` with two CPU hogs beside it. Exact per-CPU values
/// are worth more than bounding the rare stall of an overloaded app.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// One CPU slot word, alone on its cache line.
#[repr(C, align(64))]
pub(crate) struct CpuSlot {
    /// 0 = free; else the holder's token `owner id | tid << 32`.
    pub holder: AtomicU64,
}

/// CPU-slot bookkeeping in the registry header.
#[repr(C, align(64))]
pub(crate) struct CpuSlotState {
    /// Number of slots (fixed at registry creation, 1..=MAX_CPU_SLOTS).
    pub count: u64,
    /// Claims that found every slot busy and had to wait.
    pub waits: AtomicU64,
    /// Slots taken over from a holder whose process died.
    pub steals: AtomicU64,
    /// Runs that gave up waiting after `MAX_WAIT` and ran without a slot.
    pub timeouts: AtomicU64,
}

/// Counters of the CPU-slot mechanism (registry-wide, since creation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlotStats {
    /// Number of CPU slots.
    pub slots: u32,
    /// Claims that found every slot busy and waited.
    pub waits: u64,
    /// Slots taken over from dead holders.
    pub steals: u64,
    /// Runs that waited [`MAX_WAIT`] in vain and ran without a slot.
    pub timeouts: u64,
}

/// The run token of the calling thread: never 0 (owner ids start at 1).
#[inline(always)]
pub(crate) fn token(owner: u32, tid: u32) -> u64 {
    owner as u64 | (tid as u64) << 32
}

/// Owner id inside a token.
#[inline(always)]
fn token_owner(token: u64) -> u32 {
    token as u32
}

/// Claims a CPU slot for `token`; returns its index and word, or `None` when
/// the bounded wait ran out. The successful CAS is a full barrier on
/// x86-64 (`lock cmpxchg`); the caller relies on it to publish its read
/// section (see `epoch::enter_run`).
#[inline(always)]
pub(crate) fn claim(shared: &Shared, token: u64) -> Option<(u32, &CpuSlot)> {
    let n = shared.cpu_slot_count();
    let cpu = crate::cpu::current();
    let first = if cpu < n { cpu } else { cpu % n };
    let slot = shared.cpu_slot(first);
    if slot.holder.compare_exchange(0, token, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
        return Some((first, slot));
    }
    claim_contended(shared, token, first, n)
}

/// One pass over every slot but `first`, starting after it.
#[inline]
fn try_others(shared: &Shared, token: u64, first: u32, n: u32) -> Option<(u32, &CpuSlot)> {
    for k in 0..n {
        let i = (first + k) % n;
        let slot = shared.cpu_slot(i);
        if slot.holder.load(Ordering::Relaxed) == 0
            && slot.holder.compare_exchange(0, token, Ordering::SeqCst, Ordering::Relaxed).is_ok()
        {
            return Some((i, slot));
        }
    }
    None
}

#[cold]
fn claim_contended(shared: &Shared, token: u64, first: u32, n: u32) -> Option<(u32, &CpuSlot)> {
    if let Some(claimed) = try_others(shared, token, first + 1, n) {
        return Some(claimed);
    }
    let state = shared.cpu_slot_state();
    state.waits.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut next_liveness = LIVENESS_AFTER;
    let mut rounds = 0u32;
    let mut sleep = SLEEP_MIN;
    loop {
        if rounds < SPIN_ROUNDS {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(SLEEP_MAX);
        }
        rounds = rounds.saturating_add(1);
        if let Some(claimed) = try_others(shared, token, first, n) {
            return Some(claimed);
        }
        if rounds < SPIN_ROUNDS {
            continue;
        }
        let waited = started.elapsed();
        if waited >= next_liveness {
            next_liveness = waited + LIVENESS_EVERY;
            if let Some(claimed) = steal_from_dead(shared, token, n) {
                state.steals.fetch_add(1, Ordering::Relaxed);
                return Some(claimed);
            }
        }
        if waited >= MAX_WAIT {
            state.timeouts.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
}

/// Takes over the first slot whose holder's process is dead.
#[cold]
fn steal_from_dead(shared: &Shared, token: u64, n: u32) -> Option<(u32, &CpuSlot)> {
    let me = token_owner(token);
    for i in 0..n {
        let slot = shared.cpu_slot(i);
        let holder = slot.holder.load(Ordering::Acquire);
        if holder == 0 {
            continue;
        }
        let owner = token_owner(holder);
        // Our own owner id: another thread of this process, alive by definition.
        if owner != me
            && !shared.owner_alive(owner)
            && slot.holder.compare_exchange(holder, token, Ordering::SeqCst, Ordering::Relaxed).is_ok()
        {
            return Some((i, slot));
        }
    }
    None
}

/// Frees slots held by dead processes (`Registry::reap`): a process killed
/// mid-run must not keep a slot until somebody has to wait for it.
pub(crate) fn release_dead(shared: &Shared) -> u32 {
    let mut freed = 0;
    for i in 0..shared.cpu_slot_count() {
        let slot = shared.cpu_slot(i);
        let holder = slot.holder.load(Ordering::Acquire);
        // (`owner_alive` answers true for this process's own id at once.)
        if holder != 0
            && !shared.owner_alive(token_owner(holder))
            && slot.holder.compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            freed += 1;
        }
    }
    freed
}

/// Counters for [`crate::Registry::cpu_slot_stats`].
pub(crate) fn stats(shared: &Shared) -> CpuSlotStats {
    let st = shared.cpu_slot_state();
    CpuSlotStats {
        slots: shared.cpu_slot_count(),
        waits: st.waits.load(Ordering::Relaxed),
        steals: st.steals.load(Ordering::Relaxed),
        timeouts: st.timeouts.load(Ordering::Relaxed),
    }
}

/// Index of the busy slots and their tokens (diagnostics and tests).
pub(crate) fn holders(shared: &Shared) -> Vec<(u32, u64)> {
    (0..shared.cpu_slot_count())
        .filter_map(|i| {
            let h = shared.cpu_slot(i).holder.load(Ordering::Acquire);
            (h != 0).then_some((i, h))
        })
        .collect()
}
