//! RINGBUF maps (`bpf_ringbuf_output/reserve/submit/discard`) in the
//! kernel's layout, so libbpf's `ring_buffer__poll` works on our mapping.
//!
//! Map file: header page, then exactly what the kernel exposes through mmap:
//! consumer page (`consumer_pos` at 0), producer page (`producer_pos` at 0),
//! `max_entries` data bytes. Records are `{ u32 len; u32 pg_off; data }`
//! padded to 8, with `BPF_RINGBUF_BUSY_BIT` while reserved and
//! `BPF_RINGBUF_DISCARD_BIT` when discarded. The data area is mapped twice
//! back to back (by us for producers, and by the syscall server for a
//! loader — see [`Map::ringbuf_mmap_for_loader`]) so a record that wraps is
//! still contiguous in memory.
//!
//! Multi-producer: reservation happens under an owner-checked lock in the
//! producer page (as the kernel's spinlock); `pg_off` of a BUSY record holds
//! the reserving owner id (libbpf never reads `pg_off`), so a record left
//! BUSY by a SIGKILLed producer is discarded by the next producer that finds
//! the ring full. Consumer wakeups use a futex word in the producer page;
//! producers only issue `FUTEX_WAKE` when a waiter registered.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::errno::Errno;
use crate::error::Error;
use crate::layout::helper_flags::*;
use crate::lock;
use crate::map::{Map, HEADER_PAGE};
use crate::registry::Shared;
use crate::sys::{self, Mapping};

pub const BPF_RINGBUF_BUSY_BIT: u32 = 1 << 31;
pub const BPF_RINGBUF_DISCARD_BIT: u32 = 1 << 30;
pub const BPF_RINGBUF_HDR_SZ: usize = 8;

/// `bpf_ringbuf_query` flags.
pub const BPF_RB_AVAIL_DATA: u64 = 0;
pub const BPF_RB_RING_SIZE: u64 = 1;
pub const BPF_RB_CONS_POS: u64 = 2;
pub const BPF_RB_PROD_POS: u64 = 3;

/// Offsets inside the producer page (beyond `producer_pos`).
const PROD_LOCK: usize = 128;
/// Last `consumer_pos` seen by a producer (under the lock).
const PROD_CACHED_CONS: usize = 136;
const PROD_WAITERS: usize = 192;
const PROD_WAKE: usize = 196;
/// How far ahead of a new record [`RingbufView::prefetch_ahead`] fetches:
/// about 28 records of 64 bytes, a microsecond or more at full speed.
const PREFETCH_AHEAD: usize = 2048;

/// The producer/consumer view: consumer page, producer page, data twice.
pub(crate) struct RingbufView {
    mapping: Mapping,
    data_size: usize,
    page: usize,
    stall: sys::Stall,
}

/// Ring buffers mapped in this process, so `bpf_ringbuf_submit(sample)`
/// (which gets no map argument) can find its ring from the pointer.
static VIEWS: [AtomicPtr<RingbufView>; 64] = [const { AtomicPtr::new(ptr::null_mut()) }; 64];
/// One past the highest slot of `VIEWS` ever used: `bpf_ringbuf_submit`
/// scans only that far (a process maps one or two rings, not 64).
static VIEWS_USED: AtomicUsize = AtomicUsize::new(0);

/// Maps `[consumer page | producer page | data | data]` from `fd` (file
/// offset `file_off` is the consumer page). Returns the base and length.
fn map_double(fd: &OwnedFd, file_off: usize, page: usize, data: usize, prot: i32) -> std::io::Result<(NonNull<u8>, usize)> {
    let total = 2 * page + 2 * data;
    // SAFETY: reserve address space nobody else uses; checked below.
    let base = unsafe { libc::mmap(ptr::null_mut(), total, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let fail = |e| {
        // SAFETY: unmapping the reservation made above.
        unsafe { libc::munmap(base, total) };
        Err(e)
    };
    // SAFETY: MAP_FIXED over our own reservation.
    let a = unsafe { libc::mmap(base, 2 * page + data, prot, libc::MAP_SHARED | libc::MAP_FIXED, fd.as_raw_fd(), file_off as libc::off_t) };
    if a == libc::MAP_FAILED {
        return fail(std::io::Error::last_os_error());
    }
    // SAFETY: MAP_FIXED over the second half of our reservation.
    let b = unsafe {
        libc::mmap(
            (base as *mut u8).add(2 * page + data) as *mut _,
            data,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd.as_raw_fd(),
            (file_off + 2 * page) as libc::off_t,
        )
    };
    if b == libc::MAP_FAILED {
        return fail(std::io::Error::last_os_error());
    }
    Ok((NonNull::new(base as *mut u8).expect("mmap returned null"), total))
}

impl RingbufView {
    pub(crate) fn new(fd: &OwnedFd, data_size: usize) -> Result<Box<RingbufView>, Error> {
        let page = sys::page_size();
        let (base, len) = map_double(fd, HEADER_PAGE, page, data_size, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| Error::io("ringbuf", "mmap", e))?;
        // SAFETY: base..base+len is our fresh mapping, unmapped once on drop.
        let mapping = unsafe { Mapping::from_raw(base, len) };
        let view = Box::new(RingbufView { mapping, data_size, page, stall: sys::Stall::default() });
        // Producers here may then publish records without a fence (`commit`).
        sys::register_global_barrier();
        let p = &*view as *const RingbufView as *mut RingbufView;
        for (i, slot) in VIEWS.iter().enumerate() {
            if slot.compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                VIEWS_USED.fetch_max(i + 1, Ordering::AcqRel);
                return Ok(view);
            }
        }
        Err(Error::kernel("too many ring buffers mapped in this process (64)", Errno::ENOMEM))
    }

    #[inline(always)]
    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of the consumer page, 8-aligned.
        unsafe { &*(self.mapping.base() as *const AtomicU64) }
    }
    #[inline(always)]
    fn prod_u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: inside the producer page, 8-aligned.
        unsafe { &*(self.mapping.base().add(self.page + off) as *const AtomicU64) }
    }
    #[inline(always)]
    fn prod_u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: inside the producer page, 4-aligned.
        unsafe { &*(self.mapping.base().add(self.page + off) as *const AtomicU32) }
    }
    #[inline(always)]
    fn data(&self) -> *mut u8 {
        // SAFETY: the data area follows the two pages.
        unsafe { self.mapping.base().add(2 * self.page) }
    }
    #[inline(always)]
    fn hdr(&self, pos: u64) -> &AtomicU32 {
        // SAFETY: masked offset inside the (doubled) data area; 8-aligned.
        unsafe { &*(self.data().add((pos as usize) & (self.data_size - 1)) as *const AtomicU32) }
    }

    pub(crate) fn holds(&self, addr: u64, len: u64) -> bool {
        let start = self.mapping.base() as u64;
        addr >= start && addr.checked_add(len).is_some_and(|end| end <= start + self.mapping.len() as u64)
    }

    /// Bytes of this view from `addr` to its end (0: not inside).
    pub(crate) fn bytes_from(&self, addr: u64) -> u64 {
        let start = self.mapping.base() as u64;
        let end = start + self.mapping.len() as u64;
        if (start..end).contains(&addr) {
            end - addr
        } else {
            0
        }
    }

    fn contains(&self, p: *const u8) -> bool {
        let start = self.data() as usize;
        (start..start + 2 * self.data_size).contains(&(p as usize))
    }

    fn reserve(&self, shared: &Shared, size: u64) -> *mut u8 {
        let len = ((size as usize + BPF_RINGBUF_HDR_SZ + 7) & !7) as u64;
        if size > (u32::MAX / 4) as u64 || len > self.data_size as u64 {
            return ptr::null_mut();
        }
        for attempt in 0..2 {
            {
                let _g = lock::lock(self.prod_u32(PROD_LOCK), shared);
                let prod = self.prod_u64(0).load(Ordering::Relaxed);
                // consumer_pos only grows: re-read the consumer's page only
                // when the cached value says the ring is full.
                let mut cons = self.prod_u64(PROD_CACHED_CONS).load(Ordering::Relaxed);
                if prod + len - cons > self.data_size as u64 {
                    cons = self.consumer_pos().load(Ordering::Acquire);
                    self.prod_u64(PROD_CACHED_CONS).store(cons, Ordering::Relaxed);
                }
                if prod + len - cons <= self.data_size as u64 {
                    let h = self.hdr(prod);
                    // SAFETY: pg_off word follows len inside the 8-byte header.
                    unsafe { ptr::write_volatile((h as *const AtomicU32 as *mut u32).add(1), shared.owner_id()) };
                    h.store(size as u32 | BPF_RINGBUF_BUSY_BIT, Ordering::Release);
                    self.prod_u64(0).store(prod + len, Ordering::Release);
                    self.prefetch_ahead(prod, len);
                    // SAFETY: the sample follows its header inside the doubled area.
                    return unsafe { (h as *const AtomicU32 as *mut u8).add(BPF_RINGBUF_HDR_SZ) };
                }
            }
            if attempt == 0 && !self.discard_dead(shared) {
                break;
            }
        }
        ptr::null_mut()
    }

    /// Asks for the cache lines a later record will be written to,
    /// [`PREFETCH_AHEAD`] bytes past this one, in the exclusive state.
    ///
    /// Why: the consumer read those lines one lap ago, so the producer's
    /// first store to each would otherwise miss to the consumer's core (or
    /// to memory, for a ring larger than the caches), and the next
    /// reservation's locked instruction waits for every such store to
    /// complete: one transfer per record on the critical path. Fetched
    /// ahead, the transfers overlap the producer's own work: 21.5 against
    /// 19.0 M records/s with a 1 MiB ring, 15.8 against 14.9 with 64 MiB
    /// (`cargo bench -p tests --bench ringbuf`, interleaved runs). A hint
    /// only: it changes no data.
    #[inline(always)]
    fn prefetch_ahead(&self, prod: u64, len: u64) {
        let lines = (len as usize).div_ceil(64).min(4);
        let start = (prod as usize + PREFETCH_AHEAD) & !63;
        for i in 0..lines {
            let off = (start + i * 64) & (self.data_size - 1);
            // SAFETY: inside the data area; prefetchw only hints the cache
            // (CPUs without PRFCHW execute it as a NOP) and never faults.
            unsafe {
                std::arch::asm!("prefetchw [{0}]", in(reg) self.data().add(off), options(nostack, preserves_flags, readonly));
            }
        }
    }

    /// Discards BUSY records of dead producers at the consumer position: the
    /// run of BUSY records the consumer is blocked on. Records further on do
    /// not block it yet; each is handled when it reaches the head. Stops at
    /// the first committed record, so a ring that is full only because its
    /// consumer is slow costs one header read here, not a walk of the ring.
    fn discard_dead(&self, shared: &Shared) -> bool {
        let mut pos = self.consumer_pos().load(Ordering::Acquire);
        let prod = self.prod_u64(0).load(Ordering::Acquire);
        let mut fixed = false;
        while pos < prod {
            let h = self.hdr(pos);
            let len = h.load(Ordering::Acquire);
            if len & BPF_RINGBUF_BUSY_BIT == 0 {
                break;
            }
            // SAFETY: pg_off word right after len.
            let owner = unsafe { ptr::read_volatile((h as *const AtomicU32 as *const u32).add(1)) };
            if !self.stall.stuck_for_long(pos) || shared.owner_alive(owner) {
                break;
            }
            let done = (len & !BPF_RINGBUF_BUSY_BIT) | BPF_RINGBUF_DISCARD_BIT;
            fixed |= h.compare_exchange(len, done, Ordering::AcqRel, Ordering::Relaxed).is_ok();
            let sz = (len & !(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)) as u64;
            pos += (sz + BPF_RINGBUF_HDR_SZ as u64 + 7) & !7;
        }
        fixed
    }

    /// Publish (or discard) a reserved record. Returns the futex word to
    /// wake a sleeping consumer on, when one must be woken: the caller
    /// wakes it ([`WakeWord::wake`]) once the program has finished, as the
    /// kernel's irq_work does after the BPF program returns.
    fn commit(&self, sample: *mut u8, flags: u64, discard: bool) -> Option<WakeWord> {
        // SAFETY: sample came from reserve: its header precedes it.
        let h = unsafe { &*(sample.sub(BPF_RINGBUF_HDR_SZ) as *const AtomicU32) };
        let len = h.load(Ordering::Relaxed) & !BPF_RINGBUF_BUSY_BIT;
        let done = if discard { len | BPF_RINGBUF_DISCARD_BIT } else { len };
        // Publishing the record and reading PROD_WAITERS is a Dekker
        // handshake with a consumer going to sleep (`ringbuf_wait_readable`):
        // one side must not see the other's write late. A process
        // registered for the consumer's global membarrier gets its fence
        // from that barrier and publishes with a plain release store; the
        // caught-up consumer keeps reading this header, so a locked store
        // here would wait for the cache line on every record. Others fence.
        let waiters = if sys::global_barrier_registered() {
            h.store(done, Ordering::Release);
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
            self.prod_u32(PROD_WAITERS).load(Ordering::Relaxed)
        } else {
            h.store(done, Ordering::SeqCst);
            self.prod_u32(PROD_WAITERS).load(Ordering::SeqCst)
        };
        // The kernel's rule (bpf_ringbuf_commit): wake the consumer only for
        // the record it waits for next, i.e. when it has consumed everything
        // before this one; a consumer still busy with earlier records finds
        // this one without a wakeup. So a flowing ring costs no system call
        // per record, and FORCE_WAKEUP always wakes, NO_WAKEUP never.
        // Waiters first: the consumer page is the consumer's hot line, read
        // only when someone sleeps.
        if waiters == 0 {
            return None;
        }
        let rec_off = (h as *const AtomicU32 as usize - self.data() as usize) & (self.data_size - 1);
        let next_for_consumer = || (self.consumer_pos().load(Ordering::SeqCst) as usize & (self.data_size - 1)) == rec_off;
        let wake = if flags & BPF_RB_FORCE_WAKEUP != 0 {
            true
        } else {
            flags & BPF_RB_NO_WAKEUP == 0 && next_for_consumer()
        };
        if !wake {
            return None;
        }
        let word = self.prod_u32(PROD_WAKE);
        word.fetch_add(1, Ordering::SeqCst);
        Some(WakeWord(NonNull::from(word)))
    }

    fn readable(&self) -> bool {
        let cons = self.consumer_pos().load(Ordering::SeqCst);
        cons < self.prod_u64(0).load(Ordering::SeqCst) && self.hdr(cons).load(Ordering::SeqCst) & BPF_RINGBUF_BUSY_BIT == 0
    }
}

impl Drop for RingbufView {
    fn drop(&mut self) {
        let me = self as *mut RingbufView;
        for slot in VIEWS.iter() {
            let _ = slot.compare_exchange(me, ptr::null_mut(), Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

fn view_of(sample: *const u8) -> Option<&'static RingbufView> {
    for slot in &VIEWS[..VIEWS_USED.load(Ordering::Acquire)] {
        let p = slot.load(Ordering::Acquire);
        // SAFETY: registered views are alive until their Map drops, which
        // must not happen while a program still holds a reserved sample.
        if !p.is_null() && unsafe { (*p).contains(sample) } {
            // SAFETY: as above.
            return Some(unsafe { &*p });
        }
    }
    None
}

/// A consumer to wake once the program that committed a record is done
/// (the ring's `PROD_WAKE` futex word, already advanced). Valid while the
/// ring's map is: a run holds its program's maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeWord(NonNull<AtomicU32>);

impl WakeWord {
    /// `FUTEX_WAKE` the consumers sleeping on the ring.
    pub fn wake(self) {
        // SAFETY: the word lies in a mapped ring (see the type's docs).
        sys::futex_wake_all(unsafe { self.0.as_ref() });
    }

    /// The word's address, for a run's environment to keep.
    pub fn as_ptr(self) -> *const AtomicU32 {
        self.0.as_ptr()
    }

    /// # Safety
    /// `p` must come from [`WakeWord::as_ptr`] of a ring that is still mapped.
    pub unsafe fn from_ptr(p: *const AtomicU32) -> Option<WakeWord> {
        NonNull::new(p as *mut AtomicU32).map(WakeWord)
    }
}

/// `bpf_ringbuf_submit(sample, flags)`: publishes a reserved record; the
/// consumer to wake afterwards, if any.
///
/// # Safety
/// `sample` must come from [`Map::ringbuf_reserve`] and not be committed yet.
pub unsafe fn ringbuf_submit(sample: *mut u8, flags: u64) -> Option<WakeWord> {
    view_of(sample).and_then(|v| v.commit(sample, flags, false))
}

/// `bpf_ringbuf_discard(sample, flags)`: drops a reserved record; the
/// consumer to wake afterwards, if any.
///
/// # Safety
/// As [`ringbuf_submit`].
pub unsafe fn ringbuf_discard(sample: *mut u8, flags: u64) -> Option<WakeWord> {
    view_of(sample).and_then(|v| v.commit(sample, flags, true))
}

impl Map {
    fn rb(&self) -> Option<&RingbufView> {
        self.ringbuf.as_deref()
    }

    /// `bpf_ringbuf_reserve(map, size, flags)`: a pointer to `size` writable
    /// bytes, or null (full, too large, flags ≠ 0, not a ring buffer).
    pub fn ringbuf_reserve(&self, size: u64, flags: u64) -> *mut u8 {
        match self.rb() {
            Some(v) if flags == 0 => v.reserve(&self.shared, size),
            _ => ptr::null_mut(),
        }
    }

    /// `bpf_ringbuf_output(map, data, size, flags)`: 0 or -errno; a
    /// sleeping consumer is woken at once (programs use
    /// [`Map::ringbuf_output_deferred`]).
    pub fn ringbuf_output(&self, data: &[u8], flags: u64) -> i64 {
        let (r, wake) = self.ringbuf_output_deferred(data, flags);
        if let Some(w) = wake {
            w.wake();
        }
        r
    }

    /// [`Map::ringbuf_output`], leaving the consumer's wakeup to the caller.
    pub fn ringbuf_output_deferred(&self, data: &[u8], flags: u64) -> (i64, Option<WakeWord>) {
        let Some(v) = self.rb() else { return (Errno::EINVAL.as_neg(), None) };
        if flags & !(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP) != 0 {
            return (Errno::EINVAL.as_neg(), None);
        }
        let p = v.reserve(&self.shared, data.len() as u64);
        if p.is_null() {
            return (Errno::EAGAIN.as_neg(), None);
        }
        // SAFETY: p has data.len() writable bytes (contiguous thanks to the
        // double mapping).
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        (0, v.commit(p, flags, false))
    }

    /// `bpf_ringbuf_query(map, flags)`.
    pub fn ringbuf_query(&self, flags: u64) -> u64 {
        let Some(v) = self.rb() else { return 0 };
        let cons = v.consumer_pos().load(Ordering::Acquire);
        let prod = v.prod_u64(0).load(Ordering::Acquire);
        match flags {
            BPF_RB_AVAIL_DATA => prod - cons,
            BPF_RB_RING_SIZE => v.data_size as u64,
            BPF_RB_CONS_POS => cons,
            BPF_RB_PROD_POS => prod,
            _ => 0,
        }
    }

    /// Consumer side (tests, tools): calls `f` for each committed record in
    /// order, skipping discarded ones, and advances `consumer_pos` — what
    /// libbpf's `ring_buffer__poll` does. Returns the number of records.
    pub fn ringbuf_consume(&self, mut f: impl FnMut(&[u8])) -> usize {
        let Some(v) = self.rb() else { return 0 };
        let mut n = 0;
        loop {
            let cons = v.consumer_pos().load(Ordering::Acquire);
            let prod = v.prod_u64(0).load(Ordering::Acquire);
            if cons >= prod {
                break;
            }
            let len = v.hdr(cons).load(Ordering::Acquire);
            if len & BPF_RINGBUF_BUSY_BIT != 0 {
                if !v.discard_dead(&self.shared) {
                    break;
                }
                continue;
            }
            let size = (len & !BPF_RINGBUF_DISCARD_BIT) as usize;
            if len & BPF_RINGBUF_DISCARD_BIT == 0 {
                // SAFETY: committed record of `size` bytes after its header,
                // contiguous in the double mapping.
                let data = unsafe {
                    std::slice::from_raw_parts((v.hdr(cons) as *const AtomicU32 as *const u8).add(BPF_RINGBUF_HDR_SZ), size)
                };
                f(data);
                n += 1;
            }
            v.consumer_pos().store(cons + ((size + BPF_RINGBUF_HDR_SZ + 7) & !7) as u64, Ordering::Release);
        }
        n
    }

    /// Blocks until a committed record is available or `timeout` passes.
    pub fn ringbuf_wait_readable(&self, timeout: Option<Duration>) -> bool {
        let Some(v) = self.rb() else { return false };
        if v.readable() {
            return true;
        }
        v.prod_u32(PROD_WAITERS).fetch_add(1, Ordering::SeqCst);
        // The slow side of the handshake in `commit`: every producer that
        // publishes without a fence has its record visible now, and reads
        // our registration in its next commit.
        sys::global_barrier();
        let seq = v.prod_u32(PROD_WAKE).load(Ordering::SeqCst);
        if !v.readable() {
            sys::futex_wait(v.prod_u32(PROD_WAKE), seq, timeout);
        }
        v.prod_u32(PROD_WAITERS).fetch_sub(1, Ordering::SeqCst);
        v.readable()
    }

    /// What the syscall server does for a loader's `mmap(ringbuf_map_fd)`,
    /// with the kernel's rules (`ringbuf_map_mmap_kern`). The kernel shows
    /// the ring as `[consumer page | producer page | data | data]`, the data
    /// area twice so a record that wraps is contiguous. libbpf maps the
    /// consumer page read-write (`offset` 0, one page) and the rest
    /// read-only (`offset` = one page, `page + 2 * max_entries` bytes); any
    /// page-aligned range inside the layout may be mapped read-only.
    /// - a writable mapping of anything but exactly the consumer page: EPERM;
    /// - a range beyond the layout, or an unaligned offset: EINVAL.
    ///
    /// Read-only ranges are mapped from a read-only descriptor, so a later
    /// `mprotect(PROT_WRITE)` fails (EACCES) as it does on the kernel's.
    /// `fixed` is the caller's `MAP_FIXED` address, if any. Returns the
    /// address; the loader later `munmap`s it normally.
    pub fn ringbuf_mmap_for_loader(
        &self,
        offset: usize,
        len: usize,
        prot: i32,
        fixed: Option<*mut u8>,
    ) -> Result<*mut u8, Errno> {
        let Some(v) = self.rb() else { return Err(Errno::EINVAL) };
        let page = v.page;
        let once = 2 * page + v.data_size; // virtual bytes backed by the file once
        let layout = once + v.data_size;
        let len = len.div_ceil(page) * page;
        if len == 0 || offset % page != 0 {
            return Err(Errno::EINVAL);
        }
        if prot & libc::PROT_WRITE != 0 && (offset != 0 || len != page) {
            return Err(Errno(libc::EPERM));
        }
        if offset.checked_add(len).is_none_or(|end| end > layout) {
            return Err(Errno::EINVAL);
        }
        let os = |e: std::io::Error| Errno(e.raw_os_error().unwrap_or(libc::ENOMEM));
        let path = self.registry().map_path(self.id);
        let mode = if prot & libc::PROT_WRITE != 0 { libc::O_RDWR } else { libc::O_RDONLY };
        let fd = sys::open(&path, mode, 0).map_err(os)?;
        let (base, reserved) = match fixed {
            Some(addr) => (addr as *mut libc::c_void, false),
            None => {
                // SAFETY: reserve address space nobody else uses; checked below.
                let b = unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
                if b == libc::MAP_FAILED {
                    return Err(os(std::io::Error::last_os_error()));
                }
                (b, true)
            }
        };
        // The pieces: [offset, once) from file offset HEADER_PAGE + v, and
        // [once, layout) (the second copy of the data) from the data again.
        let end = offset + len;
        let mut pieces = Vec::with_capacity(2);
        if offset < once {
            pieces.push((offset, end.min(once), HEADER_PAGE + offset));
        }
        if end > once {
            let from = offset.max(once);
            pieces.push((from, end, HEADER_PAGE + 2 * page + (from - once)));
        }
        for (from, to, file_off) in pieces {
            // SAFETY: MAP_FIXED inside our reservation, or at the caller's
            // own MAP_FIXED address (the caller asked to replace that range).
            let p = unsafe {
                libc::mmap(
                    (base as *mut u8).add(from - offset).cast(),
                    to - from,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    file_off as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                let e = os(std::io::Error::last_os_error());
                if reserved {
                    // SAFETY: unmapping our own reservation.
                    unsafe { libc::munmap(base, len) };
                }
                return Err(e);
            }
        }
        Ok(base as *mut u8)
    }
}
