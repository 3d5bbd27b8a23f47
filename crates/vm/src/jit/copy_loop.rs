//! Recognition of the memory-copy loop idiom, lowered to `rep movsb`.
//!
//! Owns the pattern match and the code for one shape of loop — five
//! instructions, the first of which is the target of the last:
//!
//! ```text
//! head: ldx<S>  t, [p + o1]       ; S = 1, 2, 4 or 8 bytes (zero-extending)
//!       stx<S>  [q + o2], t
//!       add     p, S              ; 64-bit, these two in either order
//!       add     q, S
//!       jlt|jne c, b, head        ; 64-bit; c is p or q; b a register
//! ```
//!
//! with `p`, `q`, `t`, `b` four distinct registers other than r10. Nothing
//! else runs in the loop, so after `n` iterations `p` and `q` have advanced
//! by `n·S`, `t` holds the last element loaded, and `n·S` bytes were copied
//! from `p + o1` to `q + o2`, one element after the other, *forwards*.
//!
//! At the head the JIT emits a guarded fast path in front of the ordinary
//! translation of the loop (which the back edge still targets). It computes
//! `len = n·S` and takes the scalar loop unless all of these hold:
//!
//! - `b`, `s = p + o1` and `d = q + o2` are below 2⁶², so no address
//!   computation of the scalar loop wraps and the arithmetic below is exact;
//! - `c < b` (`jlt`: `len = ⌈(b − c) / S⌉·S`; `jne`: `len = b − c`, which
//!   must be a multiple of `S` — otherwise the scalar loop runs until the
//!   counter wraps, and it is left to do so);
//! - `len` is at least [`MIN_BULK_BYTES`] (below that the scalar loop is
//!   faster than starting a string copy);
//! - the regions `[s, s + len)` and `[d, d + len)` do not overlap: the
//!   scalar loop forward-propagates through an overlapping destination and
//!   `rep movsb` is only guaranteed to equal it when they are disjoint.
//!
//! Then `rep movsb` copies exactly the bytes the loop would have read and
//! written (same addresses: no access the scalar loop would not make), `p`
//! and `q` advance by `len`, and `t` is reloaded from the last source
//! element, which the copy did not change since the regions are disjoint.
//! The registers `rep movsb` needs (`rdi`, `rsi`, `rcx` = eBPF r1, r2, r4)
//! are saved on the native stack around it. Flags are not eBPF-visible.
//!
//! Under those conditions the result — memory and every register — is the
//! scalar loop's, and otherwise the scalar loop runs; `src/jit/tests.rs`
//! checks both engines on overlapping, disjoint, short, unaligned and
//! non-terminating-count cases.

use crate::insn::*;

use super::x86::{alu, cc, shift, Asm, Reg, Size};
use super::x86::{R10, R11, R9, RCX, RDI, RSI};

/// Copies shorter than this stay in the scalar loop (`rep movsb` has a
/// start-up cost of a few dozen cycles).
pub(super) const MIN_BULK_BYTES: i32 = 256;

/// A recognized copy loop starting at `head` (its five instructions are
/// `head..head + 5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CopyLoop {
    pub size: Size,
    /// Element width in bytes.
    pub width: i32,
    /// eBPF register numbers.
    pub src: u8,
    pub dst: u8,
    pub tmp: u8,
    pub bound: u8,
    /// The pointer compared with `bound` (`src` or `dst`).
    pub counter: u8,
    pub src_off: i16,
    pub dst_off: i16,
    /// `jne` (exact count) rather than `jlt`.
    pub exact: bool,
}

/// Number of instructions of the idiom.
pub(super) const LEN: usize = 5;

/// Match the idiom at `head` (a loop head).
pub(super) fn recognize(insns: &[Insn], head: usize) -> Option<CopyLoop> {
    let body = insns.get(head..head + LEN)?;
    let (ld, st, add_a, add_b, br) = (body[0], body[1], body[2], body[3], body[4]);

    if ld.class() != BPF_LDX || ld.opc & 0xe0 != BPF_MEM {
        return None;
    }
    let size_bits = ld.opc & 0x18;
    if st.opc != (BPF_STX | BPF_MEM | size_bits) || st.src != ld.dst {
        return None;
    }
    let (size, width) = match size_bits {
        BPF_B => (Size::B1, 1),
        BPF_H => (Size::B2, 2),
        BPF_W => (Size::B4, 4),
        _ => (Size::B8, 8),
    };
    let (src, dst, tmp) = (ld.src, st.dst, ld.dst);

    let add_of = |insn: Insn| -> Option<u8> {
        (insn.opc == BPF_ALU64 | BPF_ADD | BPF_K && insn.imm == width).then_some(insn.dst)
    };
    let (a, b) = (add_of(add_a)?, add_of(add_b)?);
    if !((a == src && b == dst) || (a == dst && b == src)) {
        return None;
    }

    let exact = match br.opc {
        o if o == BPF_JMP | BPF_JLT | BPF_X => false,
        o if o == BPF_JNE | BPF_JMP | BPF_X => true,
        _ => return None,
    };
    if br.jump_target(head + LEN - 1) != Some(head as i64) {
        return None;
    }
    let (counter, bound) = (br.dst, br.src);
    if counter != src && counter != dst {
        return None;
    }
    let regs = [src, dst, tmp, bound];
    let distinct = regs
        .iter()
        .enumerate()
        .all(|(i, r)| !regs[i + 1..].contains(r));
    if !distinct || regs.iter().any(|&r| r >= 10) {
        return None;
    }
    Some(CopyLoop {
        size,
        width,
        src,
        dst,
        tmp,
        bound,
        counter,
        src_off: ld.off,
        dst_off: st.off,
        exact,
    })
}

/// Emit the guarded fast path (see the module documentation). `reg` maps
/// eBPF registers to x86 ones. Returns the positions of the rel32s of the
/// jumps to take to the scalar loop (to be patched to it) and of the one
/// jump to take past the loop when the bulk copy ran.
pub(super) fn emit_fast_path(
    a: &mut Asm,
    l: &CopyLoop,
    reg: impl Fn(u8) -> Reg,
) -> (Vec<usize>, usize) {
    let (p, q, b, c, t) = (
        reg(l.src),
        reg(l.dst),
        reg(l.bound),
        reg(l.counter),
        reg(l.tmp),
    );
    let mut to_scalar = Vec::with_capacity(6);

    // r10 = s, r11 = d; (b | s | d) < 2^62.
    a.lea(R10, p, l.src_off as i32);
    a.lea(R11, q, l.dst_off as i32);
    a.mov_rr(true, R9, b);
    a.alu_rr(alu::OR, true, R9, R10);
    a.alu_rr(alu::OR, true, R9, R11);
    a.shift_ri(shift::SHR, true, R9, 62);
    to_scalar.push(a.jcc_rel32(cc::NE));

    // r9 = len; c < b.
    a.mov_rr(true, R9, b);
    a.alu_rr(alu::SUB, true, R9, c);
    to_scalar.push(a.jcc_rel32(cc::BE));
    if l.width > 1 {
        if l.exact {
            a.test_ri(true, R9, l.width - 1);
            to_scalar.push(a.jcc_rel32(cc::NE));
        } else {
            a.alu_ri(alu::ADD, true, R9, l.width - 1);
            a.alu_ri(alu::AND, true, R9, -l.width);
        }
    }
    a.alu_ri(alu::CMP, true, R9, MIN_BULK_BYTES);
    to_scalar.push(a.jcc_rel32(cc::B));

    // Disjoint: (d - s) mod 2^64 >= len and (s - d) mod 2^64 >= len.
    a.alu_rr(alu::SUB, true, R11, R10);
    a.alu_rr(alu::CMP, true, R11, R9);
    to_scalar.push(a.jcc_rel32(cc::B));
    a.neg(true, R11);
    a.alu_rr(alu::CMP, true, R11, R9);
    to_scalar.push(a.jcc_rel32(cc::B));
    a.neg(true, R11);
    a.alu_rr(alu::ADD, true, R11, R10);

    // The copy, with r1, r2, r4 saved (rep movsb clobbers rdi, rsi, rcx).
    for r in [RDI, RSI, RCX] {
        a.push(r);
    }
    a.mov_rr(true, RDI, R11);
    a.mov_rr(true, RSI, R10);
    a.mov_rr(true, RCX, R9);
    a.rep_movsb();
    for r in [RCX, RSI, RDI] {
        a.pop(r);
    }

    // The loop's final registers.
    a.alu_rr(alu::ADD, true, p, R9);
    a.alu_rr(alu::ADD, true, q, R9);
    a.alu_rr(alu::ADD, true, R10, R9);
    a.load(l.size, t, R10, -l.width);
    let past_loop = a.jmp_rel32();
    (to_scalar, past_loop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    fn at_head(text: &str) -> Option<CopyLoop> {
        let insns = assemble(text).unwrap();
        recognize(&insns, 1)
    }

    #[test]
    fn recognizes_the_copy_loop_in_its_variants() {
        let l = at_head(
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 8\nadd %r3, 8\n\
             jlt %r2, %r4, -5\nexit",
        )
        .expect("canonical loop");
        assert_eq!((l.src, l.dst, l.tmp, l.bound, l.counter), (2, 3, 5, 4, 2));
        assert!(!l.exact);
        let l = at_head(
            "mov %r4, 0\nldxb %r0, [%r6+3]\nstxb [%r7-2], %r0\nadd %r7, 1\nadd %r6, 1\n\
             jne %r7, %r9, -5\nexit",
        )
        .expect("byte loop, adds swapped, jne on the destination");
        assert_eq!((l.src, l.dst, l.counter, l.width), (6, 7, 7, 1));
        assert_eq!((l.src_off, l.dst_off), (3, -2));
        assert!(l.exact);
    }

    #[test]
    fn rejects_near_misses() {
        let cases = [
            // Widths differ.
            "mov %r4, 0\nldxw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 8\nadd %r3, 8\njlt %r2, %r4, -5\nexit",
            // Step differs from the width.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 16\nadd %r3, 8\njlt %r2, %r4, -5\nexit",
            // Stores another register.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r6\nadd %r2, 8\nadd %r3, 8\njlt %r2, %r4, -5\nexit",
            // Bound is the temporary.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 8\nadd %r3, 8\njlt %r2, %r5, -5\nexit",
            // Same pointer for source and destination.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r2+8], %r5\nadd %r2, 8\nadd %r2, 8\njlt %r2, %r4, -5\nexit",
            // Signed comparison.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 8\nadd %r3, 8\njslt %r2, %r4, -5\nexit",
            // 32-bit add.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd32 %r2, 8\nadd %r3, 8\njlt %r2, %r4, -5\nexit",
            // 32-bit compare.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 8\nadd %r3, 8\njlt32 %r2, %r4, -5\nexit",
            // Counter is neither pointer.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 8\nadd %r3, 8\njlt %r6, %r4, -5\nexit",
            // Sign-extending load.
            "mov %r4, 0\nldxsw %r5, [%r2]\nstxw [%r3], %r5\nadd %r2, 4\nadd %r3, 4\njlt %r2, %r4, -5\nexit",
            // Branch does not go back to the head.
            "mov %r4, 0\nldxdw %r5, [%r2]\nstxdw [%r3], %r5\nadd %r2, 8\nadd %r3, 8\njlt %r2, %r4, -4\nexit",
        ];
        for text in cases {
            assert_eq!(at_head(text), None, "{text}");
        }
    }
}
