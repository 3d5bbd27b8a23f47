//! HASH, PERCPU_HASH, LRU_HASH and LRU_PERCPU_HASH in shared memory.
//!
//! Data area: `n_buckets` (power of two ≥ max_entries) buckets of 16 bytes,
//! then a pool of `max_entries + spare` fixed-size elements:
//!
//! ```text
//! bucket:  lock u32 | head u32 | pending_op u32 | pending_elem u32
//! element: next u32 | hash u32 | state u32 | lru_ref u32 | freed_epoch u64 | key (8-aligned) | value(s) (8-aligned)
//! ```
//!
//! - **Lookups are lock-free**: hash, walk the bucket's chain comparing
//!   hash then key. Chains end in a *nulls marker* (`NULLS | bucket`), as in
//!   the kernel's `hlist_nulls`: a walker that followed a recycled element
//!   into another chain notices the foreign marker and restarts.
//! - **Writers** (insert, update, delete) take the bucket's owner-checked
//!   lock ([`crate::lock`]) for a bounded critical section, as the kernel
//!   takes its bucket spinlock; an update of an existing key copies the
//!   value in place under that lock (so an update never lands in an element
//!   that was deleted and recycled meanwhile).
//! - **Element reuse waits for readers** ([`crate::epoch`]): a freed element
//!   is stamped with the global epoch and only reallocated once every read
//!   section that could have reached it has ended. Programs run inside a
//!   section taken by the agent, so a value pointer a program holds keeps
//!   belonging to its key (or to nobody, once deleted) for the whole run.
//!   The pool has spare elements beyond `max_entries` for elements waiting
//!   out readers.
//! - **Crash repair**: before changing a chain, the writer records its
//!   operation in the bucket (`pending_op`/`pending_elem`) and marks a
//!   reserved element `RESERVED | bucket`. Whoever breaks the lock of a dead
//!   holder replays that record (`repair_bucket`), so a SIGKILL at any
//!   instruction leaves no half-inserted element, no leaked element and at
//!   worst an element count one too low (which the spare pool absorbs).
//! - LRU maps never fail with E2BIG: when full, an insert evicts a victim
//!   chosen by a CLOCK sweep over the pool (reference bit set on lookup),
//!   the same approximation of LRU the kernel uses.

use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::errno::Errno;
use crate::layout::{round_up8, update_flags::*};
use crate::lock;
use crate::map::Map;

pub(crate) const BUCKET_SIZE: usize = 16;
pub(crate) const ELEM_HEADER: usize = 24;

const NULLS: u32 = 1 << 31;
const STATE_UNUSED: u32 = 0;
const STATE_LIVE: u32 = 1;
const STATE_FREE_TAG: u32 = 0x4000_0000;
const STATE_RESERVED_TAG: u32 = 0x8000_0000;
const SEQ_MASK: u32 = 0x3fff_ffff;

const OP_NONE: u32 = 0;
const OP_INSERT: u32 = 1;
const OP_DELETE: u32 = 2;

/// Spare pool elements for a map of `max_entries`: room for deleted
/// elements that wait out concurrent readers before reuse.
pub(crate) fn spare_for(max_entries: u32) -> u32 {
    (max_entries / 4).clamp(16, 1 << 16)
}

#[repr(C)]
struct Bucket {
    lock: AtomicU32,
    head: AtomicU32,
    pending_op: AtomicU32,
    pending_elem: AtomicU32,
}

#[repr(C)]
struct ElemHeader {
    next: AtomicU32,
    hash: AtomicU32,
    state: AtomicU32,
    lru_ref: AtomicU32,
    /// Epoch in which the element was freed (valid while FREE).
    freed_epoch: std::sync::atomic::AtomicU64,
}

/// Why an insert could not proceed.
enum Insert {
    /// `max_entries` reached (or LRU eviction impossible): final.
    Full(Errno),
    /// Only elements that readers may still hold are free: retry later.
    WaitForReaders,
}

/// How the caller's value buffer is laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueSrc {
    /// Syscall view: every CPU's value, `value_stride` apart.
    AllCpus,
    /// Program view: one value, for this CPU (an index, or `cpu::CURRENT`).
    OneCpu(u32),
}

/// Copies a value, with fast paths for the common 8- and 4-byte values
/// (counters) that avoid a `memcpy` call.
///
/// # Safety
/// `src`/`dst` valid for `len` bytes; `dst` is 8-aligned (element values are).
#[inline(always)]
unsafe fn copy_value(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: per the contract.
    unsafe {
        match len {
            8 => ptr::write_volatile(dst as *mut u64, ptr::read_unaligned(src as *const u64)),
            4 => ptr::write_volatile(dst as *mut u32, ptr::read_unaligned(src as *const u32)),
            _ => ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

fn sub_saturating(count: &AtomicU32) {
    let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
}

#[inline(always)]
fn mix(h: u64) -> u64 {
    h.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Seeded hash of `len` bytes (keys of any size, bloom values, stacks).
///
/// # Safety
/// `p` points to `len` readable bytes.
#[inline]
pub(crate) unsafe fn hash_bytes(p: *const u8, len: usize, seed: u64) -> u64 {
    let mut h = seed ^ (len as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len.
        h = mix(h ^ unsafe { ptr::read_unaligned(p.add(i) as *const u64) });
        h ^= h >> 29;
        i += 8;
    }
    if i < len {
        let mut tail = 0u64;
        // SAFETY: copies the remaining len - i (< 8) bytes.
        unsafe { ptr::copy_nonoverlapping(p.add(i), &mut tail as *mut u64 as *mut u8, len - i) };
        h = mix(h ^ tail);
        h ^= h >> 29;
    }
    let h = mix(h);
    h ^ (h >> 32)
}

impl Map {
    #[inline(always)]
    fn bucket(&self, b: u32) -> &Bucket {
        // SAFETY: b <= bucket_mask < n_buckets; the bucket array lies inside
        // the mapping (geometry computed at creation, checked at open).
        unsafe { &*(self.buckets.add(b as usize * BUCKET_SIZE) as *const Bucket) }
    }

    #[inline(always)]
    fn elem_ptr(&self, idx: u32) -> *mut u8 {
        // SAFETY: callers pass idx < pool_size (validated for indices read
        // from shared memory), so the element lies inside the mapping.
        unsafe { self.elems.add(idx as usize * self.elem_size) }
    }

    #[inline(always)]
    fn elem(&self, idx: u32) -> &ElemHeader {
        // SAFETY: see elem_ptr; elements are 8-aligned.
        unsafe { &*(self.elem_ptr(idx) as *const ElemHeader) }
    }

    #[inline(always)]
    fn elem_key(&self, idx: u32) -> *mut u8 {
        // SAFETY: key follows the element header inside the element.
        unsafe { self.elem_ptr(idx).add(ELEM_HEADER) }
    }

    #[inline(always)]
    pub(crate) fn elem_value(&self, idx: u32) -> *mut u8 {
        // SAFETY: values follow the 8-aligned key inside the element.
        unsafe { self.elem_ptr(idx).add(ELEM_HEADER + round_up8(self.key_size as usize)) }
    }

    /// Hash of a key (per-map seed, so chains differ between maps/runs).
    #[inline(always)]
    pub(crate) fn hash_key(&self, key: *const u8) -> u32 {
        let n = self.key_size as usize;
        let h = if n == 8 {
            // SAFETY: caller guarantees key_size readable bytes.
            mix(unsafe { ptr::read_unaligned(key as *const u64) } ^ self.seed)
        } else if n == 4 {
            // SAFETY: as above.
            mix(unsafe { ptr::read_unaligned(key as *const u32) } as u64 ^ self.seed)
        } else {
            // SAFETY: caller guarantees key_size readable bytes.
            unsafe { hash_bytes(key, n, self.seed) }
        };
        (h >> 32) as u32
    }

    #[inline(always)]
    fn key_eq(&self, idx: u32, key: *const u8) -> bool {
        let k = self.elem_key(idx);
        let n = self.key_size as usize;
        // SAFETY: both sides hold key_size bytes (the element key is
        // 8-aligned); keys may change under us if the element is recycled,
        // which only yields a wrong "not equal" (see module docs).
        unsafe {
            if n == 8 {
                ptr::read_unaligned(key as *const u64) == ptr::read_volatile(k as *const u64)
            } else if n == 4 {
                ptr::read_unaligned(key as *const u32) == ptr::read_volatile(k as *const u32)
            } else {
                std::slice::from_raw_parts(key, n) == std::slice::from_raw_parts(k as *const u8, n)
            }
        }
    }

    pub(crate) fn hash_init(&self) {
        for b in 0..=self.bucket_mask {
            self.bucket(b).head.store(NULLS | b, Ordering::Relaxed);
        }
    }

    /// Lock-free search; returns the element index.
    #[inline(always)]
    pub(crate) fn find(&self, key: *const u8, h: u32) -> Option<u32> {
        let b = h & self.bucket_mask;
        let bucket = self.bucket(b);
        'restart: for _ in 0..4 {
            let mut cur = bucket.head.load(Ordering::Acquire);
            let mut steps = 0u32;
            while cur & NULLS == 0 {
                if cur >= self.pool_size || steps > self.pool_size {
                    // Only possible while racing with recycling: retry.
                    continue 'restart;
                }
                let e = self.elem(cur);
                if e.hash.load(Ordering::Relaxed) == h && self.key_eq(cur, key) {
                    return Some(cur);
                }
                cur = e.next.load(Ordering::Acquire);
                steps += 1;
            }
            if cur == (NULLS | b) {
                return None;
            }
        }
        None
    }

    /// Byte offset of `cpu`'s value in a per-CPU element (`cpu` may be
    /// `cpu::CURRENT`).
    #[inline(always)]
    fn cpu_value_offset(&self, cpu: u32) -> usize {
        crate::cpu::slot_index(cpu, self.ncpus) as usize * self.value_stride
    }

    /// Program-view lookup (per-CPU maps: `cpu`'s value).
    ///
    /// # Safety
    /// `key` points to `key_size` readable bytes.
    #[inline(always)]
    pub(crate) unsafe fn hash_prog_lookup(&self, key: *const u8, cpu: u32) -> *mut u8 {
        let h = self.hash_key(key);
        match self.find(key, h) {
            Some(idx) => {
                if self.lru {
                    let r = &self.elem(idx).lru_ref;
                    if r.load(Ordering::Relaxed) == 0 {
                        r.store(1, Ordering::Relaxed);
                    }
                }
                let v = self.elem_value(idx);
                if self.percpu {
                    // SAFETY: the offset is < ncpus * stride, inside the element.
                    unsafe { v.add(self.cpu_value_offset(cpu)) }
                } else {
                    v
                }
            }
            None => ptr::null_mut(),
        }
    }

    pub(crate) fn hash_lookup_copy(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        self.check_key(key)?;
        if out.len() != self.syscall_value_size() {
            return Err(Errno::EINVAL);
        }
        let _rs = crate::epoch::enter(&self.shared);
        let h = self.hash_key(key.as_ptr());
        let idx = self.find(key.as_ptr(), h).ok_or(Errno::ENOENT)?;
        self.copy_value_out(idx, out);
        Ok(())
    }

    pub(crate) fn copy_value_out(&self, idx: u32, out: &mut [u8]) {
        let v = self.elem_value(idx);
        if self.percpu {
            for cpu in 0..self.ncpus as usize {
                let off = cpu * self.value_stride;
                // Like the kernel (copy_map_value_long), each CPU's slot is
                // copied with its padding up to the 8-byte stride.
                // SAFETY: out holds ncpus * stride bytes; the element holds
                // ncpus slots of stride bytes.
                unsafe { ptr::copy_nonoverlapping(v.add(off), out.as_mut_ptr().add(off), self.value_stride) };
            }
        } else {
            // SAFETY: out holds value_size bytes (checked by callers).
            unsafe { ptr::copy_nonoverlapping(v, out.as_mut_ptr(), self.value_size as usize) };
        }
    }

    /// Writes a value into element `idx`.
    ///
    /// # Safety
    /// `value` holds the bytes `src` implies.
    #[inline(always)]
    unsafe fn write_value(&self, idx: u32, value: *const u8, src: ValueSrc, fresh: bool) {
        let v = self.elem_value(idx);
        let vs = self.value_size as usize;
        // SAFETY (whole block): offsets stay within ncpus * stride bytes of
        // the element's value area; `value` is readable per the contract.
        unsafe {
            if !self.percpu {
                copy_value(value, v, vs);
                return;
            }
            match src {
                ValueSrc::AllCpus => {
                    // Whole strides, padding included, as the kernel does.
                    ptr::copy_nonoverlapping(value, v, self.value_stride * self.ncpus as usize);
                }
                ValueSrc::OneCpu(cpu) => {
                    let slot = self.cpu_value_offset(cpu);
                    if fresh {
                        ptr::write_bytes(v, 0, self.value_stride * self.ncpus as usize);
                    }
                    copy_value(value, v.add(slot), vs);
                }
            }
        }
    }

    pub(crate) fn hash_update_sys(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
        self.check_key(key)?;
        self.check_value(value)?;
        // SAFETY: sizes checked above.
        unsafe { self.hash_update(key.as_ptr(), value.as_ptr(), flags, ValueSrc::AllCpus) }
    }

    /// # Safety
    /// `key`/`value` point to `key_size`/`value_size` readable bytes.
    #[inline]
    pub(crate) unsafe fn hash_prog_update(&self, key: *const u8, value: *const u8, flags: u64, cpu: u32) -> Result<(), Errno> {
        // SAFETY: forwarded caller contract.
        unsafe { self.hash_update(key, value, flags, ValueSrc::OneCpu(cpu)) }
    }

    #[inline(always)]
    pub(crate) unsafe fn hash_update(&self, key: *const u8, value: *const u8, flags: u64, src: ValueSrc) -> Result<(), Errno> {
        if flags > BPF_EXIST {
            // BPF_F_LOCK needs a bpf_spin_lock in the value (BTF): unsupported.
            return Err(Errno::EINVAL);
        }
        let h = self.hash_key(key);
        let b = h & self.bucket_mask;
        let bucket = self.bucket(b);
        let mut deadline: Option<std::time::Instant> = None;
        loop {
            let guard = lock::lock(&bucket.lock, &self.shared);
            if guard.broken {
                self.repair_bucket(b);
            }
            // The chain cannot change under the lock, and elements on it
            // cannot be freed, so this walk is exact.
            if let Some(idx) = self.find(key, h) {
                if flags == BPF_NOEXIST {
                    return Err(Errno::EEXIST);
                }
                if self.lru {
                    self.elem(idx).lru_ref.store(1, Ordering::Relaxed);
                }
                // SAFETY: forwarded caller contract.
                unsafe { self.write_value(idx, value, src, false) };
                return Ok(());
            }
            if flags == BPF_EXIST {
                return Err(Errno::ENOENT);
            }
            // SAFETY: forwarded caller contract.
            match unsafe { self.insert_locked(b, key, value, h, src) } {
                Err(Insert::Full(e)) => return Err(e),
                Err(Insert::WaitForReaders) => {}
                Ok(()) => return Ok(()),
            }
            drop(guard);
            // Every spare element still waits for a reader (one preempted
            // inside a long section). The program view fails at once like a
            // kernel allocation failure; the syscall view waits (lock
            // released) for readers to move on, up to a second.
            if matches!(src, ValueSrc::OneCpu(_)) {
                return Err(if self.lru { Errno::ENOMEM } else { Errno::E2BIG });
            }
            let now = std::time::Instant::now();
            let d = *deadline.get_or_insert(now + std::time::Duration::from_secs(1));
            if now >= d {
                return Err(Errno::E2BIG);
            }
            std::thread::yield_now();
        }
    }

    /// Inserts a new element into bucket `b` (lock held, key absent).
    #[inline(never)]
    unsafe fn insert_locked(&self, b: u32, key: *const u8, value: *const u8, h: u32, src: ValueSrc) -> Result<(), Insert> {
        let bucket = self.bucket(b);
        let hdr = self.header();
        if self.lru && hdr.count.0.load(Ordering::Acquire) >= self.max_entries {
            // Evict before recording the insert, so a victim in our own
            // bucket can be removed as a complete operation of its own.
            self.lru_evict(b, true);
        }
        bucket.pending_op.store(OP_INSERT, Ordering::Release);
        let count = hdr.count.0.fetch_add(1, Ordering::AcqRel);
        if count >= self.max_entries && !(self.lru && self.lru_evict(b, false)) {
            sub_saturating(&hdr.count.0);
            bucket.pending_op.store(OP_NONE, Ordering::Release);
            return Err(Insert::Full(if self.lru { Errno::ENOMEM } else { Errno::E2BIG }));
        }
        let Some(idx) = self.reserve_elem(b) else {
            sub_saturating(&hdr.count.0);
            bucket.pending_op.store(OP_NONE, Ordering::Release);
            return Err(Insert::WaitForReaders);
        };
        let e = self.elem(idx);
        e.hash.store(h, Ordering::Relaxed);
        e.lru_ref.store(0, Ordering::Relaxed);
        // SAFETY: key_size bytes from the caller into the reserved element's
        // key area, which nobody else writes while it is RESERVED.
        unsafe { ptr::copy_nonoverlapping(key, self.elem_key(idx), self.key_size as usize) };
        // SAFETY: forwarded caller contract.
        unsafe { self.write_value(idx, value, src, true) };
        e.next.store(bucket.head.load(Ordering::Relaxed), Ordering::Relaxed);
        bucket.head.store(idx, Ordering::Release);
        e.state.store(STATE_LIVE, Ordering::Release);
        bucket.pending_op.store(OP_NONE, Ordering::Release);
        Ok(())
    }

    /// Claims a free element that no reader can still hold: first with the
    /// cached reclamation bound, then after rescanning the reader slots,
    /// then after clearing slots of dead processes.
    fn reserve_elem(&self, b: u32) -> Option<u32> {
        let hdr = self.header();
        let pool = self.pool_size;
        let mut safe = crate::epoch::safe_below(&self.shared);
        // Defence in depth for embedders that run programs outside read
        // sections: an element also waits until `spare / 2` more elements
        // were freed (registry-wide) after it, which still leaves half the
        // spare pool for reuse.
        let hold = (hdr.spare / 2) as u64;
        let mut i = hdr.alloc_cursor.0.load(Ordering::Relaxed) % pool;
        for pass in 0..3 {
            if pass > 0 {
                safe = crate::epoch::recompute_safe_below(&self.shared, pass == 2);
            }
            let mut waiting = 0u32;
            for _ in 0..pool {
                let e = self.elem(i);
                let st = e.state.load(Ordering::Acquire);
                let eligible = st == STATE_UNUSED
                    || (st & !SEQ_MASK == STATE_FREE_TAG && {
                        let reusable = e.freed_epoch.load(Ordering::Acquire).saturating_add(hold) < safe;
                        waiting += !reusable as u32;
                        reusable
                    });
                if eligible && e.state.compare_exchange(st, STATE_RESERVED_TAG | b, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    hdr.alloc_cursor.0.store(if i + 1 == pool { 0 } else { i + 1 }, Ordering::Relaxed);
                    return Some(i);
                }
                i = if i + 1 == pool { 0 } else { i + 1 };
                // Many freed elements still waiting: refresh the bound early.
                if pass == 0 && waiting > 32 {
                    break;
                }
            }
        }
        None
    }

    fn free_elem(&self, idx: u32) {
        let stamp = crate::epoch::retire_stamp(&self.shared);
        let e = self.elem(idx);
        e.freed_epoch.store(stamp, Ordering::Release);
        e.state.store(STATE_FREE_TAG | (stamp as u32 & SEQ_MASK), Ordering::Release);
    }

    /// Unlinks `idx` from bucket `b`'s chain (lock held). Returns whether it
    /// was found.
    fn unlink(&self, b: u32, idx: u32) -> bool {
        let bucket = self.bucket(b);
        let mut link: &AtomicU32 = &bucket.head;
        let mut steps = 0;
        loop {
            let cur = link.load(Ordering::Acquire);
            if cur & NULLS != 0 || cur >= self.pool_size || steps > self.pool_size {
                return false;
            }
            if cur == idx {
                link.store(self.elem(idx).next.load(Ordering::Acquire), Ordering::Release);
                return true;
            }
            link = &self.elem(cur).next;
            steps += 1;
        }
    }

    fn chain_contains(&self, b: u32, idx: u32) -> bool {
        let mut cur = self.bucket(b).head.load(Ordering::Acquire);
        let mut steps = 0;
        while cur & NULLS == 0 && cur < self.pool_size && steps <= self.pool_size {
            if cur == idx {
                return true;
            }
            cur = self.elem(cur).next.load(Ordering::Acquire);
            steps += 1;
        }
        false
    }

    /// Removes element `idx` from bucket `b` (lock held) with crash record.
    fn remove_locked(&self, b: u32, idx: u32) {
        let bucket = self.bucket(b);
        bucket.pending_elem.store(idx, Ordering::Release);
        bucket.pending_op.store(OP_DELETE, Ordering::Release);
        self.unlink(b, idx);
        // Saturating: after crash repairs the count may be low by one.
        sub_saturating(&self.header().count.0);
        self.free_elem(idx);
        bucket.pending_op.store(OP_NONE, Ordering::Release);
    }

    /// Replays the interrupted operation of a dead lock holder (lock held).
    fn repair_bucket(&self, b: u32) {
        self.header().lock_breaks.0.fetch_add(1, Ordering::Relaxed);
        let bucket = self.bucket(b);
        let dec_count = || sub_saturating(&self.header().count.0);
        // A chain cut by a corrupt link is truncated (cannot happen with
        // single-store updates, but never trust shared memory blindly).
        let mut link: &AtomicU32 = &bucket.head;
        let mut steps = 0;
        loop {
            let cur = link.load(Ordering::Acquire);
            if cur & NULLS != 0 {
                if cur != (NULLS | b) {
                    link.store(NULLS | b, Ordering::Release);
                }
                break;
            }
            if cur >= self.pool_size || steps > self.pool_size {
                link.store(NULLS | b, Ordering::Release);
                break;
            }
            link = &self.elem(cur).next;
            steps += 1;
        }
        match bucket.pending_op.load(Ordering::Acquire) {
            OP_INSERT => {
                let mut inserted = false;
                for i in 0..self.pool_size {
                    let st = &self.elem(i).state;
                    if st.load(Ordering::Acquire) == (STATE_RESERVED_TAG | b) {
                        if self.chain_contains(b, i) {
                            st.store(STATE_LIVE, Ordering::Release);
                            inserted = true;
                        } else {
                            self.free_elem(i);
                        }
                    }
                }
                if !inserted {
                    dec_count();
                }
            }
            OP_DELETE => {
                let idx = bucket.pending_elem.load(Ordering::Acquire);
                // Still linked, or unlinked but not yet freed: finish it.
                // LIVE alone does not mean "not yet freed": if the holder died
                // after free_elem, the element may already have been reused
                // by an insert into another bucket (that needs no lock of
                // ours) and be LIVE on that chain. It can never have been
                // reinserted here, as the dead holder kept this bucket locked,
                // so LIVE with a hash of this bucket, read after the state
                // (whose Release store publishes the reuser's hash), is ours.
                if idx < self.pool_size
                    && (self.unlink(b, idx) || {
                        let e = self.elem(idx);
                        e.state.load(Ordering::Acquire) == STATE_LIVE && e.hash.load(Ordering::Relaxed) & self.bucket_mask == b
                    })
                {
                    dec_count();
                    self.free_elem(idx);
                }
            }
            _ => {}
        }
        bucket.pending_op.store(OP_NONE, Ordering::Release);
    }

    /// CLOCK eviction for LRU maps, called with bucket `own` locked. A
    /// victim in `own` is only taken when `allow_own` (no operation of ours
    /// is pending on that bucket); others are taken with try-lock.
    fn lru_evict(&self, own: u32, allow_own: bool) -> bool {
        let hdr = self.header();
        let pool = self.pool_size;
        for _ in 0..2 * pool {
            let i = hdr.lru_hand.0.fetch_add(1, Ordering::Relaxed) % pool;
            let e = self.elem(i);
            if e.state.load(Ordering::Acquire) != STATE_LIVE {
                continue;
            }
            if e.lru_ref.load(Ordering::Relaxed) != 0 {
                e.lru_ref.store(0, Ordering::Relaxed);
                continue;
            }
            let b = e.hash.load(Ordering::Relaxed) & self.bucket_mask;
            if b == own {
                if allow_own && self.chain_contains(b, i) {
                    self.remove_locked(b, i);
                    return true;
                }
                continue;
            }
            let owner = self.shared.owner_id();
            let Some(_g) = lock::try_lock(&self.bucket(b).lock, owner) else { continue };
            if e.state.load(Ordering::Acquire) == STATE_LIVE && self.chain_contains(b, i) {
                self.remove_locked(b, i);
                return true;
            }
        }
        false
    }

    /// Deletes `key` (syscall and program views).
    pub(crate) fn hash_delete(&self, key: *const u8) -> Result<(), Errno> {
        let h = self.hash_key(key);
        let b = h & self.bucket_mask;
        let guard = lock::lock(&self.bucket(b).lock, &self.shared);
        if guard.broken {
            self.repair_bucket(b);
        }
        let idx = self.find(key, h).ok_or(Errno::ENOENT)?;
        self.remove_locked(b, idx);
        Ok(())
    }

    pub(crate) fn hash_lookup_and_delete(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        self.check_key(key)?;
        if out.len() != self.syscall_value_size() {
            return Err(Errno::EINVAL);
        }
        let h = self.hash_key(key.as_ptr());
        let b = h & self.bucket_mask;
        let guard = lock::lock(&self.bucket(b).lock, &self.shared);
        if guard.broken {
            self.repair_bucket(b);
        }
        let idx = self.find(key.as_ptr(), h).ok_or(Errno::ENOENT)?;
        self.copy_value_out(idx, out);
        self.remove_locked(b, idx);
        Ok(())
    }

    /// Copies the key of the first live element at or after bucket `from`.
    fn first_key_from(&self, from: u32, next: &mut [u8]) -> Result<(), Errno> {
        for b in from..=self.bucket_mask {
            let cur = self.bucket(b).head.load(Ordering::Acquire);
            if cur & NULLS == 0 && cur < self.pool_size {
                // SAFETY: next holds key_size bytes (checked by the caller).
                unsafe { ptr::copy_nonoverlapping(self.elem_key(cur), next.as_mut_ptr(), self.key_size as usize) };
                return Ok(());
            }
        }
        Err(Errno::ENOENT)
    }

    pub(crate) fn hash_get_next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
        let _rs = crate::epoch::enter(&self.shared);
        let Some(key) = key else { return self.first_key_from(0, next) };
        let h = self.hash_key(key.as_ptr());
        let b = h & self.bucket_mask;
        let Some(idx) = self.find(key.as_ptr(), h) else { return self.first_key_from(0, next) };
        let n = self.elem(idx).next.load(Ordering::Acquire);
        if n & NULLS == 0 && n < self.pool_size && self.elem(n).hash.load(Ordering::Relaxed) & self.bucket_mask == b {
            // SAFETY: next holds key_size bytes.
            unsafe { ptr::copy_nonoverlapping(self.elem_key(n), next.as_mut_ptr(), self.key_size as usize) };
            return Ok(());
        }
        if b == self.bucket_mask {
            return Err(Errno::ENOENT);
        }
        self.first_key_from(b + 1, next)
    }

    /// Breaks and repairs every bucket lock held by a dead process. Returns
    /// how many were repaired. Waiters do this on their own after a timeout;
    /// this lets a reaper (or a test) do it eagerly.
    pub(crate) fn hash_recover(&self) -> u32 {
        let mut repaired = 0;
        for b in 0..=self.bucket_mask {
            let word = &self.bucket(b).lock;
            let holder = word.load(Ordering::Acquire);
            if holder == 0 || self.shared.owner_alive(holder) {
                continue;
            }
            let me = self.shared.owner_id();
            if word.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                self.repair_bucket(b);
                word.store(0, Ordering::Release);
                repaired += 1;
            }
        }
        repaired
    }

    /// Full consistency check of a hash-family map (slow; meant for tests,
    /// tools and after crashes, with no concurrent writers): every chain is
    /// well formed, every LIVE element is reachable exactly once from the
    /// right bucket, no element is left RESERVED or half-deleted, and the
    /// count is not above the number of reachable elements.
    pub(crate) fn hash_verify(&self) -> Result<HashStats, String> {
        let mut seen = vec![false; self.pool_size as usize];
        let mut reachable = 0u32;
        for b in 0..=self.bucket_mask {
            let bucket = self.bucket(b);
            if bucket.pending_op.load(Ordering::Acquire) != OP_NONE && bucket.lock.load(Ordering::Acquire) == 0 {
                return Err(format!("bucket {b}: pending operation left behind"));
            }
            let mut cur = bucket.head.load(Ordering::Acquire);
            while cur & NULLS == 0 {
                if cur >= self.pool_size {
                    return Err(format!("bucket {b}: link to element {cur} out of range"));
                }
                if std::mem::replace(&mut seen[cur as usize], true) {
                    return Err(format!("bucket {b}: element {cur} linked twice (cycle or shared)"));
                }
                let e = self.elem(cur);
                if e.state.load(Ordering::Acquire) != STATE_LIVE {
                    return Err(format!("bucket {b}: linked element {cur} is not live"));
                }
                if e.hash.load(Ordering::Relaxed) & self.bucket_mask != b {
                    return Err(format!("bucket {b}: element {cur} belongs to another bucket"));
                }
                reachable += 1;
                cur = e.next.load(Ordering::Acquire);
            }
            if cur != (NULLS | b) {
                return Err(format!("bucket {b}: chain ends in a foreign nulls marker {cur:#x}"));
            }
        }
        let mut free = 0;
        for i in 0..self.pool_size {
            let st = self.elem(i).state.load(Ordering::Acquire);
            match st {
                STATE_LIVE if !seen[i as usize] => return Err(format!("element {i} is live but unreachable (leaked)")),
                STATE_LIVE => {}
                s if s & STATE_RESERVED_TAG != 0 => return Err(format!("element {i} left reserved")),
                _ => free += 1,
            }
        }
        let count = self.header().count.0.load(Ordering::Acquire);
        if count > reachable {
            return Err(format!("count {count} > reachable elements {reachable}"));
        }
        Ok(HashStats { reachable, count, free })
    }
}

/// Result of [`Map::verify`] for hash-family maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashStats {
    /// Live elements reachable from the buckets.
    pub reachable: u32,
    /// The element counter used for `max_entries` (may be lower than
    /// `reachable` by the number of crash repairs that hit a one-store window).
    pub count: u32,
    /// Free elements in the pool (including those waiting out readers).
    pub free: u32,
}
