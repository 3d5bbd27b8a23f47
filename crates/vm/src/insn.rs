//! The eBPF instruction encoding (RFC 9669): the 64-bit instruction word,
//! its fields, and the opcode constants every other module of the VM (and the
//! verifier, and the tools) speaks in.
//!
//! This module owns *only* the encoding. What an instruction means lives in
//! the interpreter (the oracle) and the JIT; what is legal lives in
//! `program.rs` (structural checks) and the `verifier` crate (safety).

/// One decoded 64-bit instruction slot. `lddw` occupies two slots; the second
/// slot is an `Insn` with `opc == 0` whose `imm` holds the upper 32 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Insn {
    pub opc: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// Decode from the little-endian 64-bit word as it sits in memory.
    #[inline]
    pub const fn from_u64(w: u64) -> Insn {
        Insn {
            opc: w as u8,
            dst: ((w >> 8) & 0xf) as u8,
            src: ((w >> 12) & 0xf) as u8,
            off: (w >> 16) as u16 as i16,
            imm: (w >> 32) as u32 as i32,
        }
    }

    /// Encode back to the 64-bit word (little-endian host order).
    #[inline]
    pub const fn to_u64(self) -> u64 {
        (self.opc as u64)
            | (((self.dst & 0xf) as u64) << 8)
            | (((self.src & 0xf) as u64) << 12)
            | ((self.off as u16 as u64) << 16)
            | ((self.imm as u32 as u64) << 32)
    }

    /// Decode from 8 raw bytes (the layout of `struct bpf_insn`).
    #[inline]
    pub fn from_bytes(b: &[u8; 8]) -> Insn {
        Insn::from_u64(u64::from_le_bytes(*b))
    }

    #[inline]
    pub const fn class(self) -> u8 {
        self.opc & 0x07
    }

    /// Build an instruction from its fields (convenience for tests and code
    /// generators).
    #[inline]
    pub const fn new(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { opc, dst, src, off, imm }
    }

    /// True for the first slot of a 64-bit immediate load.
    #[inline]
    pub const fn is_lddw(self) -> bool {
        self.opc == LDDW
    }

    /// Target slot of a jump at `pc` (`ja`, `ja32`/`gotol`, conditional
    /// jumps), as a possibly out-of-range signed index; `None` for every
    /// other instruction, calls included.
    #[inline]
    pub const fn jump_target(self, pc: usize) -> Option<i64> {
        let class = self.class();
        if class != BPF_JMP && class != BPF_JMP32 {
            return None;
        }
        match self.opc & 0xf0 {
            BPF_CALL | BPF_EXIT => None,
            BPF_JA if class == BPF_JMP32 => Some(pc as i64 + 1 + self.imm as i64),
            _ => Some(pc as i64 + 1 + self.off as i64),
        }
    }

    /// Target slot of a BPF-to-BPF call (`call` with src 1) at `pc`.
    #[inline]
    pub const fn local_call_target(self, pc: usize) -> Option<i64> {
        if self.opc == CALL && self.src == BPF_PSEUDO_CALL {
            Some(pc as i64 + 1 + self.imm as i64)
        } else {
            None
        }
    }
}

/// Decode a byte slice holding `struct bpf_insn[]`. The caller has checked
/// `bytes.len() % 8 == 0` (trailing bytes are ignored).
pub fn decode_all(bytes: &[u8]) -> Vec<Insn> {
    bytes
        .chunks_exact(8)
        .map(|c| Insn::from_bytes(c.try_into().unwrap()))
        .collect()
}

// ---- instruction classes -------------------------------------------------
pub const BPF_LD: u8 = 0x00;
pub const BPF_LDX: u8 = 0x01;
pub const BPF_ST: u8 = 0x02;
pub const BPF_STX: u8 = 0x03;
pub const BPF_ALU: u8 = 0x04;
pub const BPF_JMP: u8 = 0x05;
pub const BPF_JMP32: u8 = 0x06;
pub const BPF_ALU64: u8 = 0x07;

// ---- size (load/store) ---------------------------------------------------
pub const BPF_W: u8 = 0x00;
pub const BPF_H: u8 = 0x08;
pub const BPF_B: u8 = 0x10;
pub const BPF_DW: u8 = 0x18;

// ---- mode (load/store) ---------------------------------------------------
pub const BPF_IMM: u8 = 0x00;
pub const BPF_ABS: u8 = 0x20;
pub const BPF_IND: u8 = 0x40;
pub const BPF_MEM: u8 = 0x60;
/// Sign-extending load (v4), `ldxs{b,h,w}`.
pub const BPF_MEMSX: u8 = 0x80;
pub const BPF_ATOMIC: u8 = 0xc0;

// ---- source --------------------------------------------------------------
pub const BPF_K: u8 = 0x00;
pub const BPF_X: u8 = 0x08;

// ---- ALU operations ------------------------------------------------------
pub const BPF_ADD: u8 = 0x00;
pub const BPF_SUB: u8 = 0x10;
pub const BPF_MUL: u8 = 0x20;
pub const BPF_DIV: u8 = 0x30;
pub const BPF_OR: u8 = 0x40;
pub const BPF_AND: u8 = 0x50;
pub const BPF_LSH: u8 = 0x60;
pub const BPF_RSH: u8 = 0x70;
pub const BPF_NEG: u8 = 0x80;
pub const BPF_MOD: u8 = 0x90;
pub const BPF_XOR: u8 = 0xa0;
pub const BPF_MOV: u8 = 0xb0;
pub const BPF_ARSH: u8 = 0xc0;
/// Byte swap: in class ALU, source bit selects `le` (K) or `be` (X); in class
/// ALU64 with source K it is the unconditional `bswap` (v4).
pub const BPF_END: u8 = 0xd0;
pub const BPF_TO_LE: u8 = 0x00;
pub const BPF_TO_BE: u8 = 0x08;

// ---- jump operations -----------------------------------------------------
pub const BPF_JA: u8 = 0x00;
pub const BPF_JEQ: u8 = 0x10;
pub const BPF_JGT: u8 = 0x20;
pub const BPF_JGE: u8 = 0x30;
pub const BPF_JSET: u8 = 0x40;
pub const BPF_JNE: u8 = 0x50;
pub const BPF_JSGT: u8 = 0x60;
pub const BPF_JSGE: u8 = 0x70;
pub const BPF_CALL: u8 = 0x80;
pub const BPF_EXIT: u8 = 0x90;
pub const BPF_JLT: u8 = 0xa0;
pub const BPF_JLE: u8 = 0xb0;
pub const BPF_JSLT: u8 = 0xc0;
pub const BPF_JSLE: u8 = 0xd0;

// ---- atomic operations (imm field of BPF_STX|BPF_ATOMIC) -----------------
pub const BPF_FETCH: i32 = 0x01;
pub const BPF_XCHG: i32 = 0xe0 | BPF_FETCH;
pub const BPF_CMPXCHG: i32 = 0xf0 | BPF_FETCH;

// ---- pseudo sources ------------------------------------------------------
/// `lddw` src: imm is a map fd.
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `lddw` src: imm is a map fd, next imm an offset into its value (index 0).
pub const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// `lddw` src: imm is a BTF id of a kernel variable (unsupported in userspace).
pub const BPF_PSEUDO_BTF_ID: u8 = 3;
/// `lddw` src: imm is the pc-relative offset of a BPF function.
pub const BPF_PSEUDO_FUNC: u8 = 4;
/// `lddw` src: imm is an index into the program's fd_array (a map).
pub const BPF_PSEUDO_MAP_IDX: u8 = 5;
/// `lddw` src: imm is an fd_array index, next imm an offset into its value.
pub const BPF_PSEUDO_MAP_IDX_VALUE: u8 = 6;
/// `call` src: imm is a pc-relative BPF-to-BPF call.
pub const BPF_PSEUDO_CALL: u8 = 1;
/// `call` src: imm is a kernel function BTF id (unsupported in userspace).
pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

// ---- full opcodes used often enough to name ------------------------------
pub const LDDW: u8 = BPF_LD | BPF_IMM | BPF_DW; // 0x18
pub const CALL: u8 = BPF_JMP | BPF_CALL; // 0x85
/// `callx`: call the helper whose id is in the `dst` register.
pub const CALLX: u8 = BPF_JMP | BPF_CALL | BPF_X; // 0x8d
pub const EXIT: u8 = BPF_JMP | BPF_EXIT; // 0x95
pub const JA: u8 = BPF_JMP | BPF_JA; // 0x05
pub const JA32: u8 = BPF_JMP32 | BPF_JA; // 0x06 (gotol: offset in imm)

/// Number of general registers r0..r10.
pub const NUM_REGS: usize = 11;
/// Stack bytes per frame, as in the kernel.
pub const STACK_SIZE: usize = 512;
/// Deepest BPF-to-BPF call chain the kernel allows (frames incl. main).
pub const MAX_CALL_FRAMES: usize = 8;
/// Kernel helper id of `bpf_tail_call`, handled by the VM itself.
pub const HELPER_TAIL_CALL: i32 = 12;
/// Longest tail-call chain the kernel allows.
pub const MAX_TAIL_CALLS: u32 = 33;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_fields() {
        let i = Insn { opc: 0x18, dst: 3, src: 1, off: -2, imm: -7 };
        assert_eq!(Insn::from_u64(i.to_u64()), i);
        // lddw %r0, ... from the conformance suite's raw words
        let w = 0x5566778800000018u64;
        let d = Insn::from_u64(w);
        assert_eq!((d.opc, d.dst, d.src, d.off, d.imm as u32), (0x18, 0, 0, 0, 0x55667788));
    }
}
