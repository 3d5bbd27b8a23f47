//! Per-thread probe state: the re-entrancy guard, the grace period that lets
//! `detach` know no thread still runs a removed handler, and the uretprobe
//! shadow stack.
//!
//! Each thread that hits a probe claims a slot of a static array (no
//! allocation, ever) and keeps a pointer to it in a `const`-initialised
//! thread-local. A pthread key destructor frees the slot when the thread
//! exits; a `pthread_atfork` child handler frees the slots of threads that do
//! not exist in the child.
//!
//! Grace period (quiescent-state RCU, as liburcu's membarrier flavour): the
//! slot's `sequence` is odd while the thread runs probe handlers. A thread
//! makes it odd *before* loading a site's handler list and even after its
//! last use. `synchronize` (writer, after swapping the list pointer) issues
//! `membarrier(PRIVATE_EXPEDITED)`, which orders every running thread's
//! earlier store of `sequence` before our later loads and our earlier swap
//! before their later loads, then waits for every odd slot to change. A
//! thread found even either is outside any handler or will load the new list;
//! a thread found odd is waited for. Without membarrier, readers issue a
//! full fence after making `sequence` odd.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Threads that can be inside probes at once; more are skipped (counted).
pub(crate) const MAX_THREADS: usize = 4096;
/// Nested uretprobe frames per thread; deeper calls skip the uretprobe.
pub(crate) const SHADOW_STACK_DEPTH: usize = 64;

/// One hijacked return: where the real return address was and what it was.
#[derive(Clone, Copy)]
pub(crate) struct ShadowEntry {
    /// Stack address that held the return address (the sp at entry).
    pub slot_address: usize,
    pub return_address: usize,
    pub site: *const crate::probes::Site,
}

const EMPTY_ENTRY: ShadowEntry = ShadowEntry { slot_address: 0, return_address: 0, site: std::ptr::null() };

#[repr(C, align(64))]
pub(crate) struct ThreadSlot {
    /// Kernel thread id of the owner; 0 when free.
    owner: AtomicU32,
    /// Odd while the owner runs probe handlers.
    sequence: AtomicU64,
    /// Nesting depth of [`Suppressed`] guards: while non-zero no probe
    /// fires on the owner (the agent's own threads and calls).
    suppressed: Cell<u32>,
    shadow_len: Cell<usize>,
    shadow: UnsafeCell<[ShadowEntry; SHADOW_STACK_DEPTH]>,
}

// SAFETY: `shadow_len` and `shadow` are only touched by the owning thread
// (and by its own signal handlers, which run only while the thread holds the
// odd sequence or is in code that does not touch them); the other fields are
// atomics.
unsafe impl Sync for ThreadSlot {}

#[allow(clippy::declare_interior_mutable_const)]
const FREE_SLOT: ThreadSlot = ThreadSlot {
    owner: AtomicU32::new(0),
    sequence: AtomicU64::new(0),
    suppressed: Cell::new(0),
    shadow_len: Cell::new(0),
    shadow: UnsafeCell::new([EMPTY_ENTRY; SHADOW_STACK_DEPTH]),
};
static SLOTS: [ThreadSlot; MAX_THREADS] = [FREE_SLOT; MAX_THREADS];
/// Slots at or above this index have never been used.
static SLOTS_HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
/// Whether readers must fence themselves (no membarrier).
static READERS_FENCE: AtomicBool = AtomicBool::new(false);
static EXIT_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

thread_local! {
    static CURRENT: Cell<*const ThreadSlot> = const { Cell::new(std::ptr::null()) };
}

pub(crate) static SKIPPED_REENTRANT: AtomicU64 = AtomicU64::new(0);
pub(crate) static SKIPPED_SUPPRESSED: AtomicU64 = AtomicU64::new(0);
pub(crate) static THREAD_SLOTS_EXHAUSTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static SHADOW_STACK_OVERFLOWS: AtomicU64 = AtomicU64::new(0);

/// One-time setup, called under the registry lock before the first patch.
pub(crate) fn init(readers_must_fence: bool) {
    READERS_FENCE.store(readers_must_fence, Ordering::Relaxed);
    if EXIT_KEY.load(Ordering::Relaxed) != u32::MAX {
        return;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: plain libc calls with valid pointers; the destructor and fork
    // handler are `extern "C"` functions of this module.
    unsafe {
        if libc::pthread_key_create(&mut key, Some(release_on_exit)) == 0 {
            EXIT_KEY.store(key, Ordering::Relaxed);
        }
        libc::pthread_atfork(None, None, Some(release_after_fork));
    }
}

extern "C" fn release_on_exit(slot: *mut libc::c_void) {
    let slot = slot as *const ThreadSlot;
    // SAFETY: the value was set by `claim_slot` to an element of SLOTS.
    let slot = unsafe { &*slot };
    // A probe hit by a later destructor of this thread claims a fresh slot
    // (and glibc runs this destructor again for it) instead of using the
    // one another thread may claim as soon as it is released.
    CURRENT.with(|c| c.set(std::ptr::null()));
    slot.shadow_len.set(0);
    slot.suppressed.set(0);
    slot.owner.store(0, Ordering::Release);
}

extern "C" fn release_after_fork() {
    let me = preload::raw::gettid() as u32;
    for slot in &SLOTS[..SLOTS_HIGH_WATER.load(Ordering::Relaxed)] {
        let owner = slot.owner.load(Ordering::Relaxed);
        if owner != 0 {
            if owner == me {
                continue;
            }
            slot.sequence.store(0, Ordering::Relaxed);
            slot.suppressed.set(0);
            slot.owner.store(0, Ordering::Relaxed);
        }
    }
    // The forking thread keeps its slot but has a new tid in the child.
    let current = CURRENT.with(|c| c.get());
    if !current.is_null() {
        // SAFETY: CURRENT always points into SLOTS.
        unsafe { &*current }.owner.store(me, Ordering::Relaxed);
    }
}

#[cold]
fn claim_slot() -> Option<&'static ThreadSlot> {
    let me = preload::raw::gettid() as u32;
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            SLOTS_HIGH_WATER.fetch_max(i + 1, Ordering::Release);
            slot.shadow_len.set(0);
            slot.suppressed.set(0);
            CURRENT.with(|c| c.set(slot));
            let key = EXIT_KEY.load(Ordering::Relaxed);
            if key != u32::MAX {
                // A probe on pthread_setspecific must not count this call,
                // which is ours, not the application's.
                slot.suppressed.set(1);
                // SAFETY: valid key; keys below PTHREAD_KEY_2NDLEVEL_SIZE do
                // not allocate in glibc.
                unsafe { libc::pthread_setspecific(key, slot as *const ThreadSlot as *const libc::c_void) };
                slot.suppressed.set(0);
            }
            return Some(slot);
        }
    }
    THREAD_SLOTS_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
    None
}

/// The calling thread's slot (claimed on first use).
#[inline]
pub(crate) fn current_slot() -> Option<&'static ThreadSlot> {
    let slot = CURRENT.with(|c| c.get());
    if slot.is_null() {
        return claim_slot();
    }
    // SAFETY: CURRENT only ever holds pointers into SLOTS.
    Some(unsafe { &*slot })
}

/// Why a thread cannot enter probe context now.
enum Busy {
    /// It is inside a probe already.
    Reentrant,
    /// It suppresses probes (the agent's own code).
    Suppressed,
}

/// Proof that the calling thread is inside a probe (its sequence is odd).
pub(crate) struct InProbe {
    slot: &'static ThreadSlot,
    sequence: u64,
}

impl InProbe {
    /// Enters probe context, or returns `None` if this thread is already in
    /// one (re-entrancy: the hit is counted and skipped) or has no slot.
    #[inline]
    pub(crate) fn enter() -> Option<InProbe> {
        match InProbe::enter_on(current_slot()?) {
            Ok(in_probe) => Some(in_probe),
            Err(Busy::Reentrant) => {
                SKIPPED_REENTRANT.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(Busy::Suppressed) => {
                SKIPPED_SUPPRESSED.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Enters probe context on `slot` (the calling thread's), unless the
    /// thread is already in one or suppresses probes.
    #[inline]
    fn enter_on(slot: &'static ThreadSlot) -> Result<InProbe, Busy> {
        let sequence = slot.sequence.load(Ordering::Relaxed);
        if sequence & 1 == 1 {
            return Err(Busy::Reentrant);
        }
        if slot.suppressed.get() != 0 {
            return Err(Busy::Suppressed);
        }
        slot.sequence.store(sequence + 1, Ordering::Relaxed);
        if READERS_FENCE.load(Ordering::Relaxed) {
            fence(Ordering::SeqCst);
        } else {
            compiler_fence(Ordering::SeqCst);
        }
        Ok(InProbe { slot, sequence: sequence + 1 })
    }

    pub(crate) fn slot(&self) -> &'static ThreadSlot {
        self.slot
    }
}

impl Drop for InProbe {
    #[inline]
    fn drop(&mut self) {
        self.slot.sequence.store(self.sequence + 1, Ordering::Release);
    }
}

/// Code where a thread's first tick must not claim a slot (see [`InProbe::enter_for_sample`]):
/// `[start, end)` pairs, empty when the library's TLS is static (preloaded).
pub(crate) static UNSAFE_RANGES: [(AtomicUsize, AtomicUsize); 8] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 8];
pub(crate) static SAMPLES_SKIPPED_FIRST: AtomicU64 = AtomicU64::new(0);

impl InProbe {
    /// Probe context for a sampling tick (a signal that may interrupt the
    /// thread anywhere, even inside the C library's allocator). The thread's
    /// slot is found by its tid, without touching thread-local storage. A
    /// thread that has none yet claims one through its thread-local pointer,
    /// which in a `dlopen`ed library allocates the thread's TLS block on first
    /// use: not while the thread was stopped inside code of `unsafe_ranges`
    /// (the C library and the dynamic loader, whose locks that allocation
    /// takes), where the tick is skipped instead (the thread gets its slot at a
    /// later tick that lands elsewhere).
    ///
    /// `None` when the thread is inside a probe or suppresses probes (the
    /// tick is then skipped), when it has no slot and stopped at `ip` in
    /// code of [`UNSAFE_RANGES`], or when no slot is free.
    pub(crate) fn enter_for_sample(ip: usize) -> Option<InProbe> {
        let me = preload::raw::gettid() as u32;
        let used = SLOTS_HIGH_WATER.load(Ordering::Acquire);
        let slot = match SLOTS[..used].iter().find(|s| s.owner.load(Ordering::Relaxed) == me) {
            Some(slot) => slot,
            None => {
                let unsafe_here = UNSAFE_RANGES.iter().any(|(start, end)| {
                    let (start, end) = (start.load(Ordering::Relaxed), end.load(Ordering::Relaxed));
                    ip >= start && ip < end
                });
                if unsafe_here {
                    SAMPLES_SKIPPED_FIRST.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current_slot()?
            }
        };
        InProbe::enter_on(slot).ok()
    }
}

/// While alive, no probe fires on the thread that made it: every hit there
/// is skipped and counted (`SKIPPED_SUPPRESSED`), whatever the mechanism
/// (trampoline, breakpoint, the breakpoint of a patch in flight). Nests.
/// Unlike being inside a probe it does not make the thread a reader of
/// handler lists, so `synchronize` never waits for it and the thread may
/// attach and detach.
pub(crate) struct Suppressed {
    slot: Option<&'static ThreadSlot>,
    /// Not `Send`: the guard must be dropped on the thread it counts for.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Suppressed {
    pub(crate) fn new() -> Suppressed {
        // No slot (more threads than MAX_THREADS): hits on this thread find
        // none either and are skipped anyway.
        let slot = current_slot();
        if let Some(slot) = slot {
            slot.suppressed.set(slot.suppressed.get() + 1);
        }
        Suppressed { slot, _not_send: std::marker::PhantomData }
    }
}

impl Drop for Suppressed {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            slot.suppressed.set(slot.suppressed.get().saturating_sub(1));
        }
    }
}

/// Whether the calling thread is running probe handlers right now.
pub(crate) fn in_probe() -> bool {
    let slot = CURRENT.with(|c| c.get());
    // SAFETY: CURRENT only ever holds pointers into SLOTS.
    !slot.is_null() && unsafe { &*slot }.sequence.load(Ordering::Relaxed) & 1 == 1
}

/// Waits until no thread can still be running a handler it found before the
/// caller's last pointer swap. Must not be called from inside a probe.
pub(crate) fn synchronize() {
    let heavy = crate::memory::heavy_barrier();
    if !heavy {
        fence(Ordering::SeqCst);
    }
    let me = CURRENT.with(|c| c.get());
    let used = SLOTS_HIGH_WATER.load(Ordering::Acquire);
    for slot in &SLOTS[..used] {
        if std::ptr::eq(slot, me) || slot.owner.load(Ordering::Acquire) == 0 {
            continue;
        }
        let seen = slot.sequence.load(Ordering::Acquire);
        if seen & 1 == 0 {
            continue;
        }
        let mut spins = 0u32;
        while slot.sequence.load(Ordering::Acquire) == seen && slot.owner.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl ThreadSlot {
    /// Pushes a hijacked return. Returns false when the stack is full even
    /// after dropping entries of frames that are already gone (deeper than
    /// the new frame: abandoned by `longjmp`).
    pub(crate) fn push_return(&self, entry: ShadowEntry) -> bool {
        // SAFETY: only the owning thread touches its shadow stack, inside a probe.
        let shadow = unsafe { &mut *self.shadow.get() };
        let mut len = self.shadow_len.get();
        if len == SHADOW_STACK_DEPTH {
            while len > 0 && shadow[len - 1].slot_address <= entry.slot_address {
                len -= 1;
            }
        }
        if len == SHADOW_STACK_DEPTH {
            self.shadow_len.set(len);
            SHADOW_STACK_OVERFLOWS.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        shadow[len] = entry;
        self.shadow_len.set(len + 1);
        true
    }

    /// Pops the entry of the frame whose return-address slot is
    /// `slot_address`, dropping entries above it (frames unwound by
    /// `longjmp` without returning). `None` if no entry matches.
    pub(crate) fn pop_return(&self, slot_address: usize) -> Option<ShadowEntry> {
        // SAFETY: only the owning thread touches its shadow stack.
        let shadow = unsafe { &*self.shadow.get() };
        let len = self.shadow_len.get();
        let index = (0..len).rev().find(|&i| shadow[i].slot_address == slot_address)?;
        self.shadow_len.set(index);
        Some(shadow[index])
    }

    /// The live entry of the frame whose return-address slot is
    /// `slot_address`, if any. Entries deeper than it (lower slot addresses,
    /// frames abandoned by `longjmp`) are skipped; the search stops at the
    /// first shallower frame, so the usual cost is one comparison.
    pub(crate) fn entry_at(&self, slot_address: usize) -> Option<ShadowEntry> {
        // SAFETY: only the owning thread touches its shadow stack.
        let shadow = unsafe { &*self.shadow.get() };
        for entry in shadow[..self.shadow_len.get()].iter().rev() {
            if entry.slot_address == slot_address {
                return Some(*entry);
            }
            if entry.slot_address > slot_address {
                break;
            }
        }
        None
    }

    /// Keeps the entries for which `keep` returns true (called newest
    /// first), in their order, and drops the others.
    pub(crate) fn retain_returns(&self, mut keep: impl FnMut(&ShadowEntry) -> bool) {
        // SAFETY: only the owning thread touches its shadow stack.
        let shadow = unsafe { &mut *self.shadow.get() };
        let len = self.shadow_len.get();
        let mut kept = [false; SHADOW_STACK_DEPTH];
        for i in (0..len).rev() {
            kept[i] = keep(&shadow[i]);
        }
        let mut new_len = 0;
        for i in 0..len {
            if kept[i] {
                shadow[new_len] = shadow[i];
                new_len += 1;
            }
        }
        self.shadow_len.set(new_len);
    }
}
