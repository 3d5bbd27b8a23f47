//! Cross-process epoch-based reclamation: when may a deleted hash element's
//! memory be reused?
//!
//! A program may keep a value pointer from `bpf_map_lookup_elem` for the rest
//! of its run and update it with atomics, so an element deleted meanwhile
//! must not be handed to another key until no running program can still
//! hold it. Readers announce themselves in **reader slots** in the registry
//! file (shared by every participant):
//!
//! - [`ReadGuard`] (from `Registry::read_section`, taken by the agent around
//!   each program run, and internally by every syscall-view hash operation)
//!   stores the current global epoch in the calling thread's slot and issues
//!   one full fence; dropping it clears the slot. Nested guards are free.
//! - Freeing an element stamps it with `epoch.fetch_add(1)`: every reader
//!   that starts afterwards sees a larger epoch and cannot reach the
//!   (already unlinked) element.
//! - An allocator may reuse an element stamped `e` only if `e < safe_below`,
//!   where `safe_below = min(global epoch, every active slot's epoch)` is
//!   recomputed by scanning the slots when no reusable element is known.
//!
//! A program run that also claims a CPU slot ([`enter_run`], see
//! `cpu_slot`) announces its epoch with a plain store and lets the claim's
//! CAS serve as the fence, so the pair costs one atomic read-modify-write.
//!
//! A slot left active by a process that died (SIGKILL mid-program) is
//! cleared once its owner is seen dead, so it cannot block reuse forever.
//! The slot table is fixed-size ([`READER_SLOTS`]); a thread that finds no
//! free slot runs unprotected after a one-time warning on stderr (the
//! kernel's preallocated maps give no protection at all).

use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::registry::Shared;

/// Number of reader slots in the registry file.
pub const READER_SLOTS: usize = 1024;
pub(crate) const SLOT_SIZE: usize = 64;

/// One thread's announcement.
#[repr(C, align(64))]
pub(crate) struct ReaderSlot {
    /// 0 = not reading; else the global epoch when the section began.
    pub epoch: AtomicU64,
    /// Registry owner id of the process that claimed the slot (0 = free).
    pub owner: AtomicU32,
    /// Kernel thread id of the claiming thread (diagnostics).
    pub tid: AtomicU32,
}

/// Epoch state in the registry header.
#[repr(C, align(64))]
pub(crate) struct EpochState {
    /// Global epoch; starts at 1, bumped by every element free.
    pub epoch: AtomicU64,
    /// Cached `safe_below` (monotonic).
    pub safe_below: AtomicU64,
    /// One past the highest slot index ever claimed (bounds scans).
    pub slots_used: AtomicU32,
}

/// A thread's slot in one registry. Holds the registry weakly (a
/// `Weak<Shared>` turned into a raw pointer, null when the entry is unused):
/// a thread must not keep a registry (and its owner file) alive after the
/// process dropped every handle; the weak count also pins the allocation,
/// so `shared` (used as identity) cannot be reused by another registry
/// meanwhile.
///
/// `Copy` and without `Drop` on purpose: a thread-local whose type needs
/// dropping registers a destructor with the C library on its first use in
/// each thread, which allocates, and a program's first run on a thread may
/// be in a signal handler that interrupted `malloc` (a `profile:` tick).
/// The slots are given back at thread exit by a pthread key destructor
/// ([`release_thread_readers`]) instead.
#[derive(Clone, Copy)]
struct ThreadReader {
    shared: *const Shared,
    slot: *const ReaderSlot,
    depth: u32,
    fork_epoch: u32,
    /// `cpu_slot::token` of this thread (0 until the reader slot is claimed).
    run_token: u64,
}

const NO_READER: ThreadReader =
    ThreadReader { shared: std::ptr::null(), slot: std::ptr::null(), depth: 0, fork_epoch: 0, run_token: 0 };

/// Registries a thread can read at once (a process uses one, tests a few).
const READERS_PER_THREAD: usize = 8;

impl ThreadReader {
    /// The registry's weak handle, without giving up this entry's count.
    fn weak(&self) -> std::mem::ManuallyDrop<Weak<Shared>> {
        // SAFETY: `shared` came from `Weak::into_raw` and this entry still owns that count.
        std::mem::ManuallyDrop::new(unsafe { Weak::from_raw(self.shared) })
    }

    /// Gives the slot back (if the registry is still mapped and the slot is
    /// this process's) and the weak count, leaving the entry unused.
    fn release(&mut self) {
        if self.shared.is_null() {
            return;
        }
        if let Some(_alive) = self.weak().upgrade() {
            if !self.slot.is_null() && self.fork_epoch == crate::registry::fork_epoch() {
                // SAFETY: the slot lies in the registry mapping kept alive by
                // `_alive`; we claimed it, so we release it.
                let s = unsafe { &*self.slot };
                s.epoch.store(0, Ordering::Release);
                s.owner.store(0, Ordering::Release);
            }
        }
        // SAFETY: the entry's own count, given back once (the entry is reset below).
        drop(unsafe { Weak::from_raw(self.shared) });
        *self = NO_READER;
    }
}

thread_local! {
    /// This thread's readers, one per registry it used (usually one).
    static READERS: RefCell<[ThreadReader; READERS_PER_THREAD]> = const { RefCell::new([NO_READER; READERS_PER_THREAD]) };
}

/// The pthread key whose destructor gives a thread's reader slots back
/// (`u32::MAX` until made; made when a registry is opened, never in a
/// signal handler).
static EXIT_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

/// Makes the thread-exit key (once per process).
pub(crate) fn init_thread_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: a valid key pointer and an `extern "C"` destructor.
        if unsafe { libc::pthread_key_create(&mut key, Some(release_thread_readers)) } == 0 {
            EXIT_KEY.store(key, Ordering::Release);
        }
    });
}

extern "C" fn release_thread_readers(_: *mut libc::c_void) {
    let _ = READERS.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.iter_mut().for_each(ThreadReader::release);
        }
    });
}

/// An active read section; element memory seen inside it is not reused
/// until it ends. Borrows the registry or map it came from (the slot lives in
/// its mapping). Not `Send`: it belongs to the thread's slot.
pub struct ReadGuard<'a> {
    shared: *const Shared,
    _registry: std::marker::PhantomData<&'a Shared>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let shared = self.shared;
        let _ = READERS.try_with(|r| {
            let mut r = r.borrow_mut();
            if let Some(t) = r.iter_mut().find(|t| t.shared == shared) {
                t.depth -= 1;
                if t.depth == 0 && !t.slot.is_null() {
                    // SAFETY: the slot is inside the registry mapping, alive
                    // for this guard's lifetime 'a.
                    unsafe { &*t.slot }.epoch.store(0, Ordering::Release);
                }
            }
        });
    }
}

/// Enters a read section on `shared`'s registry for the calling thread.
#[inline]
pub(crate) fn enter(shared: &Arc<Shared>) -> ReadGuard<'_> {
    let ptr = Arc::as_ptr(shared);
    let entered = READERS.try_with(|r| {
        let mut r = r.borrow_mut();
        let idx = thread_reader_index(&mut r, shared);
        let t = &mut r[idx];
        if t.depth == 0 && !t.slot.is_null() {
            let e = shared.epoch_state().epoch.load(Ordering::SeqCst);
            // A SeqCst swap is a full barrier (xchg on x86): the slot is
            // visible before any map memory is read in the section.
            // SAFETY: slot inside the registry mapping, alive while `shared` is.
            unsafe { &*t.slot }.epoch.swap(e, Ordering::SeqCst);
        }
        t.depth += 1;
    });
    ReadGuard {
        shared: if entered.is_ok() { ptr } else { std::ptr::null() },
        _registry: std::marker::PhantomData,
        _not_send: std::marker::PhantomData,
    }
}

/// Index of the calling thread's reader for `shared` in `r`, claiming a
/// reader slot on first use (and again in a forked child). Allocates
/// nothing: with every entry taken by live registries, the last one is
/// given up for this one.
#[inline(always)]
fn thread_reader_index(r: &mut [ThreadReader; READERS_PER_THREAD], shared: &Arc<Shared>) -> usize {
    let ptr = Arc::as_ptr(shared);
    let fe = crate::registry::fork_epoch();
    match r.iter().position(|t| t.shared == ptr) {
        Some(i) if r[i].fork_epoch == fe => i,
        Some(i) => {
            // Forked child: the inherited slot is the parent's; take our own.
            (r[i].slot, r[i].run_token) = claim_slot(shared);
            r[i].fork_epoch = fe;
            r[i].depth = 0;
            i
        }
        None => {
            // Forget registries this thread used that are gone.
            for t in r.iter_mut() {
                if !t.shared.is_null() && t.depth == 0 && t.weak().strong_count() == 0 {
                    t.release();
                }
            }
            let i = r.iter().position(|t| t.shared.is_null()).unwrap_or_else(|| {
                let last = READERS_PER_THREAD - 1;
                if r[last].depth == 0 {
                    r[last].release();
                }
                last
            });
            if r.iter().all(|t| t.shared.is_null() || std::ptr::eq(t, &r[i])) {
                // The thread's first reader: give its slots back when it exits.
                let key = EXIT_KEY.load(Ordering::Acquire);
                if key != u32::MAX {
                    // SAFETY: a valid key; the value only marks the thread
                    // (keys below 32 do not allocate in glibc).
                    unsafe { libc::pthread_setspecific(key, 1 as *const libc::c_void) };
                }
            }
            let (slot, run_token) = claim_slot(shared);
            r[i] = ThreadReader { shared: Weak::into_raw(Arc::downgrade(shared)), slot, depth: 0, fork_epoch: fe, run_token };
            i
        }
    }
}

/// A program run in progress: a read section, plus (when asked for) an
/// exclusively held CPU slot whose index is the run's CPU for per-CPU
/// values and `bpf_get_smp_processor_id`. Dropping it releases both.
/// Not `Send`: it belongs to the thread.
pub struct RunGuard<'a> {
    /// Claimed slot, or null (not asked for, or the bounded wait ran out).
    cpu_slot: *const crate::cpu_slot::CpuSlot,
    cpu: u32,
    _section: ReadGuard<'a>,
}

impl RunGuard<'_> {
    /// The run's CPU: the claimed slot index, or [`crate::cpu::CURRENT`]
    /// when the run holds no slot (per-CPU accesses then use the thread's
    /// real CPU).
    #[inline(always)]
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    /// Whether the run holds a CPU slot exclusively.
    #[inline(always)]
    pub fn holds_cpu_slot(&self) -> bool {
        !self.cpu_slot.is_null()
    }
}

impl Drop for RunGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.cpu_slot.is_null() {
            // SAFETY: the slot lies in the registry mapping, alive for 'a;
            // this run claimed it. Release: the run's per-CPU writes happen
            // before the next holder's claim.
            unsafe { &*self.cpu_slot }.holder.store(0, Ordering::Release);
        }
    }
}

/// Enters a read section and, with `claim_cpu`, claims a CPU slot (see
/// `cpu_slot` for the bounded wait when every slot is held).
#[inline]
pub(crate) fn enter_run(shared: &Arc<Shared>, claim_cpu: bool) -> RunGuard<'_> {
    if !claim_cpu {
        return RunGuard { cpu_slot: std::ptr::null(), cpu: crate::cpu::CURRENT, _section: enter(shared) };
    }
    let (section, token, fence_pending) = enter_deferring_fence(shared);
    let mut guard = RunGuard { cpu_slot: std::ptr::null(), cpu: crate::cpu::CURRENT, _section: section };
    {
        let token = if token != 0 { token } else { crate::cpu_slot::token(shared.reader_owner_id(), 0) };
        match crate::cpu_slot::claim(shared, token) {
            Some((index, slot)) => {
                guard.cpu_slot = slot;
                guard.cpu = index;
                // On x86-64 the claim's `lock cmpxchg` was the full barrier
                // publishing the section's epoch; elsewhere a SeqCst RMW is
                // not guaranteed to order an earlier plain store before
                // later loads, so fence explicitly.
                #[cfg(not(target_arch = "x86_64"))]
                if fence_pending {
                    fence(Ordering::SeqCst);
                }
            }
            None => {
                if fence_pending {
                    fence(Ordering::SeqCst);
                }
            }
        }
    }
    guard
}

/// Enters a read section storing the epoch plainly: the caller must issue
/// a full barrier (returned `true`) before it reads map memory. Also
/// returns the thread's run token (0 if unknown).
#[inline(always)]
fn enter_deferring_fence(shared: &Arc<Shared>) -> (ReadGuard<'_>, u64, bool) {
    let ptr = Arc::as_ptr(shared);
    let mut token = 0;
    let mut fence_pending = false;
    let entered = READERS.try_with(|r| {
        let mut r = r.borrow_mut();
        let idx = thread_reader_index(&mut r, shared);
        let t = &mut r[idx];
        if t.depth == 0 && !t.slot.is_null() {
            let e = shared.epoch_state().epoch.load(Ordering::SeqCst);
            // SAFETY: slot inside the registry mapping, alive while `shared` is.
            unsafe { &*t.slot }.epoch.store(e, Ordering::Relaxed);
            fence_pending = true;
        }
        t.depth += 1;
        token = t.run_token;
    });
    let section = ReadGuard {
        shared: if entered.is_ok() { ptr } else { std::ptr::null() },
        _registry: std::marker::PhantomData,
        _not_send: std::marker::PhantomData,
    };
    (section, token, fence_pending)
}

/// Claims a reader slot for the calling thread; also returns its run token
/// for CPU-slot claims.
#[cold]
fn claim_slot(shared: &Shared) -> (*const ReaderSlot, u64) {
    let owner = shared.reader_owner_id();
    let st = shared.epoch_state();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    for pass in 0..2 {
        for i in 0..READER_SLOTS {
            let s = shared.reader_slot(i);
            let cur = s.owner.load(Ordering::Acquire);
            let free = cur == 0 || (pass == 1 && !shared.owner_alive(cur));
            if free && s.owner.compare_exchange(cur, owner, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                s.epoch.store(0, Ordering::Release);
                s.tid.store(tid, Ordering::Relaxed);
                st.slots_used.fetch_max(i as u32 + 1, Ordering::AcqRel);
                return (s, crate::cpu_slot::token(owner, tid));
            }
        }
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!("userbpf: all {READER_SLOTS} map reader slots are taken; this thread reads maps without reuse protection")
    });
    (std::ptr::null(), crate::cpu_slot::token(owner, tid))
}

/// Stamps a freed element: returns the epoch it was freed in.
#[inline]
pub(crate) fn retire_stamp(shared: &Shared) -> u64 {
    shared.epoch_state().epoch.fetch_add(1, Ordering::SeqCst)
}

/// Elements stamped below the returned value may be reused (cached value).
#[inline]
pub(crate) fn safe_below(shared: &Shared) -> u64 {
    shared.epoch_state().safe_below.load(Ordering::Acquire)
}

/// Rescans the reader slots and raises `safe_below`. With `check_dead`,
/// slots of dead processes that block progress are cleared.
#[cold]
pub(crate) fn recompute_safe_below(shared: &Shared, check_dead: bool) -> u64 {
    let st = shared.epoch_state();
    let g = st.epoch.load(Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let mut min = g;
    let used = (st.slots_used.load(Ordering::Acquire) as usize).min(READER_SLOTS);
    for i in 0..used {
        let s = shared.reader_slot(i);
        let e = s.epoch.load(Ordering::SeqCst);
        if e == 0 || e >= min {
            continue;
        }
        if check_dead {
            let owner = s.owner.load(Ordering::Acquire);
            if !shared.owner_alive(owner) {
                // The process died inside a section: nobody reads through it.
                if s.epoch.compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    let _ = s.owner.compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
                continue;
            }
        }
        min = e;
    }
    st.safe_below.fetch_max(min, Ordering::AcqRel);
    st.safe_below.load(Ordering::Acquire)
}
