//! ARRAY, PERCPU_ARRAY, and the id arrays (PROG_ARRAY, PERF_EVENT_ARRAY).
//!
//! ARRAY: `max_entries` values of `round_up(value_size, 8)` bytes right after
//! the header page; PERCPU_ARRAY: `nr_cpus` such slots per index. Elements
//! always exist (zero-initialised, never deleted), so lookups are one bounds
//! check and one multiply, and values never move. Updates copy in place with
//! no lock, exactly like the kernel (concurrent writers may interleave).
//!
//! Id arrays store one `u32` registry id per index (0 = empty): program ids
//! for PROG_ARRAY (tail calls), perf ring ids for PERF_EVENT_ARRAY. The
//! syscall server translates the loader's fds to ids before `update`.

use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::errno::Errno;
use crate::layout::update_flags::*;
use crate::map::Map;

impl Map {
    #[inline(always)]
    fn array_index(key: *const u8) -> u32 {
        // SAFETY: callers guarantee 4 readable key bytes (key_size == 4).
        unsafe { ptr::read_unaligned(key as *const u32) }
    }

    #[inline(always)]
    fn array_slot(&self, idx: u32) -> *mut u8 {
        // SAFETY: idx < max_entries (checked by callers): inside the mapping.
        unsafe { self.elems.add(idx as usize * self.elem_size) }
    }

    /// # Safety
    /// `key` points to 4 readable bytes.
    #[inline(always)]
    pub(crate) unsafe fn array_prog_lookup(&self, key: *const u8, cpu: u32) -> *mut u8 {
        let idx = Self::array_index(key);
        if idx >= self.max_entries {
            return ptr::null_mut();
        }
        let slot = self.array_slot(idx);
        if self.percpu {
            let cpu = crate::cpu::slot_index(cpu, self.ncpus);
            // SAFETY: cpu < ncpus: inside this index's slots.
            unsafe { slot.add(cpu as usize * self.value_stride) }
        } else {
            slot
        }
    }

    fn checked_index(&self, key: &[u8]) -> Result<u32, Errno> {
        self.check_key(key)?;
        Ok(Self::array_index(key.as_ptr()))
    }

    pub(crate) fn array_lookup_copy(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        let idx = self.checked_index(key)?;
        if out.len() != self.syscall_value_size() {
            return Err(Errno::EINVAL);
        }
        if idx >= self.max_entries {
            return Err(Errno::ENOENT);
        }
        let slot = self.array_slot(idx);
        // Per-CPU values are copied in whole 8-byte strides, padding
        // included (the kernel's copy_map_value_long).
        let len = if self.percpu { self.value_stride * self.ncpus as usize } else { self.value_size as usize };
        // SAFETY: out holds `len` bytes (checked above); so does the slot.
        unsafe { ptr::copy_nonoverlapping(slot, out.as_mut_ptr(), len) };
        Ok(())
    }

    fn array_check_flags(&self, idx: u32, flags: u64) -> Result<(), Errno> {
        if flags > BPF_EXIST {
            return Err(Errno::EINVAL);
        }
        if idx >= self.max_entries {
            return Err(Errno::E2BIG);
        }
        if flags == BPF_NOEXIST {
            return Err(Errno::EEXIST);
        }
        Ok(())
    }

    pub(crate) fn array_update_sys(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
        let idx = self.checked_index(key)?;
        self.check_value(value)?;
        self.array_check_flags(idx, flags)?;
        let slot = self.array_slot(idx);
        let len = if self.percpu { self.value_stride * self.ncpus as usize } else { self.value_size as usize };
        // SAFETY: value holds `len` bytes (checked above); so does the slot.
        unsafe { ptr::copy_nonoverlapping(value.as_ptr(), slot, len) };
        Ok(())
    }

    /// # Safety
    /// `key`/`value` point to 4 / `value_size` readable bytes.
    #[inline(always)]
    pub(crate) unsafe fn array_prog_update(&self, key: *const u8, value: *const u8, flags: u64, cpu: u32) -> Result<(), Errno> {
        let idx = Self::array_index(key);
        self.array_check_flags(idx, flags)?;
        // SAFETY: idx checked; forwarded caller contract for key.
        let dst = unsafe { self.array_prog_lookup(key, cpu) };
        // SAFETY: dst holds value_size bytes; value readable per contract.
        unsafe { ptr::copy_nonoverlapping(value, dst, self.value_size as usize) };
        Ok(())
    }

    pub(crate) fn array_get_next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
        let n = match key {
            None => 0,
            Some(k) => {
                let idx = Self::array_index(k.as_ptr());
                if idx >= self.max_entries {
                    0
                } else if idx == self.max_entries - 1 {
                    return Err(Errno::ENOENT);
                } else {
                    idx + 1
                }
            }
        };
        next.copy_from_slice(&n.to_ne_bytes());
        Ok(())
    }

    // ---- id arrays ----

    #[inline(always)]
    fn id_slot(&self, idx: u32) -> &AtomicU32 {
        // SAFETY: idx < max_entries; slots are 4-byte aligned u32s.
        unsafe { &*(self.elems.add(idx as usize * 4) as *const AtomicU32) }
    }

    /// Registry id stored at `index` of a PROG_ARRAY / PERF_EVENT_ARRAY
    /// (`None` if out of range or empty). This is the tail-call lookup.
    #[inline]
    pub fn id_at(&self, index: u32) -> Option<u32> {
        if self.kind != crate::map::Kind::IdArray || index >= self.max_entries {
            return None;
        }
        match self.id_slot(index).load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    pub(crate) fn id_array_lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        // Like the kernel, only PROG_ARRAY answers lookups from userspace
        // (with the program id); PERF_EVENT_ARRAY has no syscall lookup.
        // Use `id_at` to read a perf ring id.
        if self.map_type == crate::layout::map_type::PERF_EVENT_ARRAY {
            return Err(Errno::ENOTSUPP);
        }
        let idx = self.checked_index(key)?;
        if out.len() != 4 {
            return Err(Errno::EINVAL);
        }
        if idx >= self.max_entries {
            return Err(Errno::ENOENT);
        }
        match self.id_slot(idx).load(Ordering::Acquire) {
            0 => Err(Errno::ENOENT),
            id => {
                out.copy_from_slice(&id.to_ne_bytes());
                Ok(())
            }
        }
    }

    pub(crate) fn id_array_update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
        let idx = self.checked_index(key)?;
        if value.len() != 4 {
            return Err(Errno::EINVAL);
        }
        if flags != BPF_ANY {
            return Err(Errno::EINVAL);
        }
        if idx >= self.max_entries {
            return Err(Errno::E2BIG);
        }
        let id = u32::from_ne_bytes(value.try_into().unwrap());
        if id == 0 {
            return Err(Errno::EBADF);
        }
        self.id_slot(idx).store(id, Ordering::Release);
        Ok(())
    }

    pub(crate) fn id_array_delete(&self, key: &[u8]) -> Result<(), Errno> {
        let idx = self.checked_index(key)?;
        if idx >= self.max_entries {
            return Err(Errno::E2BIG);
        }
        match self.id_slot(idx).swap(0, Ordering::AcqRel) {
            0 => Err(Errno::ENOENT),
            _ => Ok(()),
        }
    }
}
