//! BLOOM_FILTER maps: a power-of-two bit array and `k` hash functions
//! (`map_extra` bits 0..4, default 5), sized like the kernel
//! (`max_entries * k / ln 2` bits, rounded up to a power of two).
//! Push sets bits with atomic `fetch_or` (lock-free, crash-safe: a partial
//! push only sets some bits, which can only cause false positives — allowed).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::errno::Errno;
use crate::hash::hash_bytes;
use crate::map::Map;

/// Number of hash functions for `map_extra`.
pub(crate) fn nr_hashes(map_extra: u64) -> u32 {
    match (map_extra & 0xf) as u32 {
        0 => 5,
        n => n,
    }
}

/// Size of the bit array in bits (power of two, at least 64).
pub(crate) fn bit_count(max_entries: u32, k: u32) -> Option<usize> {
    // bits = n * k / ln(2), computed as n * k * 1443 / 1000.
    let bits = (max_entries as u64).checked_mul(k as u64)?.checked_mul(1443)? / 1000;
    let bits = bits.max(64).checked_next_power_of_two()?;
    if bits > (1u64 << 40) {
        return None;
    }
    Some(bits as usize)
}

impl Map {
    #[inline(always)]
    fn bloom_words(&self) -> &[AtomicU64] {
        let words = self.header().n_buckets as usize;
        // SAFETY: the data area holds n_buckets u64 words (geometry), 8-aligned.
        unsafe { std::slice::from_raw_parts(self.elems as *const AtomicU64, words) }
    }

    /// The `k` bit positions of `value` by double hashing (Kirsch and
    /// Mitzenmacher): `h1 + i * h2` from one 64-bit hash.
    #[inline(always)]
    fn bloom_bits(&self, value: &[u8], nbits: u64) -> impl Iterator<Item = u64> {
        // SAFETY: value holds value.len() bytes.
        let h = unsafe { hash_bytes(value.as_ptr(), value.len(), self.seed) };
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        let k = nr_hashes(self.header().map_extra) as u64;
        (0..k).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & (nbits - 1))
    }

    pub(crate) fn bloom_push(&self, value: &[u8]) {
        let words = self.bloom_words();
        let nbits = words.len() as u64 * 64;
        for bit in self.bloom_bits(value, nbits) {
            words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    pub(crate) fn bloom_peek(&self, value: &[u8]) -> Result<(), Errno> {
        if value.len() != self.value_size as usize {
            return Err(Errno::EINVAL);
        }
        let words = self.bloom_words();
        let nbits = words.len() as u64 * 64;
        for bit in self.bloom_bits(value, nbits) {
            if words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) == 0 {
                return Err(Errno::ENOENT);
            }
        }
        Ok(())
    }
}
