//! Perf rings (what `perf_event_open` + `mmap` give a loader for
//! `PERF_COUNT_SW_BPF_OUTPUT`) and `bpf_perf_event_output` through a
//! PERF_EVENT_ARRAY map.
//!
//! A ring file is laid out exactly like the kernel's perf mmap: page 0 is a
//! `struct perf_event_mmap_page` (`data_head` at 1024, `data_tail` at 1032,
//! `data_offset` at 1040, `data_size` at 1048), then `2^n` data pages
//! (bpftrace maps 1 + 64 pages). The syscall server returns an fd to this
//! file from `perf_event_open`, so the loader's `mmap` and its reader
//! (libbpf `perf_buffer`, bcc `perf_reader`) work unchanged.
//!
//! Unlike the kernel (one writer per CPU ring), writers here are any thread
//! of any traced process. Multi-producer protocol, with our own state kept in
//! the reserved bytes 96..1024 of page 0 (which consumers never touch):
//!
//! 1. Reserve under a short owner-checked lock: check space against
//!    `data_tail`, write the record header with an *incomplete* type
//!    (`INCOMPLETE | owner id`), bump `reserve_head`. If a previous writer
//!    found the ring full, a `PERF_RECORD_LOST` record is reserved first.
//! 2. Copy the payload outside the lock.
//! 3. Commit: store the real type (`PERF_RECORD_SAMPLE`) with release.
//! 4. Advance `data_head` over every leading committed record (any writer
//!    may do it; CAS keeps it monotonic), so consumers only ever see
//!    complete records, in reservation order.
//! 5. If a consumer registered as waiting, bump the wake word and
//!    `FUTEX_WAKE` it (no syscall when nobody waits).
//!
//! A writer SIGKILLed between 1 and 3 leaves an incomplete record that would
//! stall the ring; when a writer finds the ring full (or a reader finds it
//! stuck) it checks that record's owner and, if dead, turns it into a
//! `PERF_RECORD_LOST` record. Every record is at least 24 bytes for that.

use std::fs;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::errno::Errno;
use crate::error::Error;
use crate::layout::*;
use crate::lock;
use crate::map::Map;
use crate::registry::{Registry, Shared};
use crate::sys::{self, Mapping};

/// Offset of our [`ObjectHeader`] inside page 0 (`__reserved` area).
pub(crate) const OBJECT_HEADER_OFFSET: usize = 96;

/// `perf_event_header.type` values.
pub const PERF_RECORD_LOST: u32 = 2;
pub const PERF_RECORD_SAMPLE: u32 = 9;

const INCOMPLETE: u32 = 1 << 31;
const MIN_RECORD: u64 = 24;
const MAX_RECORD: u64 = 0xfff8;

/// Offsets inside page 0.
const OFF_DATA_HEAD: usize = 1024;
const OFF_DATA_TAIL: usize = 1032;
const OFF_DATA_OFFSET: usize = 1040;
const OFF_DATA_SIZE: usize = 1048;
const OFF_LOCK: usize = 128;
const OFF_RESERVE_HEAD: usize = 136;
/// Last `data_tail` seen by a writer (under the lock): writers re-read the
/// consumer's line only when this stale value says the ring is full.
const OFF_CACHED_TAIL: usize = 144;
const OFF_LOST: usize = 192;
const OFF_TOTAL_LOST: usize = 200;
const OFF_WAITERS: usize = 256;
const OFF_WAKE: usize = 260;

/// A perf ring mapped into this process (producer and consumer API).
pub struct PerfRing {
    mapping: Mapping,
    shared: Arc<Shared>,
    id: u32,
    data: *mut u8,
    data_size: u64,
    stall: sys::Stall,
}

// SAFETY: shared state is accessed only through atomics and the ring protocol.
unsafe impl Send for PerfRing {}
// SAFETY: as above.
unsafe impl Sync for PerfRing {}

impl std::fmt::Debug for PerfRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfRing").field("id", &self.id).field("data_size", &self.data_size).finish()
    }
}

/// A record read by [`PerfRing::read`].
#[derive(Debug, PartialEq, Eq)]
pub enum PerfRecord<'a> {
    /// `PERF_RECORD_SAMPLE` raw data (including the kernel-style padding).
    Sample(&'a [u8]),
    /// `PERF_RECORD_LOST`: this many samples were dropped.
    Lost(u64),
    /// Anything else (type, whole record).
    Other(u32, &'a [u8]),
}

impl Registry {
    /// Creates a perf ring of `data_pages` (a power of two) data pages after
    /// the header page — what `perf_event_open` + `mmap((1 + n) pages)`
    /// expects. Returns it mapped; the file is at [`Registry::ring_path`].
    pub fn create_perf_ring(&self, data_pages: u32) -> Result<PerfRing, Error> {
        if data_pages == 0 || !data_pages.is_power_of_two() {
            return Err(Error::kernel(format!("perf ring of {data_pages} data pages: must be a power of two"), Errno::EINVAL));
        }
        let page = sys::page_size();
        let len = (1 + data_pages as usize)
            .checked_mul(page)
            .ok_or_else(|| Error::kernel("perf ring too large", Errno::ENOMEM))?;
        let sh = &self.shared;
        let id = sh.alloc_id();
        let tmp = sh.temp_path("rings", id);
        let dst = sh.object_path("rings", id);
        let fd = sys::open(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, sh.file_mode())
            .map_err(|e| Error::io(&tmp, "create", e))?;
        let cleanup = |e: Error| {
            let _ = fs::remove_file(&tmp);
            e
        };
        sys::allocate(&fd, len).map_err(|e| {
            cleanup(if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::kernel("cannot allocate perf ring", Errno::ENOMEM)
            } else {
                Error::io(&tmp, "allocate", e)
            })
        })?;
        let mapping = Mapping::map(fd.as_raw_fd(), len).map_err(|e| cleanup(Error::io(&tmp, "mmap", e)))?;
        let base = mapping.base();
        // SAFETY: fresh, unpublished file of `len` ≥ 2 pages; we are its only
        // user; all offsets are inside page 0 and suitably aligned.
        unsafe {
            ptr::write(
                base.add(OBJECT_HEADER_OFFSET) as *mut ObjectHeader,
                ObjectHeader { magic: PERF_RING_MAGIC, layout_version: LAYOUT_VERSION, kind: ObjectKind::PerfRing as u32, id, owner: sh.owner_id() },
            );
            ptr::write(base.add(OFF_DATA_OFFSET) as *mut u64, page as u64);
            ptr::write(base.add(OFF_DATA_SIZE) as *mut u64, (data_pages as usize * page) as u64);
        }
        let ring = PerfRing::from_mapping(mapping, sh.clone()).map_err(cleanup)?;
        fs::rename(&tmp, &dst).map_err(|e| cleanup(Error::io(&dst, "publish", e)))?;
        sh.bump_generation();
        Ok(ring)
    }

    /// Opens perf ring `id`.
    pub fn open_perf_ring(&self, id: u32) -> Result<PerfRing, Error> {
        let path = self.ring_path(id);
        let fd = sys::open(&path, libc::O_RDWR, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                Error::NotFound { kind: "perf ring", id }
            } else {
                Error::io(&path, "open", e)
            }
        })?;
        let len = sys::file_len(&fd).map_err(|e| Error::io(&path, "stat", e))?;
        if len < 2 * sys::page_size() {
            return Err(Error::Incompatible { path, reason: format!("perf ring file is only {len} bytes") });
        }
        let mapping = Mapping::map(fd.as_raw_fd(), len).map_err(|e| Error::io(&path, "mmap", e))?;
        // SAFETY: mapping is ≥ 2 pages; the header lies inside page 0.
        let hdr = unsafe { std::slice::from_raw_parts(mapping.base().add(OBJECT_HEADER_OFFSET), OBJECT_HEADER_SIZE) };
        crate::map::check_object_header(&path, hdr, PERF_RING_MAGIC, ObjectKind::PerfRing)?;
        PerfRing::from_mapping(mapping, self.shared.clone())
    }
}

impl PerfRing {
    fn from_mapping(mapping: Mapping, shared: Arc<Shared>) -> Result<PerfRing, Error> {
        let base = mapping.base();
        // SAFETY: page 0 is inside the mapping (checked by callers).
        let (off, size, id) = unsafe {
            (
                ptr::read(base.add(OFF_DATA_OFFSET) as *const u64),
                ptr::read(base.add(OFF_DATA_SIZE) as *const u64),
                (*(base.add(OBJECT_HEADER_OFFSET) as *const ObjectHeader)).id,
            )
        };
        if !size.is_power_of_two() || !matches!(off.checked_add(size), Some(end) if end <= mapping.len() as u64) {
            return Err(Error::kernel(format!("perf ring {id}: inconsistent data_offset/data_size"), Errno::EINVAL));
        }
        // SAFETY: off + size ≤ mapping length (checked above).
        let data = unsafe { base.add(off as usize) };
        Ok(PerfRing { mapping, shared, id, data, data_size: size, stall: sys::Stall::default() })
    }

    #[inline(always)]
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: fixed, 8-aligned offsets inside page 0.
        unsafe { &*(self.mapping.base().add(off) as *const AtomicU64) }
    }

    #[inline(always)]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: fixed, 4-aligned offsets inside page 0.
        unsafe { &*(self.mapping.base().add(off) as *const AtomicU32) }
    }

    /// Registry id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Bytes of record data (`data_size`).
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Path of the ring file (what the server opens for the loader's fd).
    pub fn path(&self) -> std::path::PathBuf {
        self.shared.object_path("rings", self.id)
    }

    /// Whole mapping length (header page + data pages), what a loader mmaps.
    pub fn mmap_len(&self) -> usize {
        self.mapping.len()
    }

    /// Samples dropped because the ring was full, since creation.
    pub fn total_lost(&self) -> u64 {
        self.u64_at(OFF_TOTAL_LOST).load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn type_word(&self, pos: u64) -> &AtomicU32 {
        // SAFETY: records start 8-aligned, so a header never wraps; the
        // masked offset is inside the data area.
        unsafe { &*(self.data.add((pos & (self.data_size - 1)) as usize) as *const AtomicU32) }
    }

    #[inline(always)]
    fn size_at(&self, pos: u64) -> u64 {
        // SAFETY: as type_word; `size` is the u16 at +6 of the header.
        unsafe { ptr::read_volatile(self.data.add(((pos & (self.data_size - 1)) + 6) as usize) as *const u16) as u64 }
    }

    /// Copies `src` into the ring at absolute position `pos`, wrapping.
    fn write_at(&self, pos: u64, src: &[u8]) {
        let off = (pos & (self.data_size - 1)) as usize;
        // SAFETY (both branches): the pieces lie inside the data area; the
        // region belongs to this writer's reservation.
        unsafe {
            if off + src.len() <= self.data_size as usize {
                ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(off), src.len());
            } else {
                let first = self.data_size as usize - off;
                ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(off), first);
                ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data, src.len() - first);
            }
        }
    }

    /// The 8-byte word at 8-aligned absolute position `pos`.
    #[inline(always)]
    fn word(&self, pos: u64) -> *mut u64 {
        debug_assert_eq!(pos % 8, 0);
        // SAFETY: 8-aligned positions never straddle the end (data_size is a
        // multiple of 8), so the masked word lies inside the data area.
        unsafe { self.data.add((pos & (self.data_size - 1)) as usize) as *mut u64 }
    }

    /// `struct perf_event_header { u32 type; u16 misc; u16 size; }` as one store.
    fn write_header(&self, pos: u64, ty: u32, size: u64) {
        let h = u64::from_ne_bytes({
            let mut b = [0u8; 8];
            b[0..4].copy_from_slice(&ty.to_ne_bytes());
            b[6..8].copy_from_slice(&(size as u16).to_ne_bytes());
            b
        });
        // SAFETY: see `word`; the header belongs to this writer's reservation.
        unsafe { ptr::write_volatile(self.word(pos), h) };
    }

    /// `bpf_perf_event_output` into this ring: one `PERF_RECORD_SAMPLE`
    /// with `data` as raw payload. `Err(ENOSPC)` (and a later
    /// `PERF_RECORD_LOST`) when full, `Err(E2BIG)` for oversized data.
    pub fn output(&self, data: &[u8]) -> Result<(), Errno> {
        let size = (round_up8(8 + 4 + data.len()) as u64).max(MIN_RECORD);
        if size > MAX_RECORD || size > self.data_size {
            return Err(Errno::E2BIG);
        }
        let Some((pos, lost_pos)) = self.reserve(size) else {
            self.u64_at(OFF_LOST).fetch_add(1, Ordering::AcqRel);
            self.u64_at(OFF_TOTAL_LOST).fetch_add(1, Ordering::Relaxed);
            self.recover_dead_writers();
            return Err(Errno::ENOSPC);
        };
        // Zero the padding words first (as the kernel pads with zeros), then
        // the raw size and the data overwrite whatever part is theirs.
        let mut w = (pos + 12 + data.len() as u64) & !7;
        while w < pos + size {
            // SAFETY: aligned word inside this writer's reservation.
            unsafe { ptr::write_volatile(self.word(w), 0) };
            w += 8;
        }
        let raw_size = (size - 12) as u32;
        // SAFETY: pos + 8 is 8-aligned: its first half is the raw size field.
        unsafe { ptr::write_volatile(self.word(pos + 8) as *mut u32, raw_size) };
        self.write_at(pos + 12, data);
        if let Some(lp) = lost_pos {
            self.type_word(lp).store(PERF_RECORD_LOST, Ordering::Release);
        }
        self.type_word(pos).store(PERF_RECORD_SAMPLE, Ordering::Release);
        self.advance_and_wake();
        Ok(())
    }

    /// Reserves `size` bytes (plus a LOST record if drops are pending).
    fn reserve(&self, size: u64) -> Option<(u64, Option<u64>)> {
        let guard = lock::lock(self.u32_at(OFF_LOCK), &self.shared);
        drop_if_broken(&guard);
        let owner = self.shared.owner_id();
        let head = self.u64_at(OFF_RESERVE_HEAD).load(Ordering::Relaxed);
        let lost = self.u64_at(OFF_LOST).load(Ordering::Acquire);
        let lost_size = if lost > 0 { MIN_RECORD } else { 0 };
        let need = head.wrapping_add(size + lost_size);
        // data_tail only grows, so a stale copy can only understate the room.
        if need.wrapping_sub(self.u64_at(OFF_CACHED_TAIL).load(Ordering::Relaxed)) > self.data_size {
            let tail = self.u64_at(OFF_DATA_TAIL).load(Ordering::Acquire);
            self.u64_at(OFF_CACHED_TAIL).store(tail, Ordering::Relaxed);
            if need.wrapping_sub(tail) > self.data_size {
                return None;
            }
        }
        let mut pos = head;
        let mut lost_pos = None;
        if lost > 0 {
            let n = self.u64_at(OFF_LOST).swap(0, Ordering::AcqRel);
            self.write_header(pos, INCOMPLETE | owner, MIN_RECORD);
            let mut body = [0u8; 16];
            body[0..8].copy_from_slice(&(self.id as u64).to_ne_bytes());
            body[8..16].copy_from_slice(&n.to_ne_bytes());
            self.write_at(pos + 8, &body);
            lost_pos = Some(pos);
            pos += MIN_RECORD;
        }
        self.write_header(pos, INCOMPLETE | owner, size);
        self.u64_at(OFF_RESERVE_HEAD).store(pos + size, Ordering::Release);
        Some((pos, lost_pos))
    }

    /// Moves `data_head` over leading committed records; wakes a waiter.
    fn advance_and_wake(&self) {
        let head = self.u64_at(OFF_DATA_HEAD);
        let mut advanced = false;
        // After our own successful CAS we know data_head without re-reading
        // it: the line is shared with the consumer, so each re-read may miss.
        let mut h = head.load(Ordering::Acquire);
        loop {
            let r = self.u64_at(OFF_RESERVE_HEAD).load(Ordering::Acquire);
            if h >= r {
                break;
            }
            let ty = self.type_word(h).load(Ordering::Acquire);
            if ty & INCOMPLETE != 0 {
                break;
            }
            let size = self.size_at(h);
            if size < 8 {
                break;
            }
            match head.compare_exchange(h, h + size, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => {
                    h += size;
                    advanced = true;
                }
                Err(current) => h = current,
            }
        }
        if advanced && self.u32_at(OFF_WAITERS).load(Ordering::SeqCst) > 0 {
            self.u32_at(OFF_WAKE).fetch_add(1, Ordering::SeqCst);
            sys::futex_wake_all(self.u32_at(OFF_WAKE));
        }
    }

    /// Turns incomplete records of dead writers at the head into LOST records.
    fn recover_dead_writers(&self) {
        let head = self.u64_at(OFF_DATA_HEAD).load(Ordering::Acquire);
        let r = self.u64_at(OFF_RESERVE_HEAD).load(Ordering::Acquire);
        if head >= r {
            return;
        }
        let ty = self.type_word(head).load(Ordering::Acquire);
        // A live writer normally commits within nanoseconds: only a record
        // blocking the head for a while is worth a liveness check.
        if ty & INCOMPLETE == 0 || !self.stall.stuck_for_long(head) || self.shared.owner_alive(ty & !INCOMPLETE) {
            return;
        }
        let size = self.size_at(head);
        if size >= MIN_RECORD {
            let mut body = [0u8; 16];
            body[0..8].copy_from_slice(&(self.id as u64).to_ne_bytes());
            body[8..16].copy_from_slice(&1u64.to_ne_bytes());
            self.write_at(head + 8, &body);
            let _ = self.type_word(head).compare_exchange(ty, PERF_RECORD_LOST, Ordering::AcqRel, Ordering::Relaxed);
        }
        self.advance_and_wake();
    }

    // ---------------- consumer side ----------------

    /// Whether unread records are available.
    pub fn readable(&self) -> bool {
        self.u64_at(OFF_DATA_HEAD).load(Ordering::SeqCst) != self.u64_at(OFF_DATA_TAIL).load(Ordering::SeqCst)
    }

    /// Blocks until records are available or `timeout` passes (futex on a
    /// word in the ring; writers only wake when someone waits). Returns
    /// whether records are available. Used to emulate epoll readiness.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> bool {
        if self.readable() {
            return true;
        }
        let waiters = self.u32_at(OFF_WAITERS);
        waiters.fetch_add(1, Ordering::SeqCst);
        let seq = self.u32_at(OFF_WAKE).load(Ordering::SeqCst);
        if !self.readable() {
            self.recover_dead_writers();
            sys::futex_wait(self.u32_at(OFF_WAKE), seq, timeout);
        }
        waiters.fetch_sub(1, Ordering::SeqCst);
        self.readable()
    }

    /// Consumes every available record (advancing `data_tail`), like a
    /// loader's perf reader. Returns the number of records read.
    pub fn read(&self, mut f: impl FnMut(PerfRecord<'_>)) -> usize {
        let head = self.u64_at(OFF_DATA_HEAD).load(Ordering::Acquire);
        let tail_word = self.u64_at(OFF_DATA_TAIL);
        let start = tail_word.load(Ordering::Acquire);
        let mut tail = start;
        let mut n = 0;
        let mut wrapped = Vec::new();
        while tail < head {
            let mut hdr = [0u8; 8];
            self.read_at(tail, &mut hdr);
            let ty = u32::from_ne_bytes(hdr[0..4].try_into().unwrap());
            let size = u16::from_ne_bytes(hdr[6..8].try_into().unwrap()) as u64;
            if size < 8 {
                break;
            }
            let body_len = size as usize - 8;
            let off = ((tail + 8) & (self.data_size - 1)) as usize;
            let body: &[u8] = if off + body_len <= self.data_size as usize {
                // SAFETY: the body lies inside the data area and, being
                // before data_head, is complete and not rewritten until
                // data_tail passes it (which we do only after `f`).
                unsafe { std::slice::from_raw_parts(self.data.add(off), body_len) }
            } else {
                wrapped.resize(body_len, 0);
                self.read_at(tail + 8, &mut wrapped);
                &wrapped
            };
            match ty {
                PERF_RECORD_SAMPLE if body.len() >= 4 => {
                    let raw = (u32::from_ne_bytes(body[0..4].try_into().unwrap()) as usize).min(body.len() - 4);
                    f(PerfRecord::Sample(&body[4..4 + raw]))
                }
                PERF_RECORD_LOST if body.len() >= 16 => f(PerfRecord::Lost(u64::from_ne_bytes(body[8..16].try_into().unwrap()))),
                _ => f(PerfRecord::Other(ty, body)),
            }
            tail += size;
            n += 1;
        }
        if tail != start {
            tail_word.store(tail, Ordering::Release);
        } else {
            self.recover_dead_writers();
        }
        n
    }

    fn read_at(&self, pos: u64, dst: &mut [u8]) {
        let off = (pos & (self.data_size - 1)) as usize;
        let first = dst.len().min(self.data_size as usize - off);
        // SAFETY: both pieces lie inside the data area; records before
        // data_head are complete and not written until data_tail passes them.
        unsafe {
            ptr::copy_nonoverlapping(self.data.add(off), dst.as_mut_ptr(), first);
            ptr::copy_nonoverlapping(self.data, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }
}

/// The reservation critical section only writes beyond `reserve_head` before
/// its final store, so a broken lock needs no repair: a dead holder's
/// half-written header is simply overwritten by the next reservation.
fn drop_if_broken(_guard: &lock::LockGuard<'_>) {}

/// Per-map cache of opened rings for PERF_EVENT_ARRAY (index → ring).
pub(crate) struct RingCache {
    slots: Box<[AtomicPtr<CachedRing>]>,
    /// Replaced entries, kept until the map is dropped: another thread may
    /// still be writing through them. Boxed so their address never changes.
    #[allow(clippy::vec_box)]
    retired: Mutex<Vec<Box<CachedRing>>>,
}

struct CachedRing {
    id: u32,
    ring: PerfRing,
}

impl RingCache {
    pub(crate) fn new(n: u32) -> RingCache {
        RingCache { slots: (0..n).map(|_| AtomicPtr::new(ptr::null_mut())).collect(), retired: Mutex::new(Vec::new()) }
    }
}

impl Drop for RingCache {
    fn drop(&mut self) {
        for s in self.slots.iter() {
            let p = s.swap(ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: p came from Box::into_raw in `ring_for` and is
                // referenced by no one else once the map is being dropped.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

impl Map {
    /// `bpf_perf_event_output(ctx, map, flags, data, size)` on a
    /// PERF_EVENT_ARRAY: `flags` low 32 bits select the index
    /// (`BPF_F_CURRENT_CPU` = this CPU). Returns 0 or -errno (`-E2BIG` bad
    /// index or size, `-ENOENT` no ring at that index, `-ENOSPC` ring full,
    /// `-EINVAL` bad flags or map type).
    pub fn perf_event_output(&self, flags: u64, data: &[u8]) -> i64 {
        use helper_flags::*;
        let Some(cache) = &self.perf_cache else { return Errno::EINVAL.as_neg() };
        if flags & !BPF_F_INDEX_MASK != 0 {
            return Errno::EINVAL.as_neg();
        }
        let index = if flags & BPF_F_INDEX_MASK == BPF_F_CURRENT_CPU { crate::cpu::current() } else { flags as u32 };
        if index >= self.max_entries {
            return Errno::E2BIG.as_neg();
        }
        let Some(id) = self.id_at(index) else { return Errno::ENOENT.as_neg() };
        let p = cache.slots[index as usize].load(Ordering::Acquire);
        // SAFETY: non-null entries are live Boxes owned by the cache until
        // the map drops (replaced ones are retired, never freed early).
        let ring = if !p.is_null() && unsafe { (*p).id } == id {
            // SAFETY: as above.
            unsafe { &(*p).ring }
        } else {
            match self.ring_for(index, id) {
                Some(r) => r,
                None => return Errno::ENOENT.as_neg(),
            }
        };
        match ring.output(data) {
            Ok(()) => 0,
            Err(e) => e.as_neg(),
        }
    }

    /// Opens (and caches) every perf ring the PERF_EVENT_ARRAY currently
    /// references, so `perf_event_output` never opens one on the hot path
    /// (where `open`/`mmap`/allocation could deadlock inside a probed
    /// `malloc`). The agent calls it at program load and on every registry
    /// generation change. Returns how many slots have a cached ring.
    pub fn refresh_perf_rings(&self) -> usize {
        let mut n = 0;
        for index in 0..self.max_entries {
            let Some(id) = self.id_at(index) else { continue };
            let cached = self.perf_cache.as_ref().map(|c| c.slots[index as usize].load(Ordering::Acquire));
            // SAFETY: non-null cache entries stay alive until the map drops.
            let hit = cached.is_some_and(|p| !p.is_null() && unsafe { (*p).id } == id);
            if hit || self.ring_for(index, id).is_some() {
                n += 1;
            }
        }
        n
    }

    /// Slow path: open ring `id` and cache it for `index`.
    #[cold]
    fn ring_for(&self, index: u32, id: u32) -> Option<&PerfRing> {
        let cache = self.perf_cache.as_ref()?;
        let ring = self.registry().open_perf_ring(id).ok()?;
        let new = Box::into_raw(Box::new(CachedRing { id, ring }));
        let old = cache.slots[index as usize].swap(new, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: old came from Box::into_raw; retiring keeps it alive.
            cache.retired.lock().unwrap_or_else(|e| e.into_inner()).push(unsafe { Box::from_raw(old) });
        }
        // SAFETY: `new` stays alive until the map drops (see RingCache).
        Some(unsafe { &(*new).ring })
    }
}
