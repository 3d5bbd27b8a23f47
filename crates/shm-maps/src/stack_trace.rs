//! STACK_TRACE maps (`bpf_get_stackid`).
//!
//! `n_buckets` (power of two ≥ max_entries) buckets, each a 16-byte header
//! (`lock`, `nr` = number of ips (0 = empty), `hash`) followed by
//! `value_size` bytes of u64 ips. The stack id is `hash & (n_buckets - 1)`,
//! as in the kernel; a different stack hashing to an occupied bucket gives
//! `-EEXIST` unless `BPF_F_REUSE_STACKID`. The agent unwinds the stack
//! (and applies the skip count) and passes the ips in.
//! Writers and readers hold the bucket's owner-checked lock for one bounded
//! copy; `nr` is stored last, so a killed writer leaves a stale-but-complete
//! or empty bucket.

use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::errno::Errno;
use crate::hash::hash_bytes;
use crate::layout::helper_flags::*;
use crate::lock;
use crate::map::Map;

pub(crate) const BUCKET_HEADER: usize = 16;

#[repr(C)]
struct StackBucket {
    lock: AtomicU32,
    nr: AtomicU32,
    hash: AtomicU32,
    _pad: u32,
}

impl Map {
    #[inline(always)]
    fn stack_bucket(&self, id: u32) -> (&StackBucket, *mut u64) {
        // SAFETY: id <= bucket_mask < n_buckets; buckets are elem_size apart
        // inside the data area.
        unsafe {
            let p = self.elems.add(id as usize * self.elem_size);
            (&*(p as *const StackBucket), p.add(BUCKET_HEADER) as *mut u64)
        }
    }

    /// `bpf_get_stackid` with already-unwound instruction pointers (skip
    /// already applied). `flags` may hold `BPF_F_USER_STACK`,
    /// `BPF_F_FAST_STACK_CMP`, `BPF_F_REUSE_STACKID` (and the skip field,
    /// ignored here). Returns the stack id or -errno.
    pub fn get_stackid(&self, ips: &[u64], flags: u64) -> i64 {
        if self.kind != crate::map::Kind::StackTrace {
            return Errno::EINVAL.as_neg();
        }
        let allowed = BPF_F_SKIP_FIELD_MASK | BPF_F_USER_STACK | BPF_F_FAST_STACK_CMP | BPF_F_REUSE_STACKID;
        if flags & !allowed != 0 {
            return Errno::EINVAL.as_neg();
        }
        let max_ips = self.value_size as usize / 8;
        let ips = &ips[..ips.len().min(max_ips)];
        if ips.is_empty() {
            return Errno::EFAULT.as_neg();
        }
        // SAFETY: ips is a valid slice of u64.
        let h = unsafe { hash_bytes(ips.as_ptr() as *const u8, ips.len() * 8, self.seed) } as u32;
        let id = h & self.bucket_mask;
        let (b, data) = self.stack_bucket(id);
        let _g = lock::lock(&b.lock, &self.shared);
        let nr = b.nr.load(Ordering::Acquire) as usize;
        if nr != 0 && b.hash.load(Ordering::Relaxed) == h {
            let same = flags & BPF_F_FAST_STACK_CMP != 0 || {
                // SAFETY: the bucket holds nr ≤ max_ips ips.
                let old = unsafe { std::slice::from_raw_parts(data, nr.min(max_ips)) };
                old == ips
            };
            if same {
                return id as i64;
            }
        }
        if nr != 0 && flags & BPF_F_REUSE_STACKID == 0 {
            return Errno::EEXIST.as_neg();
        }
        b.nr.store(0, Ordering::Release);
        // SAFETY: ips.len() ≤ max_ips fits the bucket.
        unsafe { ptr::copy_nonoverlapping(ips.as_ptr(), data, ips.len()) };
        b.hash.store(h, Ordering::Relaxed);
        b.nr.store(ips.len() as u32, Ordering::Release);
        id as i64
    }

    fn stack_id(&self, key: &[u8]) -> Result<u32, Errno> {
        self.check_key(key)?;
        Ok(u32::from_ne_bytes(key.try_into().unwrap()))
    }

    pub(crate) fn stack_trace_lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        let id = self.stack_id(key)?;
        if out.len() != self.value_size as usize {
            return Err(Errno::EINVAL);
        }
        if id > self.bucket_mask {
            return Err(Errno::ENOENT);
        }
        let (b, data) = self.stack_bucket(id);
        let _g = lock::lock(&b.lock, &self.shared);
        let nr = (b.nr.load(Ordering::Acquire) as usize).min(out.len() / 8);
        if nr == 0 {
            return Err(Errno::ENOENT);
        }
        // SAFETY: the bucket holds nr ips; out holds value_size ≥ nr * 8 bytes.
        unsafe { ptr::copy_nonoverlapping(data as *const u8, out.as_mut_ptr(), nr * 8) };
        out[nr * 8..].fill(0);
        Ok(())
    }

    pub(crate) fn stack_trace_delete(&self, key: &[u8]) -> Result<(), Errno> {
        let id = self.stack_id(key)?;
        if id > self.bucket_mask {
            return Err(Errno::E2BIG);
        }
        let (b, _) = self.stack_bucket(id);
        let _g = lock::lock(&b.lock, &self.shared);
        if b.nr.swap(0, Ordering::AcqRel) == 0 {
            return Err(Errno::ENOENT);
        }
        Ok(())
    }

    pub(crate) fn stack_trace_get_next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
        let n = self.bucket_mask + 1;
        let mut id = match key {
            None => 0,
            Some(k) => {
                let id = u32::from_ne_bytes(k.try_into().unwrap());
                if id >= n || self.stack_bucket(id).0.nr.load(Ordering::Acquire) == 0 {
                    0
                } else {
                    id + 1
                }
            }
        };
        while id < n && self.stack_bucket(id).0.nr.load(Ordering::Acquire) == 0 {
            id += 1;
        }
        if id >= n {
            return Err(Errno::ENOENT);
        }
        next.copy_from_slice(&id.to_ne_bytes());
        Ok(())
    }
}
