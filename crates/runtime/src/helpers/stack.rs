//! User stack traces: `bpf_get_stack` (and the walk `bpf_get_stackid`
//! stores). Like the kernel's `perf_callchain_user`, the walk starts at the
//! probed instruction (`pt_regs.ip`) and follows the frame-pointer chain
//! from `pt_regs.bp`; every frame read is fault-tolerant, and the walk stops
//! at a null, misaligned, non-increasing or unreadable frame pointer.
//! Code built without frame pointers gives short stacks, as in the kernel.

use std::ffi::c_void;

use crate::fault;

/// `sysctl kernel.perf_event_max_stack` default.
pub const MAX_STACK_DEPTH: usize = 127;

const EINVAL: u64 = -(libc::EINVAL as i64) as u64;
const SKIP_FIELD_MASK: u64 = 0xff;
const F_USER_STACK: u64 = 1 << 8;
const F_USER_BUILD_ID: u64 = 1 << 11;

/// Offsets of `ip` and `bp` in the kernel's x86-64 `struct pt_regs`.
const PT_REGS_BP: usize = 32;
const PT_REGS_IP: usize = 128;

/// Collects frames after skipping the first `skip`.
struct FrameSink<'a> {
    out: &'a mut [u64],
    skip: usize,
    seen: usize,
    n: usize,
}

impl FrameSink<'_> {
    fn push(&mut self, address: u64) {
        if self.seen >= self.skip && self.n < self.out.len() {
            self.out[self.n] = address;
            self.n += 1;
        }
        self.seen += 1;
    }
}

/// Walk the user stack described by `regs` (a `struct pt_regs`), skipping
/// the first `skip` frames; fills `out` and returns the number of frames.
///
/// # Safety
/// `regs` must point to a readable `struct pt_regs`.
pub unsafe fn walk_user_stack(regs: *const u8, skip: usize, out: &mut [u64]) -> usize {
    // SAFETY: the caller guarantees a readable pt_regs.
    let (ip, mut fp) = unsafe {
        ((regs.add(PT_REGS_IP) as *const u64).read_unaligned(), (regs.add(PT_REGS_BP) as *const u64).read_unaligned())
    };
    let limit = out.len();
    let mut walk = FrameSink { out, skip, seen: 0, n: 0 };
    walk.push(ip);
    while walk.n < limit && walk.seen < MAX_STACK_DEPTH + skip {
        if fp == 0 || fp % 8 != 0 {
            break;
        }
        let mut frame = [0u64; 2];
        // SAFETY: `frame` is 16 writable bytes.
        if unsafe { fault::read_user(frame.as_mut_ptr() as *mut u8, fp, 16) } != 0 {
            break;
        }
        let [next_fp, return_address] = frame;
        if return_address == 0 {
            break;
        }
        walk.push(return_address);
        if next_fp <= fp {
            break;
        }
        fp = next_fp;
    }
    walk.n
}

/// `bpf_get_stack(ctx, buf, size, flags)`: user stacks (`BPF_F_USER_STACK`)
/// are walked; there is no kernel stack in user space, so without the flag
/// the result is empty. Returns the bytes written (the rest is zeroed).
pub unsafe extern "C" fn get_stack(ctx: u64, buf: u64, size: u64, flags: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the verifier proved `buf` writable for `size` bytes; it may
    // not be 8-byte aligned, so frames are collected locally first. As the
    // kernel (its `clear:` path), every error leaves it zeroed too: the
    // verifier counts it as written either way.
    unsafe { std::ptr::write_bytes(buf as *mut u8, 0, size as usize) };
    if flags & !(SKIP_FIELD_MASK | F_USER_STACK | F_USER_BUILD_ID) != 0 || flags & F_USER_BUILD_ID != 0 {
        return EINVAL;
    }
    if !size.is_multiple_of(8) || ctx == 0 {
        return EINVAL;
    }
    let frames = (size / 8) as usize;
    if flags & F_USER_STACK == 0 {
        return 0;
    }
    let mut ips = [0u64; MAX_STACK_DEPTH];
    let wanted = frames.min(MAX_STACK_DEPTH);
    // SAFETY: ctx is the program's pt_regs.
    let n = unsafe { walk_user_stack(ctx as *const u8, (flags & SKIP_FIELD_MASK) as usize, &mut ips[..wanted]) };
    // SAFETY: n * 8 <= size bytes of `buf`.
    unsafe { std::ptr::copy_nonoverlapping(ips.as_ptr() as *const u8, buf as *mut u8, n * 8) };
    (n * 8) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_a_synthetic_frame_chain_and_stops_at_a_bad_frame() {
        crate::fault::install().unwrap();
        // Three frames: f0 -> f1 -> f2 -> (unmapped address).
        let mut frames = [0u64; 6];
        let base = frames.as_mut_ptr() as u64;
        frames[0] = base + 16; // f0.next
        frames[1] = 0x1111;
        frames[2] = base + 32; // f1.next
        frames[3] = 0x2222;
        frames[4] = 0x10; // f2.next: unreadable low address
        frames[5] = 0x3333;
        // The walk reads `frames` through its address only.
        std::hint::black_box(&mut frames);
        let mut regs = [0u8; 168];
        regs[PT_REGS_IP..PT_REGS_IP + 8].copy_from_slice(&0xaaaau64.to_le_bytes());
        regs[PT_REGS_BP..PT_REGS_BP + 8].copy_from_slice(&base.to_le_bytes());
        let mut out = [0u64; 16];
        // SAFETY: regs is a full pt_regs image.
        let n = unsafe { walk_user_stack(regs.as_ptr(), 0, &mut out) };
        assert_eq!(&out[..n], &[0xaaaa, 0x1111, 0x2222, 0x3333]);
        // SAFETY: as above.
        let n = unsafe { walk_user_stack(regs.as_ptr(), 2, &mut out) };
        assert_eq!(&out[..n], &[0x2222, 0x3333]);

        let mut buf = [0xffu8; 40];
        // SAFETY: buf is 40 writable bytes.
        let r = unsafe { get_stack(regs.as_ptr() as u64, buf.as_mut_ptr() as u64, 40, F_USER_STACK, 0, std::ptr::null_mut()) };
        assert_eq!(r, 32);
        assert_eq!(u64::from_le_bytes(buf[8..16].try_into().unwrap()), 0x1111);
        assert_eq!(&buf[32..], &[0u8; 8]);
        // SAFETY: as above.
        let r = unsafe { get_stack(regs.as_ptr() as u64, buf.as_mut_ptr() as u64, 40, 0, 0, std::ptr::null_mut()) };
        assert_eq!(r, 0);
        // Errors zero the buffer too (the kernel's `clear:`): bad flags, a
        // size that is no multiple of a frame, build ids.
        for (size, flags) in [(40, 1u64 << 20), (36, F_USER_STACK), (40, F_USER_STACK | F_USER_BUILD_ID)] {
            buf = [0xff; 40];
            // SAFETY: as above.
            let r = unsafe { get_stack(regs.as_ptr() as u64, buf.as_mut_ptr() as u64, size, flags, 0, std::ptr::null_mut()) };
            assert_eq!(r, EINVAL, "size {size} flags {flags:#x}");
            assert!(buf[..size as usize].iter().all(|&b| b == 0), "size {size} flags {flags:#x}: {buf:?}");
        }
        assert_eq!(buf, [0u8; 40]);
    }
}
