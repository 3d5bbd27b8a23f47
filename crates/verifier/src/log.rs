//! The verifier log: instructions printed in the kernel's style
//! (`6: (85) call bpf_map_lookup_elem#1`), the rejection reason, and the
//! closing statistics line — the shape bpftrace and libbpf print to users.

use std::fmt::Write;

use vm::insn::*;

use crate::helpers::helper_name;

/// Past this many bytes the per-instruction trace stops (the reason and the
/// statistics are always written).
const TRACE_LIMIT: usize = 1 << 20;

/// Accumulates the log text for a given `log_level` (0 = nothing).
pub struct Log {
    level: u32,
    text: String,
    truncated: bool,
}

impl Log {
    pub fn new(level: u32) -> Log {
        Log { level, text: String::new(), truncated: false }
    }

    pub fn level(&self) -> u32 {
        self.level
    }

    /// Record that instruction `pc` was processed (log_level >= 1).
    pub fn insn(&mut self, insns: &[Insn], pc: usize) {
        if self.level == 0 || self.truncated {
            return;
        }
        if self.text.len() > TRACE_LIMIT {
            self.truncated = true;
            self.text.push_str("... instruction trace truncated ...\n");
            return;
        }
        let _ = writeln!(self.text, "{}: ({:02x}) {}", pc, insns[pc].opc, disasm(insns, pc));
    }

    /// A free-form line (branch points at log_level >= 2).
    pub fn line(&mut self, min_level: u32, s: &str) {
        if self.level >= min_level && !self.truncated {
            self.text.push_str(s);
            self.text.push('\n');
        }
    }

    /// The final lines, always written when logging is on.
    pub fn finish(mut self, reason: Option<&str>, stats: &str) -> String {
        if self.level == 0 {
            return String::new();
        }
        if let Some(r) = reason {
            self.text.push_str(r);
            self.text.push('\n');
        }
        self.text.push_str(stats);
        self.text.push('\n');
        self.text
    }
}

fn alu_op(op: u8) -> &'static str {
    match op {
        BPF_ADD => "+=",
        BPF_SUB => "-=",
        BPF_MUL => "*=",
        BPF_DIV => "/=",
        BPF_OR => "|=",
        BPF_AND => "&=",
        BPF_LSH => "<<=",
        BPF_RSH => ">>=",
        BPF_MOD => "%=",
        BPF_XOR => "^=",
        BPF_MOV => "=",
        BPF_ARSH => "s>>=",
        _ => "?=",
    }
}

/// The kernel's spelling of an ALU operator, for error messages.
pub fn alu_op_name(op: u8) -> &'static str {
    alu_op(op)
}

fn jmp_op(op: u8) -> &'static str {
    match op {
        BPF_JEQ => "==",
        BPF_JGT => ">",
        BPF_JGE => ">=",
        BPF_JSET => "&",
        BPF_JNE => "!=",
        BPF_JSGT => "s>",
        BPF_JSGE => "s>=",
        BPF_JLT => "<",
        BPF_JLE => "<=",
        BPF_JSLT => "s<",
        BPF_JSLE => "s<=",
        _ => "?",
    }
}

fn size_name(opc: u8) -> &'static str {
    match opc & 0x18 {
        BPF_B => "u8",
        BPF_H => "u16",
        BPF_W => "u32",
        _ => "u64",
    }
}

/// One instruction in the kernel's `print_bpf_insn` style.
pub fn disasm(insns: &[Insn], pc: usize) -> String {
    let i = insns[pc];
    let class = i.class();
    let op = i.opc & 0xf0;
    let x = i.opc & BPF_X != 0;
    match class {
        BPF_ALU | BPF_ALU64 => {
            let r = if class == BPF_ALU64 { 'r' } else { 'w' };
            match op {
                BPF_NEG => format!("{r}{} = -{r}{}", i.dst, i.dst),
                BPF_END => {
                    let kind = if class == BPF_ALU64 { "bswap" } else if x { "be" } else { "le" };
                    format!("r{} = {kind}{} r{}", i.dst, i.imm, i.dst)
                }
                _ if x => format!("{r}{} {} {r}{}", i.dst, alu_op(op), i.src),
                _ => format!("{r}{} {} {}", i.dst, alu_op(op), i.imm),
            }
        }
        BPF_LDX => format!("r{} = *({} *)(r{} {:+})", i.dst, size_name(i.opc), i.src, i.off),
        BPF_ST => format!("*({} *)(r{} {:+}) = {}", size_name(i.opc), i.dst, i.off, i.imm),
        BPF_STX if i.opc & 0xe0 == BPF_ATOMIC => {
            let fetch = if i.imm & BPF_FETCH != 0 && i.imm != BPF_XCHG && i.imm != BPF_CMPXCHG { "fetch_" } else { "" };
            match i.imm {
                BPF_XCHG => format!("r{} = atomic_xchg(({} *)(r{} {:+}), r{})", i.src, size_name(i.opc), i.dst, i.off, i.src),
                BPF_CMPXCHG => format!("r0 = atomic_cmpxchg(({} *)(r{} {:+}), r0, r{})", size_name(i.opc), i.dst, i.off, i.src),
                imm => format!(
                    "lock {fetch}*({} *)(r{} {:+}) {} r{}",
                    size_name(i.opc),
                    i.dst,
                    i.off,
                    alu_op((imm & !BPF_FETCH) as u8),
                    i.src
                ),
            }
        }
        BPF_STX => format!("*({} *)(r{} {:+}) = r{}", size_name(i.opc), i.dst, i.off, i.src),
        BPF_LD if i.opc == LDDW => {
            let hi = insns.get(pc + 1).map_or(0, |n| n.imm as u32 as u64);
            let v = (hi << 32) | i.imm as u32 as u64;
            match i.src {
                0 => format!("r{} = {:#x}", i.dst, v),
                BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_IDX => format!("r{} = map[fd:{}]", i.dst, i.imm),
                BPF_PSEUDO_MAP_VALUE | BPF_PSEUDO_MAP_IDX_VALUE => {
                    format!("r{} = map[fd:{}][0]+{}", i.dst, i.imm, hi)
                }
                BPF_PSEUDO_FUNC => format!("r{} = func pc{:+}", i.dst, i.imm),
                _ => format!("r{} = ld_imm64 src {}", i.dst, i.src),
            }
        }
        BPF_JMP | BPF_JMP32 => match op {
            BPF_EXIT => "exit".into(),
            BPF_CALL if i.src == BPF_PSEUDO_CALL => format!("call pc{:+}", i.imm),
            BPF_CALL => format!("call {}#{}", helper_name(i.imm), i.imm),
            BPF_JA if class == BPF_JMP32 => format!("gotol pc{:+}", i.imm),
            BPF_JA => format!("goto pc{:+}", i.off),
            _ => {
                let r = if class == BPF_JMP32 { 'w' } else { 'r' };
                if x {
                    format!("if {r}{} {} {r}{} goto pc{:+}", i.dst, jmp_op(op), i.src, i.off)
                } else {
                    format!("if {r}{} {} {:#x} goto pc{:+}", i.dst, jmp_op(op), i.imm, i.off)
                }
            }
        },
        _ => format!("(bad opcode {:02x})", i.opc),
    }
}
