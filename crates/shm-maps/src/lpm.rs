//! LPM_TRIE maps (longest-prefix match), stored in the shared hash table.
//!
//! Keys are `struct bpf_lpm_trie_key { u32 prefixlen; u8 data[]; }`. Each
//! element is stored under its *canonical* key (data bits beyond
//! `prefixlen` cleared) in the same lock-free hash as HASH maps, so lookups
//! inherit its concurrency and crash-safety. A lookup probes the prefix
//! lengths actually present (a bitmap in the header), longest first: at most
//! `8 * data_len + 1` hash lookups, usually a handful.
//!
//! Semantics follow the kernel: update/delete are exact-match (`EINVAL` for
//! `prefixlen` beyond the data size, `ENOSPC` when full), lookup is longest
//! match. `get_next_key` orders keys by descending prefix length then data
//! (the kernel walks its trie post-order; both visit every key exactly once,
//! more specific prefixes first, but the exact order differs).

use std::sync::atomic::Ordering;

use crate::errno::Errno;
use crate::hash::ValueSrc;
use crate::map::Map;

const MAX_KEY: usize = 4 + 256;

impl Map {
    fn lpm_max_bits(&self) -> u32 {
        (self.key_size - 4) * 8
    }

    /// Canonical copy of `key` with prefix length `plen`.
    fn lpm_canonical(&self, key: &[u8], plen: u32, out: &mut [u8; MAX_KEY]) {
        let n = self.key_size as usize;
        out[..n].copy_from_slice(&key[..n]);
        out[0..4].copy_from_slice(&plen.to_ne_bytes());
        let full = (plen / 8) as usize;
        let rem = plen % 8;
        let mut i = 4 + full;
        if rem != 0 {
            out[i] &= 0xffu8 << (8 - rem);
            i += 1;
        }
        out[i..n].fill(0);
    }

    fn lpm_prefixlen(key: &[u8]) -> u32 {
        u32::from_ne_bytes(key[0..4].try_into().unwrap())
    }

    /// Longest-prefix match; returns the element index.
    fn lpm_match(&self, key: &[u8]) -> Option<u32> {
        let limit = Self::lpm_prefixlen(key).min(self.lpm_max_bits());
        let lens = &self.header().lpm_lens;
        let mut buf = [0u8; MAX_KEY];
        for plen in (0..=limit).rev() {
            if lens[(plen / 64) as usize].load(Ordering::Acquire) & (1 << (plen % 64)) == 0 {
                continue;
            }
            self.lpm_canonical(key, plen, &mut buf);
            let h = self.hash_key(buf.as_ptr());
            if let Some(idx) = self.find(buf.as_ptr(), h) {
                return Some(idx);
            }
        }
        None
    }

    /// # Safety
    /// `key` points to `key_size` readable bytes.
    pub(crate) unsafe fn lpm_prog_lookup(&self, key: *const u8) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        let k = unsafe { std::slice::from_raw_parts(key, self.key_size as usize) };
        match self.lpm_match(k) {
            Some(idx) => self.elem_value(idx),
            None => std::ptr::null_mut(),
        }
    }

    pub(crate) fn lpm_lookup_copy(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        self.check_key(key)?;
        if out.len() != self.value_size as usize {
            return Err(Errno::EINVAL);
        }
        let _rs = crate::epoch::enter(&self.shared);
        let idx = self.lpm_match(key).ok_or(Errno::ENOENT)?;
        self.copy_value_out(idx, out);
        Ok(())
    }

    pub(crate) fn lpm_update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
        self.check_key(key)?;
        self.check_value(value)?;
        if flags > crate::layout::update_flags::BPF_EXIST {
            return Err(Errno::EINVAL);
        }
        let plen = Self::lpm_prefixlen(key);
        if plen > self.lpm_max_bits() {
            return Err(Errno::EINVAL);
        }
        let mut buf = [0u8; MAX_KEY];
        self.lpm_canonical(key, plen, &mut buf);
        self.header().lpm_lens[(plen / 64) as usize].fetch_or(1 << (plen % 64), Ordering::AcqRel);
        // SAFETY: buf holds key_size bytes, value holds value_size bytes.
        match unsafe { self.hash_update(buf.as_ptr(), value.as_ptr(), flags, ValueSrc::AllCpus) } {
            Err(Errno::E2BIG) => Err(Errno::ENOSPC),
            r => r,
        }
    }

    pub(crate) fn lpm_delete(&self, key: &[u8]) -> Result<(), Errno> {
        self.check_key(key)?;
        let plen = Self::lpm_prefixlen(key);
        if plen > self.lpm_max_bits() {
            return Err(Errno::EINVAL);
        }
        let mut buf = [0u8; MAX_KEY];
        self.lpm_canonical(key, plen, &mut buf);
        self.hash_delete(buf.as_ptr())
    }

    /// Sort key for iteration: longer prefixes first, then by data bytes.
    fn lpm_order(k: &[u8]) -> (std::cmp::Reverse<u32>, Vec<u8>) {
        (std::cmp::Reverse(Self::lpm_prefixlen(k)), k[4..].to_vec())
    }

    pub(crate) fn lpm_get_next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
        let n = self.key_size as usize;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut cur = vec![0u8; n];
        let mut prev: Option<Vec<u8>> = None;
        while self.hash_get_next_key(prev.as_deref(), &mut cur).is_ok() {
            keys.push(cur.clone());
            prev = Some(cur.clone());
            if keys.len() > self.pool_size as usize {
                break;
            }
        }
        keys.sort_by_key(|k| Self::lpm_order(k));
        keys.dedup();
        let pos = match key {
            None => 0,
            Some(k) => {
                let plen = Self::lpm_prefixlen(k);
                let mut canon = [0u8; MAX_KEY];
                let found = plen <= self.lpm_max_bits() && {
                    self.lpm_canonical(k, plen, &mut canon);
                    true
                };
                match found.then(|| keys.iter().position(|x| x[..] == canon[..n])).flatten() {
                    Some(i) => i + 1,
                    None => 0,
                }
            }
        };
        let k = keys.get(pos).ok_or(Errno::ENOENT)?;
        next.copy_from_slice(k);
        Ok(())
    }
}
