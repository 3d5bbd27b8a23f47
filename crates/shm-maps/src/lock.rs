//! Owner-checked spinlock living in shared memory.
//!
//! The lock word holds 0 when free, else the registry owner id of the holding
//! process. Critical sections are short and bounded (a few stores). A waiter
//! spins, then yields; after [`CHECK_AFTER`] it asks the registry whether the
//! holder's process still lives (its OFD-locked owner file) and, if it died
//! (SIGKILL at any instruction), takes the lock over with one CAS and is told
//! so (`LockGuard::broken`) so it can repair the structure the lock protects.
//! Liveness checks are syscalls, but only on this abnormal slow path.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::registry::Shared;

/// How long a waiter spins/yields before checking the holder's liveness.
const CHECK_AFTER: Duration = Duration::from_millis(2);
/// Interval between liveness checks while the holder is alive.
const RECHECK_EVERY: Duration = Duration::from_millis(20);

/// A held lock; releases on drop.
pub(crate) struct LockGuard<'a> {
    word: &'a AtomicU32,
    /// The previous holder died inside its critical section.
    pub broken: bool,
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
    }
}

/// Tries once to take the lock for `owner`.
#[inline(always)]
pub(crate) fn try_lock(word: &AtomicU32, owner: u32) -> Option<LockGuard<'_>> {
    if word.compare_exchange(0, owner, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        Some(LockGuard { word, broken: false })
    } else {
        None
    }
}

/// Takes the lock, breaking it if its holder died.
#[inline(always)]
pub(crate) fn lock<'a>(word: &'a AtomicU32, shared: &Shared) -> LockGuard<'a> {
    let owner = shared.owner_id();
    if let Some(g) = try_lock(word, owner) {
        return g;
    }
    lock_contended(word, shared, owner)
}

#[cold]
fn lock_contended<'a>(word: &'a AtomicU32, shared: &Shared, owner: u32) -> LockGuard<'a> {
    let mut spins = 0u32;
    let mut started: Option<Instant> = None;
    let mut last_check: Option<Instant> = None;
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            if let Some(g) = try_lock(word, owner) {
                return g;
            }
            continue;
        }
        spins = spins.wrapping_add(1);
        if spins < 128 {
            std::hint::spin_loop();
            continue;
        }
        std::thread::yield_now();
        if spins % 64 != 0 {
            continue;
        }
        let now = Instant::now();
        let since = *started.get_or_insert(now);
        if now.duration_since(since) < CHECK_AFTER {
            continue;
        }
        if last_check.is_some_and(|t| now.duration_since(t) < RECHECK_EVERY) {
            continue;
        }
        last_check = Some(now);
        // Our own owner id in the word means another thread of this process
        // holds it: alive by definition.
        if cur != owner
            && !shared.owner_alive(cur)
            && word.compare_exchange(cur, owner, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return LockGuard { word, broken: true };
        }
    }
}
