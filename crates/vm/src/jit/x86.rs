//! A minimal direct x86-64 instruction encoder for the JIT.
//!
//! Owns the byte-level encoding (REX/VEX prefixes, ModRM/SIB, immediates) of
//! exactly the instructions the code generator needs, nothing more. Every
//! method appends one instruction to the buffer. Registers are the hardware
//! numbers 0..15 (`RAX`..`R15`); `w` selects 64-bit (`true`) or 32-bit
//! operand size. Memory operands are always `[base + disp32]`.

pub type Reg = u8;

pub const RAX: Reg = 0;
pub const RCX: Reg = 1;
pub const RDX: Reg = 2;
pub const RBX: Reg = 3;
pub const RSP: Reg = 4;
pub const RBP: Reg = 5;
pub const RSI: Reg = 6;
pub const RDI: Reg = 7;
pub const R8: Reg = 8;
pub const R9: Reg = 9;
pub const R10: Reg = 10;
pub const R11: Reg = 11;
pub const R12: Reg = 12;
pub const R13: Reg = 13;
pub const R14: Reg = 14;
pub const R15: Reg = 15;

/// Condition codes (the low nibble of `Jcc`).
pub mod cc {
    pub const B: u8 = 0x2; // unsigned <
    pub const AE: u8 = 0x3; // unsigned >=
    pub const E: u8 = 0x4;
    pub const NE: u8 = 0x5;
    pub const BE: u8 = 0x6; // unsigned <=
    pub const A: u8 = 0x7; // unsigned >
    pub const L: u8 = 0xc; // signed <
    pub const GE: u8 = 0xd; // signed >=
    pub const LE: u8 = 0xe; // signed <=
    pub const G: u8 = 0xf; // signed >
}

/// Two-operand ALU opcodes in their `op r/m, reg` form; the `/digit` of the
/// immediate form (`0x81`/`0x83`) is `opcode >> 3`.
pub mod alu {
    pub const ADD: u8 = 0x01;
    pub const OR: u8 = 0x09;
    pub const AND: u8 = 0x21;
    pub const SUB: u8 = 0x29;
    pub const XOR: u8 = 0x31;
    pub const CMP: u8 = 0x39;
}

/// `/digit` of the shift group (`0xC1`, `0xD1`, `0xD3`).
pub mod shift {
    pub const SHL: u8 = 4;
    pub const SHR: u8 = 5;
    pub const SAR: u8 = 7;
}

/// Operand size of a memory access in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    B1,
    B2,
    B4,
    B8,
}

#[inline]
pub const fn fits_i8(v: i64) -> bool {
    v >= i8::MIN as i64 && v <= i8::MAX as i64
}

#[inline]
pub const fn fits_i32(v: i64) -> bool {
    v >= i32::MIN as i64 && v <= i32::MAX as i64
}

/// The output buffer plus the encoding primitives.
pub struct Asm {
    pub buf: Vec<u8>,
}

impl Asm {
    pub fn with_capacity(n: usize) -> Asm {
        Asm {
            buf: Vec::with_capacity(n),
        }
    }

    #[inline]
    pub fn pos(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    fn b(&mut self, byte: u8) {
        self.buf.push(byte);
    }

    #[inline]
    fn i32le(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// REX prefix; emitted only when some bit is set or `force` (needed to
    /// address `spl`/`bpl`/`sil`/`dil` as byte registers).
    #[inline]
    fn rex(&mut self, w: bool, r: Reg, x: Reg, b: Reg, force: bool) {
        let rex = 0x40 | ((w as u8) << 3) | ((r >> 3) << 2) | ((x >> 3) << 1) | (b >> 3);
        if rex != 0x40 || force {
            self.b(rex);
        }
    }

    #[inline]
    fn modrm_rr(&mut self, reg: Reg, rm: Reg) {
        self.b(0xc0 | ((reg & 7) << 3) | (rm & 7));
    }

    /// ModRM (+SIB, +displacement) for `[base + disp]`.
    #[inline]
    fn modrm_mem(&mut self, reg: Reg, base: Reg, disp: i32) {
        let reg = (reg & 7) << 3;
        let rm = base & 7;
        let mode = if disp == 0 && rm != 5 {
            0x00
        } else if fits_i8(disp as i64) {
            0x40
        } else {
            0x80
        };
        self.b(mode | reg | rm);
        if rm == 4 {
            self.b(0x24); // SIB: base only
        }
        match mode {
            0x40 => self.b(disp as i8 as u8),
            0x80 => self.i32le(disp),
            _ => {}
        }
    }

    // ---- register/register ----------------------------------------------

    /// `op dst, src` for the two-operand ALU group and `cmp`.
    #[inline]
    pub fn alu_rr(&mut self, op: u8, w: bool, dst: Reg, src: Reg) {
        self.rex(w, src, 0, dst, false);
        self.b(op);
        self.modrm_rr(src, dst);
    }

    /// `op dst, imm` (imm sign-extended to 64 bits when `w`).
    #[inline]
    pub fn alu_ri(&mut self, op: u8, w: bool, dst: Reg, imm: i32) {
        self.rex(w, 0, 0, dst, false);
        if fits_i8(imm as i64) {
            self.b(0x83);
            self.modrm_rr(op >> 3, dst);
            self.b(imm as i8 as u8);
        } else {
            self.b(0x81);
            self.modrm_rr(op >> 3, dst);
            self.i32le(imm);
        }
    }

    /// `test a, b`.
    #[inline]
    pub fn test_rr(&mut self, w: bool, a: Reg, b: Reg) {
        self.rex(w, b, 0, a, false);
        self.b(0x85);
        self.modrm_rr(b, a);
    }

    /// `test r, imm32`.
    #[inline]
    pub fn test_ri(&mut self, w: bool, r: Reg, imm: i32) {
        self.rex(w, 0, 0, r, false);
        self.b(0xf7);
        self.modrm_rr(0, r);
        self.i32le(imm);
    }

    /// `mov dst, src` (32-bit form zero-extends).
    #[inline]
    pub fn mov_rr(&mut self, w: bool, dst: Reg, src: Reg) {
        self.alu_rr(0x89, w, dst, src);
    }

    /// Load a 64-bit constant with the shortest encoding.
    #[inline]
    pub fn mov_ri64(&mut self, dst: Reg, imm: u64) {
        if imm == 0 {
            self.alu_rr(alu::XOR, false, dst, dst);
        } else if imm <= u32::MAX as u64 {
            self.mov_ri32(dst, imm as u32);
        } else if fits_i32(imm as i64) {
            self.rex(true, 0, 0, dst, false);
            self.b(0xc7);
            self.modrm_rr(0, dst);
            self.i32le(imm as i32);
        } else {
            self.rex(true, 0, 0, dst, false);
            self.b(0xb8 | (dst & 7));
            self.buf.extend_from_slice(&imm.to_le_bytes());
        }
    }

    /// A 12-byte absolute call slot: `movabs rax, target; call rax`.
    /// [`patch_call_slot`] may turn it into a 7-byte NOP + `call rel32` once
    /// the code's final address is known. Returns the slot's position.
    #[inline]
    pub fn call_slot(&mut self, target: u64) -> usize {
        let at = self.pos();
        self.b(0x48);
        self.b(0xb8);
        self.buf.extend_from_slice(&target.to_le_bytes());
        self.b(0xff);
        self.b(0xd0);
        at
    }

    /// `mov r32, imm32` (zero-extends into the full register).
    #[inline]
    pub fn mov_ri32(&mut self, dst: Reg, imm: u32) {
        self.rex(false, 0, 0, dst, false);
        self.b(0xb8 | (dst & 7));
        self.i32le(imm as i32);
    }

    /// `imul dst, src`.
    #[inline]
    pub fn imul_rr(&mut self, w: bool, dst: Reg, src: Reg) {
        self.rex(w, dst, 0, src, false);
        self.b(0x0f);
        self.b(0xaf);
        self.modrm_rr(dst, src);
    }

    /// `imul dst, dst, imm`.
    #[inline]
    pub fn imul_ri(&mut self, w: bool, dst: Reg, imm: i32) {
        self.rex(w, dst, 0, dst, false);
        if fits_i8(imm as i64) {
            self.b(0x6b);
            self.modrm_rr(dst, dst);
            self.b(imm as i8 as u8);
        } else {
            self.b(0x69);
            self.modrm_rr(dst, dst);
            self.i32le(imm);
        }
    }

    /// Unary group 3 (`F7 /digit`): 3 = neg, 6 = div, 7 = idiv.
    #[inline]
    pub fn group3(&mut self, digit: u8, w: bool, r: Reg) {
        self.rex(w, 0, 0, r, false);
        self.b(0xf7);
        self.modrm_rr(digit, r);
    }

    #[inline]
    pub fn neg(&mut self, w: bool, r: Reg) {
        self.group3(3, w, r);
    }

    /// `cqo` (w) / `cdq`: sign-extend rax/eax into rdx/edx.
    #[inline]
    pub fn cqo(&mut self, w: bool) {
        if w {
            self.b(0x48);
        }
        self.b(0x99);
    }

    /// Shift by immediate (already masked by the caller).
    #[inline]
    pub fn shift_ri(&mut self, digit: u8, w: bool, dst: Reg, imm: u8) {
        self.rex(w, 0, 0, dst, false);
        if imm == 1 {
            self.b(0xd1);
            self.modrm_rr(digit, dst);
        } else {
            self.b(0xc1);
            self.modrm_rr(digit, dst);
            self.b(imm);
        }
    }

    /// Shift by `cl`.
    #[inline]
    pub fn shift_cl(&mut self, digit: u8, w: bool, dst: Reg) {
        self.rex(w, 0, 0, dst, false);
        self.b(0xd3);
        self.modrm_rr(digit, dst);
    }

    /// BMI2 `shlx`/`shrx`/`sarx dst, src, count` (count masked by the CPU
    /// to 5/6 bits, exactly eBPF's rule).
    #[inline]
    pub fn shiftx(&mut self, digit: u8, w: bool, dst: Reg, src: Reg, count: Reg) {
        let pp = match digit {
            shift::SHL => 1, // 66
            shift::SAR => 2, // F3
            _ => 3,          // F2 (shrx)
        };
        self.b(0xc4);
        // R̄ X̄ B̄, map 0F38
        self.b((((!dst >> 3) & 1) << 7) | (1 << 6) | (((!src >> 3) & 1) << 5) | 0x02);
        self.b(((w as u8) << 7) | (((!count) & 0xf) << 3) | pp);
        self.b(0xf7);
        self.modrm_rr(dst, src);
    }

    /// `bswap r` (32 or 64 bits).
    #[inline]
    pub fn bswap(&mut self, w: bool, r: Reg) {
        self.rex(w, 0, 0, r, false);
        self.b(0x0f);
        self.b(0xc8 | (r & 7));
    }

    /// `ror r16, 8` — swaps the two low bytes.
    #[inline]
    pub fn ror16_8(&mut self, r: Reg) {
        self.b(0x66);
        self.rex(false, 0, 0, r, false);
        self.b(0xc1);
        self.modrm_rr(1, r);
        self.b(8);
    }

    /// `movzx r32, r16`.
    #[inline]
    pub fn movzx16_rr(&mut self, dst: Reg, src: Reg) {
        self.rex(false, dst, 0, src, false);
        self.b(0x0f);
        self.b(0xb7);
        self.modrm_rr(dst, src);
    }

    /// `movsx dst, src8/src16/src32` into 64 (`w`) or 32 bits.
    #[inline]
    pub fn movsx_rr(&mut self, w: bool, from: Size, dst: Reg, src: Reg) {
        match from {
            Size::B1 => {
                self.rex(w, dst, 0, src, src >= 4);
                self.b(0x0f);
                self.b(0xbe);
            }
            Size::B2 => {
                self.rex(w, dst, 0, src, false);
                self.b(0x0f);
                self.b(0xbf);
            }
            Size::B4 | Size::B8 => {
                self.rex(true, dst, 0, src, false);
                self.b(0x63);
            }
        }
        self.modrm_rr(dst, src);
    }

    /// `lea dst, [base + disp]`.
    #[inline]
    pub fn lea(&mut self, dst: Reg, base: Reg, disp: i32) {
        self.rex(true, dst, 0, base, false);
        self.b(0x8d);
        self.modrm_mem(dst, base, disp);
    }

    // ---- memory ------------------------------------------------------------

    /// Zero-extending load of `size` bytes into `dst`.
    #[inline]
    pub fn load(&mut self, size: Size, dst: Reg, base: Reg, disp: i32) {
        match size {
            Size::B1 | Size::B2 => {
                self.rex(false, dst, 0, base, false);
                self.b(0x0f);
                self.b(if size == Size::B1 { 0xb6 } else { 0xb7 });
            }
            Size::B4 => {
                self.rex(false, dst, 0, base, false);
                self.b(0x8b);
            }
            Size::B8 => {
                self.rex(true, dst, 0, base, false);
                self.b(0x8b);
            }
        }
        self.modrm_mem(dst, base, disp);
    }

    /// Sign-extending load of `size` bytes into the 64-bit `dst`.
    #[inline]
    pub fn load_sx(&mut self, size: Size, dst: Reg, base: Reg, disp: i32) {
        self.rex(true, dst, 0, base, false);
        match size {
            Size::B1 => {
                self.b(0x0f);
                self.b(0xbe);
            }
            Size::B2 => {
                self.b(0x0f);
                self.b(0xbf);
            }
            Size::B4 => self.b(0x63),
            Size::B8 => self.b(0x8b),
        }
        self.modrm_mem(dst, base, disp);
    }

    /// Opcode prefix shared by register stores and the atomics: operand-size
    /// prefix for 16 bits, REX (forced for byte registers 4..7).
    #[inline]
    fn mem_reg_prefix(&mut self, size: Size, reg: Reg, base: Reg) {
        if size == Size::B2 {
            self.b(0x66);
        }
        self.rex(
            size == Size::B8,
            reg,
            0,
            base,
            size == Size::B1 && (4..8).contains(&reg),
        );
    }

    /// Store the low `size` bytes of `src`.
    #[inline]
    pub fn store(&mut self, size: Size, base: Reg, disp: i32, src: Reg) {
        self.mem_reg_prefix(size, src, base);
        self.b(if size == Size::B1 { 0x88 } else { 0x89 });
        self.modrm_mem(src, base, disp);
    }

    /// Store an immediate (for 8 bytes: sign-extended imm32).
    #[inline]
    pub fn store_imm(&mut self, size: Size, base: Reg, disp: i32, imm: i32) {
        if size == Size::B2 {
            self.b(0x66);
        }
        self.rex(size == Size::B8, 0, 0, base, false);
        self.b(if size == Size::B1 { 0xc6 } else { 0xc7 });
        self.modrm_mem(0, base, disp);
        match size {
            Size::B1 => self.b(imm as u8),
            Size::B2 => self.buf.extend_from_slice(&(imm as u16).to_le_bytes()),
            _ => self.i32le(imm),
        }
    }

    /// `lock op [base + disp], src` for add/or/and/xor (32 or 64 bits).
    #[inline]
    pub fn lock_alu_mem(&mut self, op: u8, w: bool, base: Reg, disp: i32, src: Reg) {
        self.b(0xf0);
        self.rex(w, src, 0, base, false);
        self.b(op);
        self.modrm_mem(src, base, disp);
    }

    /// `op dword/qword [base + disp], imm8` (add/cmp/... on memory).
    #[inline]
    pub fn alu_mi8(&mut self, op: u8, w: bool, base: Reg, disp: i32, imm: i8) {
        self.rex(w, 0, 0, base, false);
        self.b(0x83);
        self.modrm_mem(op >> 3, base, disp);
        self.b(imm as u8);
    }

    /// `lock xadd [base + disp], src`.
    #[inline]
    pub fn lock_xadd(&mut self, w: bool, base: Reg, disp: i32, src: Reg) {
        self.b(0xf0);
        self.rex(w, src, 0, base, false);
        self.b(0x0f);
        self.b(0xc1);
        self.modrm_mem(src, base, disp);
    }

    /// `lock cmpxchg [base + disp], src` (compares with rax/eax).
    #[inline]
    pub fn lock_cmpxchg(&mut self, w: bool, base: Reg, disp: i32, src: Reg) {
        self.b(0xf0);
        self.rex(w, src, 0, base, false);
        self.b(0x0f);
        self.b(0xb1);
        self.modrm_mem(src, base, disp);
    }

    /// `xchg [base + disp], src` (implicitly locked).
    #[inline]
    pub fn xchg_mem(&mut self, w: bool, base: Reg, disp: i32, src: Reg) {
        self.rex(w, src, 0, base, false);
        self.b(0x87);
        self.modrm_mem(src, base, disp);
    }

    /// Pad with the recommended multi-byte NOPs up to a multiple of `align`
    /// (a power of two).
    #[inline]
    pub fn align_with_nops(&mut self, align: usize) {
        const NOPS: [&[u8]; 9] = [
            &[0x90],
            &[0x66, 0x90],
            &[0x0f, 0x1f, 0x00],
            &[0x0f, 0x1f, 0x40, 0x00],
            &[0x0f, 0x1f, 0x44, 0x00, 0x00],
            &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
            &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
            &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
            &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        ];
        let mut pad = self.pos().wrapping_neg() & (align - 1);
        while pad > 0 {
            let n = pad.min(NOPS.len());
            self.buf.extend_from_slice(NOPS[n - 1]);
            pad -= n;
        }
    }

    /// `rep movsb`: copy `rcx` bytes from `[rsi]` to `[rdi]`, forwards
    /// (the ABI keeps the direction flag clear), advancing both.
    #[inline]
    pub fn rep_movsb(&mut self) {
        self.b(0xf3);
        self.b(0xa4);
    }

    // ---- control flow --------------------------------------------------------

    #[inline]
    pub fn push(&mut self, r: Reg) {
        self.rex(false, 0, 0, r, false);
        self.b(0x50 | (r & 7));
    }

    #[inline]
    pub fn pop(&mut self, r: Reg) {
        self.rex(false, 0, 0, r, false);
        self.b(0x58 | (r & 7));
    }

    #[inline]
    pub fn ret(&mut self) {
        self.b(0xc3);
    }

    /// `call r`.
    #[inline]
    pub fn call_reg(&mut self, r: Reg) {
        self.rex(false, 0, 0, r, false);
        self.b(0xff);
        self.modrm_rr(2, r);
    }

    /// `jmp r`.
    #[inline]
    pub fn jmp_reg(&mut self, r: Reg) {
        self.rex(false, 0, 0, r, false);
        self.b(0xff);
        self.modrm_rr(4, r);
    }

    /// `call rel32` with a placeholder; returns the position of the rel32.
    #[inline]
    pub fn call_rel32(&mut self) -> usize {
        self.b(0xe8);
        let at = self.pos();
        self.i32le(0);
        at
    }

    /// `jmp rel32` with a placeholder; returns the position of the rel32.
    #[inline]
    pub fn jmp_rel32(&mut self) -> usize {
        self.b(0xe9);
        let at = self.pos();
        self.i32le(0);
        at
    }

    /// `jcc rel32` with a placeholder; returns the position of the rel32.
    #[inline]
    pub fn jcc_rel32(&mut self, cond: u8) -> usize {
        self.b(0x0f);
        self.b(0x80 | cond);
        let at = self.pos();
        self.i32le(0);
        at
    }

    /// `jmp rel8` with a placeholder; returns the position of the rel8.
    #[inline]
    pub fn jmp_rel8(&mut self) -> usize {
        self.b(0xeb);
        self.b(0);
        self.pos() - 1
    }

    /// `jcc rel8` with a placeholder; returns the position of the rel8.
    #[inline]
    pub fn jcc_rel8(&mut self, cond: u8) -> usize {
        self.b(0x70 | cond);
        self.b(0);
        self.pos() - 1
    }

    /// Jump (conditional if `cond` is `Some`) to an already emitted
    /// position, with the short form when it reaches.
    #[inline]
    pub fn jump_back(&mut self, cond: Option<u8>, target: usize) {
        let short_len = 2;
        let rel8 = target as i64 - (self.pos() + short_len) as i64;
        if fits_i8(rel8) {
            match cond {
                Some(c) => self.b(0x70 | c),
                None => self.b(0xeb),
            }
            self.b(rel8 as i8 as u8);
        } else {
            let at = match cond {
                Some(c) => self.jcc_rel32(c),
                None => self.jmp_rel32(),
            };
            self.patch_rel32(at, target);
        }
    }

    /// Point the rel32 at `at` to `target` (both buffer positions).
    #[inline]
    pub fn patch_rel32(&mut self, at: usize, target: usize) {
        let rel = (target as i64 - (at as i64 + 4)) as i32;
        self.buf[at..at + 4].copy_from_slice(&rel.to_le_bytes());
    }

    /// Point the rel8 at `at` to `target`. Callers use short jumps only
    /// over code of bounded size; a miss is a JIT bug, never silently
    /// wrong code.
    #[inline]
    pub fn patch_rel8(&mut self, at: usize, target: usize) {
        let rel = target as i64 - (at as i64 + 1);
        assert!(fits_i8(rel), "JIT bug: short jump over {rel} bytes");
        self.buf[at] = rel as i8 as u8;
    }
}

/// Length of a [`Asm::call_slot`].
pub const CALL_SLOT_LEN: usize = 12;

/// Rewrite the call slot at `code[at..]`, which will live at address
/// `slot_addr`, into a 7-byte NOP and a direct `call rel32` to `target`,
/// when the target is within ±2 GiB. Returns whether it did. (Measured: an
/// indirect `call rax` to a helper runs a tight helper loop ~40% slower in
/// some address layouts; the direct call never does.)
pub fn patch_call_slot(code: &mut [u8], at: usize, slot_addr: u64, target: u64) -> bool {
    let rel = target as i64 - (slot_addr as i64 + CALL_SLOT_LEN as i64);
    if !fits_i32(rel) || code.len() < at + CALL_SLOT_LEN {
        return false;
    }
    // NOP first, so the helper returns straight to the next instruction.
    let slot = &mut code[at..at + CALL_SLOT_LEN];
    slot[..7].copy_from_slice(&[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00]);
    slot[7] = 0xe8;
    slot[8..].copy_from_slice(&(rel as i32).to_le_bytes());
    true
}

#[cfg(test)]
mod tests {
    //! Byte-exact encodings checked against iced-x86's decoder.
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn text(f: impl FnOnce(&mut Asm)) -> String {
        let mut a = Asm::with_capacity(16);
        f(&mut a);
        let mut d = Decoder::with_ip(64, &a.buf, 0, DecoderOptions::NONE);
        let mut fmt = IntelFormatter::new();
        let mut out = String::new();
        let mut parts = Vec::new();
        while d.can_decode() {
            let insn = d.decode();
            assert!(!insn.is_invalid(), "invalid encoding {:02x?}", a.buf);
            out.clear();
            fmt.format(&insn, &mut out);
            parts.push(out.clone());
        }
        parts.join("; ")
    }

    #[test]
    fn encodings_decode_as_intended() {
        assert_eq!(text(|a| a.alu_rr(alu::ADD, true, R13, RAX)), "add r13,rax");
        assert_eq!(
            text(|a| a.alu_rr(alu::SUB, false, RDI, R15)),
            "sub edi,r15d"
        );
        assert_eq!(
            text(|a| a.alu_ri(alu::AND, true, RBX, -2)),
            "and rbx,0FFFFFFFFFFFFFFFEh"
        );
        assert_eq!(
            text(|a| a.alu_ri(alu::CMP, false, R8, 1000)),
            "cmp r8d,3E8h"
        );
        assert_eq!(
            text(|a| a.mov_ri64(R14, 0x1234_5678_9abc)),
            "mov r14,123456789ABCh"
        );
        assert_eq!(
            text(|a| a.mov_ri64(RAX, u64::MAX)),
            "mov rax,0FFFFFFFFFFFFFFFFh"
        );
        assert_eq!(text(|a| a.mov_ri64(RAX, 7)), "mov eax,7");
        assert_eq!(text(|a| a.imul_ri(true, R13, 300)), "imul r13,12Ch");
        assert_eq!(text(|a| a.imul_rr(false, RCX, R9)), "imul ecx,r9d");
        assert_eq!(text(|a| a.group3(7, true, R11)), "idiv r11");
        assert_eq!(
            text(|a| a.shift_ri(shift::SAR, true, R15, 63)),
            "sar r15,3Fh"
        );
        assert_eq!(text(|a| a.shift_cl(shift::SHR, false, RBX)), "shr ebx,cl");
        assert_eq!(
            text(|a| a.shiftx(shift::SHL, true, R13, R14, R8)),
            "shlx r13,r14,r8"
        );
        assert_eq!(
            text(|a| a.shiftx(shift::SHR, false, RAX, RBX, RCX)),
            "shrx eax,ebx,ecx"
        );
        assert_eq!(
            text(|a| a.shiftx(shift::SAR, true, RDI, R15, R13)),
            "sarx rdi,r15,r13"
        );
        assert_eq!(text(|a| a.bswap(true, R14)), "bswap r14");
        assert_eq!(text(|a| a.rep_movsb()), "rep movsb [rdi],[rsi]");
        assert_eq!(text(|a| a.ror16_8(RSI)), "ror si,8");
        assert_eq!(text(|a| a.movzx16_rr(R13, R13)), "movzx r13d,r13w");
        assert_eq!(
            text(|a| a.movsx_rr(true, Size::B1, RAX, RSI)),
            "movsx rax,sil"
        );
        assert_eq!(
            text(|a| a.movsx_rr(false, Size::B1, RAX, RDI)),
            "movsx eax,dil"
        );
        assert_eq!(
            text(|a| a.movsx_rr(true, Size::B4, R8, RBP)),
            "movsxd r8,ebp"
        );
        assert_eq!(
            text(|a| a.load(Size::B1, RAX, RBP, -8)),
            "movzx eax,byte ptr [rbp-8]"
        );
        assert_eq!(text(|a| a.load(Size::B8, R13, R12, 0)), "mov r13,[r12]");
        assert_eq!(text(|a| a.load(Size::B4, RDX, R13, 0)), "mov edx,[r13]");
        assert_eq!(
            text(|a| a.load_sx(Size::B2, RSI, RDI, 1000)),
            "movsx rsi,word ptr [rdi+3E8h]"
        );
        assert_eq!(text(|a| a.store(Size::B1, RAX, 3, RSI)), "mov [rax+3],sil");
        assert_eq!(text(|a| a.store(Size::B2, RBP, -2, R9)), "mov [rbp-2],r9w");
        assert_eq!(
            text(|a| a.store_imm(Size::B8, RSP, 16, -1)),
            "mov qword ptr [rsp+10h],0FFFFFFFFFFFFFFFFh"
        );
        assert_eq!(
            text(|a| a.store_imm(Size::B2, RDI, 0, 0x1234)),
            "mov word ptr [rdi],1234h"
        );
        assert_eq!(
            text(|a| a.lock_alu_mem(alu::XOR, false, RDI, 8, RBX)),
            "lock xor [rdi+8],ebx"
        );
        assert_eq!(
            text(|a| a.lock_xadd(true, R10, 0, RSI)),
            "lock xadd [r10],rsi"
        );
        assert_eq!(
            text(|a| a.lock_cmpxchg(false, RBP, -4, R11)),
            "lock cmpxchg [rbp-4],r11d"
        );
        assert_eq!(text(|a| a.xchg_mem(true, RDI, 0, R13)), "xchg [rdi],r13");
        assert_eq!(text(|a| a.lea(RBP, R12, 4128)), "lea rbp,[r12+1020h]");
        assert_eq!(text(|a| a.call_reg(R11)), "call r11");
        assert_eq!(
            text(|a| {
                a.call_slot(0x1234_5678_9abc);
            }),
            "mov rax,123456789ABCh; call rax"
        );
        let mut a = Asm::with_capacity(16);
        a.call_slot(0x10_0000);
        assert!(patch_call_slot(&mut a.buf, 0, 0x1000, 0x10_0000));
        let mut d = Decoder::with_ip(64, &a.buf, 0x1000, DecoderOptions::NONE);
        assert_eq!(d.decode().mnemonic(), iced_x86::Mnemonic::Nop);
        let call = d.decode();
        assert_eq!(call.mnemonic(), iced_x86::Mnemonic::Call);
        assert_eq!(call.near_branch_target(), 0x10_0000);
        assert!(!d.can_decode());
        assert!(!patch_call_slot(&mut a.buf, 0, 0x1000, 0x1_0000_0000_0000));
        assert_eq!(text(|a| a.test_ri(true, RBX, 0x10)), "test rbx,10h");
        for start in 0..32 {
            let mut a = Asm::with_capacity(64);
            a.buf.resize(start, 0x90);
            a.align_with_nops(16);
            assert_eq!(a.pos() % 16, 0);
            assert!(a.pos() - start < 16);
            let mut d = Decoder::with_ip(64, &a.buf[start..], 0, DecoderOptions::NONE);
            while d.can_decode() {
                let insn = d.decode();
                assert_eq!(
                    insn.mnemonic(),
                    iced_x86::Mnemonic::Nop,
                    "padding from {start}"
                );
            }
        }
        assert_eq!(
            text(|a| a.alu_mi8(alu::CMP, false, R12, 16, 33)),
            "cmp dword ptr [r12+10h],21h"
        );
    }
}
