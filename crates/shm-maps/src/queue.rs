//! QUEUE (FIFO) and STACK (LIFO) maps.
//!
//! `max_entries + 1` slots of `round_up(value_size, 8)` bytes used as a ring,
//! with the kernel's index names: `head` is where the next push goes, `tail`
//! the oldest element; empty when equal. All operations hold the map-wide
//! owner-checked lock for a bounded copy (the kernel uses a raw spinlock the
//! same way). A push copies the value *before* publishing the new `head`,
//! so a holder killed mid-operation leaves either the old or the new state;
//! a broken lock needs no repair.

use std::ptr;
use std::sync::atomic::Ordering;

use crate::errno::Errno;
use crate::layout::update_flags::BPF_EXIST;
use crate::lock;
use crate::map::{Kind, Map};

impl Map {
    #[inline(always)]
    fn queue_slot(&self, i: u32) -> *mut u8 {
        // SAFETY: i < pool_size (max_entries + 1): inside the data area.
        unsafe { self.elems.add(i as usize * self.elem_size) }
    }

    fn note_broken(&self, g: &lock::LockGuard<'_>) {
        if g.broken {
            self.header().lock_breaks.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Push (`BPF_EXIST` overwrites the oldest element when full).
    pub(crate) fn queue_push(&self, value: &[u8], flags: u64) -> Result<(), Errno> {
        if flags & !BPF_EXIST != 0 {
            return Err(Errno::EINVAL);
        }
        let size = self.pool_size;
        let q = &self.header().queue;
        let g = lock::lock(&self.header().lock.0, &self.shared);
        self.note_broken(&g);
        let head = q.head.load(Ordering::Relaxed) % size;
        let mut tail = q.tail.load(Ordering::Relaxed) % size;
        let next = if head + 1 == size { 0 } else { head + 1 };
        if next == tail {
            if flags & BPF_EXIST == 0 {
                return Err(Errno::E2BIG);
            }
            tail = if tail + 1 == size { 0 } else { tail + 1 };
            q.tail.store(tail, Ordering::Relaxed);
        }
        // SAFETY: slot holds value_size bytes; value has value_size bytes.
        unsafe { ptr::copy_nonoverlapping(value.as_ptr(), self.queue_slot(head), self.value_size as usize) };
        q.head.store(next, Ordering::Release);
        Ok(())
    }

    fn queue_take(&self, out: &mut [u8], remove: bool) -> Result<(), Errno> {
        if out.len() != self.value_size as usize {
            return Err(Errno::EINVAL);
        }
        let size = self.pool_size;
        let q = &self.header().queue;
        let g = lock::lock(&self.header().lock.0, &self.shared);
        self.note_broken(&g);
        let head = q.head.load(Ordering::Relaxed) % size;
        let tail = q.tail.load(Ordering::Relaxed) % size;
        if head == tail {
            return Err(Errno::ENOENT);
        }
        let slot = if self.kind == Kind::Queue { tail } else if head == 0 { size - 1 } else { head - 1 };
        // SAFETY: slot holds value_size bytes; out has value_size bytes.
        unsafe { ptr::copy_nonoverlapping(self.queue_slot(slot), out.as_mut_ptr(), out.len()) };
        if remove {
            if self.kind == Kind::Queue {
                q.tail.store(if tail + 1 == size { 0 } else { tail + 1 }, Ordering::Release);
            } else {
                q.head.store(slot, Ordering::Release);
            }
        }
        Ok(())
    }

    pub(crate) fn queue_peek(&self, out: &mut [u8]) -> Result<(), Errno> {
        self.queue_take(out, false)
    }

    pub(crate) fn queue_pop(&self, out: &mut [u8]) -> Result<(), Errno> {
        self.queue_take(out, true)
    }
}
