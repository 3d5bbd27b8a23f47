//! Assembler for the ubpf-style text of the bpf_conformance suite
//! (`mov %r0, 1`, `ldxw %r0, [%r1+4]`, `jeq %r1, 0, label`,
//! `call local func1`, `lock fetch add [%r10-8], %r1`, ...), accepting the
//! same programs as the suite's reference assembler, plus the pseudo-`lddw`
//! forms the disassembler prints (`lddw %r1, map_fd(3)`,
//! `lddw %r1, map_value(3)+16`, `lddw %r1, func(+4)`, ...) and helper calls
//! by name (`call bpf_map_lookup_elem`), so disassembly assembles back to the
//! same words.
//!
//! Syntax summary (one instruction per line, `#` starts a comment):
//! - labels: `name:` on their own line (an instruction may follow); the first
//!   `exit` also defines the label `exit` unless the program defines one;
//! - registers `%r0`..`%r10` (`%r11`..`%r15` assemble, for negative tests,
//!   and are refused by `Program::load`);
//! - ALU: `add`, `add32`, `add64`, ... `sdiv`, `smod`, `neg`, `mov`,
//!   `movsx{8,16,32}{32,64}`, `le16`/`be16`/.., `bswap16`/`swap16`/..;
//! - memory: `ldx{b,h,w,dw}`, `ldxs{b,h,w}`, `st{b,h,w,dw}`, `stx{b,h,w,dw}`
//!   with `[%rN]`, `[%rN+off]` or `[%rN-off]`;
//! - jumps: `ja target`, `ja32 target`, `jeq %r1, %r2|imm, target` (+ `32`
//!   forms), where target is a label or a signed offset `+N`/`-N`;
//! - calls: `call N`, `call helper N`, `call %rN` (callx), `call local
//!   target`, `call runtime N` (kfunc), `call bpf_<helper name>`; `exit`;
//! - atomics: `lock [fetch] {add,and,or,xor}[32] [%rN+off], %rM`,
//!   `lock {xchg,cmpxchg}[32] [%rN+off], %rM`.
//!
//! - raw words: `.insn 0x<16 hex digits>` (what the disassembler prints for
//!   encodings with no textual form).
//!
//! Immediates: decimal (signed, must fit in 32 bits) or `0x` hex (at most
//! `0xffffffff`); `lddw` takes any 64-bit value.

use std::collections::HashMap;

use thiserror::Error;

use crate::insn::*;

/// Why a text did not assemble; `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct AsmError {
    pub line: usize,
    pub message: String,
}

/// Assemble `text` into instruction slots (`lddw` yields two).
pub fn assemble(text: &str) -> Result<Vec<Insn>, AsmError> {
    let mut out: Vec<Insn> = Vec::new();
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut first_exit: Option<usize> = None;
    // (slot, label, line, kind) to patch once all labels are known.
    let mut fixups: Vec<(usize, String, usize, Fixup)> = Vec::new();

    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let err = |message: String| AsmError { line: line_no, message };
        let code = raw_line.split('#').next().unwrap_or("");
        let mut tokens = tokenize(code);
        if tokens.is_empty() {
            continue;
        }
        if let Some(label) = tokens[0].strip_suffix(':') {
            if label.is_empty() || !is_label_name(label) {
                return Err(err(format!("Invalid label name: {label:?}")));
            }
            if let Some(previous) = labels.insert(label.to_string(), out.len()) {
                return Err(err(format!(
                    "Duplicate label ({label}) at instruction {} (previous declaration at instruction {previous})",
                    out.len()
                )));
            }
            tokens.remove(0);
            if tokens.is_empty() {
                continue;
            }
        }
        let mnemonic = tokens[0].clone();
        let operands: Vec<&str> = tokens[1..].iter().map(String::as_str).collect();
        if mnemonic == "exit" && first_exit.is_none() {
            first_exit = Some(out.len());
        }
        let encoded = encode(&mnemonic, &operands).map_err(err)?;
        match encoded {
            Encoded::One(insn, fixup) => {
                if let Some((label, kind)) = fixup {
                    fixups.push((out.len(), label, line_no, kind));
                }
                out.push(insn);
            }
            Encoded::Two(first, second, fixup) => {
                if let Some((label, kind)) = fixup {
                    fixups.push((out.len(), label, line_no, kind));
                }
                out.push(first);
                out.push(second);
            }
        }
    }

    if let Some(pc) = first_exit {
        labels.entry("exit".to_string()).or_insert(pc);
    }
    for (slot, label, line, kind) in fixups {
        let Some(&target) = labels.get(&label) else {
            return Err(AsmError { line, message: format!("Invalid label: {label}") });
        };
        let relative = target as i64 - slot as i64 - 1;
        match kind {
            Fixup::Offset => {
                out[slot].off = i16::try_from(relative).map_err(|_| AsmError {
                    line,
                    message: format!("jump to {label} is too far for a 16-bit offset"),
                })?;
            }
            Fixup::Imm => out[slot].imm = relative as i32,
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug)]
enum Fixup {
    /// Label resolves into the 16-bit offset (jumps).
    Offset,
    /// Label resolves into the immediate (`ja32`, local calls, `func(...)`).
    Imm,
}

enum Encoded {
    One(Insn, Option<(String, Fixup)>),
    Two(Insn, Insn, Option<(String, Fixup)>),
}

/// Split on whitespace and commas, keeping `[...]` as one token.
fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_brackets = false;
    for c in code.chars() {
        match c {
            '[' => {
                in_brackets = true;
                current.push(c);
            }
            ']' => {
                in_brackets = false;
                current.push(c);
            }
            c if in_brackets => {
                if !c.is_whitespace() {
                    current.push(c);
                }
            }
            c if c.is_whitespace() || c == ',' => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn expect_operands(mnemonic: &str, operands: &[&str], n: usize) -> Result<(), String> {
    if operands.len() == n {
        Ok(())
    } else {
        Err(format!(
            "Invalid number of operands for mnemonic: {mnemonic} (expected {n}, found {})",
            operands.len()
        ))
    }
}

fn parse_register(s: &str) -> Result<u8, String> {
    s.strip_prefix("%r")
        .filter(|n| {
            (1..=2).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        })
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|&n| n <= 15)
        .ok_or_else(|| format!("Invalid register: {s}"))
}

/// Parse a decimal (optionally signed) or `0x` hex integer.
fn parse_int(s: &str) -> Option<i128> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()? as i128
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 20 {
            return None;
        }
        digits.parse::<u64>().ok()? as i128
    };
    Some(if negative { -value } else { value })
}

fn is_hex(s: &str) -> bool {
    s.trim_start_matches(['-', '+']).starts_with("0x")
}

fn parse_imm32(s: &str) -> Result<i32, String> {
    let value = parse_int(s).ok_or_else(|| format!("Invalid immediate: {s}"))?;
    let in_range = if is_hex(s) && value >= 0 {
        value <= u32::MAX as i128
    } else {
        (i32::MIN as i128..=i32::MAX as i128).contains(&value)
    };
    if in_range {
        Ok(value as u32 as i32)
    } else {
        Err(format!("Immediate out of 32-bit range: {s}"))
    }
}

fn parse_imm64(s: &str) -> Result<u64, String> {
    let value = parse_int(s).ok_or_else(|| format!("Invalid immediate: {s}"))?;
    if (i64::MIN as i128..=u64::MAX as i128).contains(&value) {
        Ok(value as u64)
    } else {
        Err(format!("Immediate out of 64-bit range: {s}"))
    }
}

fn parse_offset(s: &str) -> Result<i16, String> {
    let value = parse_int(s).ok_or_else(|| format!("Invalid offset: {s}"))?;
    let in_range = if is_hex(s) && value >= 0 {
        value <= u16::MAX as i128
    } else {
        (i16::MIN as i128..=i16::MAX as i128).contains(&value)
    };
    if in_range {
        Ok(value as u16 as i16)
    } else {
        Err(format!("Offset out of 16-bit range: {s}"))
    }
}

/// `[%rN]`, `[%rN+off]`, `[%rN-off]`.
fn parse_memory(s: &str) -> Result<(u8, i16), String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("Failed to decode register and offset: {s}"))?;
    match inner.find(['+', '-']) {
        Some(split) => {
            let reg = parse_register(&inner[..split])?;
            let offset = parse_offset(&inner[split..])?;
            Ok((reg, offset))
        }
        None => Ok((parse_register(inner)?, 0)),
    }
}

/// A jump target: `+N`/`-N` (relative) or a label to fix up later.
enum Target {
    Relative(i64),
    Label(String),
}

fn parse_target(s: &str) -> Result<Target, String> {
    if s.starts_with(['+', '-']) {
        let value = parse_int(s).ok_or_else(|| format!("Invalid jump offset: {s}"))?;
        Ok(Target::Relative(value as i64))
    } else if is_label_name(s) {
        Ok(Target::Label(s.to_string()))
    } else {
        Err(format!("Invalid jump target: {s}"))
    }
}

fn target_as_offset(target: Target) -> Result<(i16, Option<(String, Fixup)>), String> {
    match target {
        Target::Relative(v) => i16::try_from(v)
            .map(|v| (v, None))
            .map_err(|_| format!("Offset out of 16-bit range: {v}")),
        Target::Label(label) => Ok((0, Some((label, Fixup::Offset)))),
    }
}

fn target_as_imm(target: Target) -> Result<(i32, Option<(String, Fixup)>), String> {
    match target {
        Target::Relative(v) => i32::try_from(v)
            .map(|v| (v, None))
            .map_err(|_| format!("Immediate out of 32-bit range: {v}")),
        Target::Label(label) => Ok((0, Some((label, Fixup::Imm)))),
    }
}

fn alu_op(name: &str) -> Option<(u8, i16)> {
    Some(match name {
        "add" => (BPF_ADD, 0),
        "sub" => (BPF_SUB, 0),
        "mul" => (BPF_MUL, 0),
        "div" => (BPF_DIV, 0),
        "sdiv" => (BPF_DIV, 1),
        "or" => (BPF_OR, 0),
        "and" => (BPF_AND, 0),
        "lsh" => (BPF_LSH, 0),
        "rsh" => (BPF_RSH, 0),
        "neg" => (BPF_NEG, 0),
        "mod" => (BPF_MOD, 0),
        "smod" => (BPF_MOD, 1),
        "xor" => (BPF_XOR, 0),
        "mov" => (BPF_MOV, 0),
        "movsx8" => (BPF_MOV, 8),
        "movsx16" => (BPF_MOV, 16),
        "movsx32" => (BPF_MOV, 32),
        "arsh" => (BPF_ARSH, 0),
        _ => return None,
    })
}

fn jmp_op(name: &str) -> Option<u8> {
    Some(match name {
        "jeq" => BPF_JEQ,
        "jgt" => BPF_JGT,
        "jge" => BPF_JGE,
        "jset" => BPF_JSET,
        "jne" => BPF_JNE,
        "jsgt" => BPF_JSGT,
        "jsge" => BPF_JSGE,
        "jlt" => BPF_JLT,
        "jle" => BPF_JLE,
        "jslt" => BPF_JSLT,
        "jsle" => BPF_JSLE,
        _ => return None,
    })
}

fn size_suffix(s: &str) -> Option<u8> {
    Some(match s {
        "b" => BPF_B,
        "h" => BPF_H,
        "w" => BPF_W,
        "dw" => BPF_DW,
        _ => return None,
    })
}

/// Split a width suffix: `add32` -> (`add`, Some(32)).
fn split_width(mnemonic: &str) -> (&str, Option<u32>) {
    if let Some(base) = mnemonic.strip_suffix("32") {
        (base, Some(32))
    } else if let Some(base) = mnemonic.strip_suffix("64") {
        (base, Some(64))
    } else if let Some(base) = mnemonic.strip_suffix("16") {
        (base, Some(16))
    } else {
        (mnemonic, None)
    }
}

fn one(insn: Insn) -> Result<Encoded, String> {
    Ok(Encoded::One(insn, None))
}

fn encode(mnemonic: &str, operands: &[&str]) -> Result<Encoded, String> {
    // Byte swaps: le16/be32/swap64/bswap16 ...
    for (prefix, opc) in [
        ("bswap", BPF_ALU64 | BPF_END | BPF_TO_LE),
        ("swap", BPF_ALU64 | BPF_END | BPF_TO_LE),
        ("le", BPF_ALU | BPF_END | BPF_TO_LE),
        ("be", BPF_ALU | BPF_END | BPF_TO_BE),
    ] {
        if let Some(width @ ("16" | "32" | "64")) = mnemonic.strip_prefix(prefix) {
            expect_operands(mnemonic, operands, 1)?;
            let dst = parse_register(operands[0])?;
            return one(Insn::new(opc, dst, 0, 0, width.parse().unwrap_or(64)));
        }
    }

    match mnemonic {
        "exit" => {
            expect_operands(mnemonic, operands, 0)?;
            return one(Insn::new(EXIT, 0, 0, 0, 0));
        }
        "ja" | "ja32" => {
            expect_operands(mnemonic, operands, 1)?;
            let target = parse_target(operands[0])?;
            return if mnemonic == "ja" {
                let (off, fixup) = target_as_offset(target)?;
                Ok(Encoded::One(Insn::new(JA, 0, 0, off, 0), fixup))
            } else {
                let (imm, fixup) = target_as_imm(target)?;
                Ok(Encoded::One(Insn::new(JA32, 0, 0, 0, imm), fixup))
            };
        }
        ".insn" => {
            expect_operands(mnemonic, operands, 1)?;
            let word = parse_imm64(operands[0])?;
            return one(Insn::from_u64(word));
        }
        "call" => return encode_call(operands),
        "lddw" => return encode_lddw(operands),
        "lock" => return encode_atomic(operands),
        _ => {}
    }

    // Conditional jumps.
    let (base, width) = split_width(mnemonic);
    if let Some(op) = jmp_op(base).filter(|_| width != Some(16)) {
        let class = if width == Some(32) { BPF_JMP32 } else { BPF_JMP };
        expect_operands(mnemonic, operands, 3)?;
        let dst = parse_register(operands[0])?;
        let (off, fixup) = target_as_offset(parse_target(operands[2])?)?;
        let insn = if operands[1].starts_with('%') {
            Insn::new(class | op | BPF_X, dst, parse_register(operands[1])?, off, 0)
        } else {
            Insn::new(class | op | BPF_K, dst, 0, off, parse_imm32(operands[1])?)
        };
        return Ok(Encoded::One(insn, fixup));
    }

    // Loads and stores.
    if let Some(size) = mnemonic.strip_prefix("ldxs").and_then(size_suffix) {
        expect_operands(mnemonic, operands, 2)?;
        let dst = parse_register(operands[0])?;
        let (src, off) = parse_memory(operands[1])?;
        return one(Insn::new(BPF_LDX | BPF_MEMSX | size, dst, src, off, 0));
    }
    if let Some(size) = mnemonic.strip_prefix("ldx").and_then(size_suffix) {
        expect_operands(mnemonic, operands, 2)?;
        let dst = parse_register(operands[0])?;
        let (src, off) = parse_memory(operands[1])?;
        return one(Insn::new(BPF_LDX | BPF_MEM | size, dst, src, off, 0));
    }
    if let Some(size) = mnemonic.strip_prefix("stx").and_then(size_suffix) {
        expect_operands(mnemonic, operands, 2)?;
        let (dst, off) = parse_memory(operands[0])?;
        let src = parse_register(operands[1])?;
        return one(Insn::new(BPF_STX | BPF_MEM | size, dst, src, off, 0));
    }
    if let Some(size) = mnemonic.strip_prefix("st").and_then(size_suffix) {
        expect_operands(mnemonic, operands, 2)?;
        let (dst, off) = parse_memory(operands[0])?;
        let imm = parse_imm32(operands[1])?;
        return one(Insn::new(BPF_ST | BPF_MEM | size, dst, 0, off, imm));
    }

    // ALU: `op`, `op32`, `op64`; movsx carries its source width before the
    // class width (`movsx832` = 8-bit source, 32-bit op).
    let (base, class) = match width {
        Some(32) => (base, BPF_ALU),
        Some(64) => (base, BPF_ALU64),
        Some(16) => (mnemonic, BPF_ALU64),
        _ => (mnemonic, BPF_ALU64),
    };
    let Some((op, off)) = alu_op(base) else {
        return Err(format!("Invalid mnemonic: {mnemonic}"));
    };
    if op == BPF_NEG {
        expect_operands(mnemonic, operands, 1)?;
        let dst = parse_register(operands[0])?;
        return one(Insn::new(class | BPF_NEG, dst, 0, 0, 0));
    }
    expect_operands(mnemonic, operands, 2)?;
    let dst = parse_register(operands[0])?;
    if operands[1].starts_with('%') {
        let src = parse_register(operands[1])?;
        one(Insn::new(class | op | BPF_X, dst, src, off, 0))
    } else {
        if op == BPF_MOV && off != 0 {
            return Err(format!("{mnemonic} needs a source register"));
        }
        one(Insn::new(class | op | BPF_K, dst, 0, off, parse_imm32(operands[1])?))
    }
}

fn encode_call(operands: &[&str]) -> Result<Encoded, String> {
    let (mode, target) = match operands {
        [target] => ("helper", *target),
        [mode, target] => (*mode, *target),
        _ => {
            return Err(format!(
                "Invalid number of operands for mnemonic: call (expected 1 or 2, found {})",
                operands.len()
            ))
        }
    };
    match mode {
        "helper" => {
            if target.starts_with('%') {
                one(Insn::new(CALLX, parse_register(target)?, 0, 0, 0))
            } else if let Some(id) = crate::disasm::helper_id(target) {
                one(Insn::new(CALL, 0, 0, 0, id as i32))
            } else {
                one(Insn::new(CALL, 0, 0, 0, parse_imm32(target)?))
            }
        }
        "local" => {
            let (imm, fixup) = target_as_imm(parse_target(target)?)?;
            Ok(Encoded::One(Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, imm), fixup))
        }
        "runtime" => one(Insn::new(CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, parse_imm32(target)?)),
        _ => Err(format!("Invalid call mode: {mode}")),
    }
}

/// `lddw %rN, value` or a pseudo form: `map_fd(FD)`, `map_value(FD)+OFF`,
/// `map_idx(I)`, `map_idx_value(I)+OFF`, `btf_id(ID)`, `func(TARGET)`.
fn encode_lddw(operands: &[&str]) -> Result<Encoded, String> {
    expect_operands("lddw", operands, 2)?;
    let dst = parse_register(operands[0])?;
    let value = operands[1];
    let Some(open) = value.find('(') else {
        let imm = parse_imm64(value)?;
        return Ok(Encoded::Two(
            Insn::new(LDDW, dst, 0, 0, imm as u32 as i32),
            Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
            None,
        ));
    };
    let kind = &value[..open];
    let close = value[open..]
        .find(')')
        .map(|i| open + i)
        .ok_or_else(|| format!("Missing ')' in {value}"))?;
    let argument = &value[open + 1..close];
    let rest = &value[close + 1..];
    let src = match kind {
        "map_fd" => BPF_PSEUDO_MAP_FD,
        "map_value" => BPF_PSEUDO_MAP_VALUE,
        "btf_id" => BPF_PSEUDO_BTF_ID,
        "func" => BPF_PSEUDO_FUNC,
        "map_idx" => BPF_PSEUDO_MAP_IDX,
        "map_idx_value" => BPF_PSEUDO_MAP_IDX_VALUE,
        _ => return Err(format!("Unknown lddw pseudo source: {kind}")),
    };
    let takes_offset = matches!(src, BPF_PSEUDO_MAP_VALUE | BPF_PSEUDO_MAP_IDX_VALUE);
    let next_imm = match (takes_offset, rest) {
        (_, "") => 0,
        (true, rest) if rest.starts_with('+') => parse_imm32(&rest[1..])?,
        _ => return Err(format!("Unexpected text after {kind}(...): {rest}")),
    };
    let (imm, fixup) = if src == BPF_PSEUDO_FUNC {
        target_as_imm(parse_target(argument)?)?
    } else {
        (parse_imm32(argument)?, None)
    };
    Ok(Encoded::Two(Insn::new(LDDW, dst, src, 0, imm), Insn::new(0, 0, 0, 0, next_imm), fixup))
}

/// `lock [fetch] op[32] [%rN+off], %rM`.
fn encode_atomic(operands: &[&str]) -> Result<Encoded, String> {
    let (fetch, rest) = match operands.first() {
        Some(&"fetch") => (true, &operands[1..]),
        _ => (false, operands),
    };
    if rest.len() != 3 {
        return Err("Invalid number of operands for lock".to_string());
    }
    let (op, width) = split_width(rest[0]);
    let size = match width {
        Some(32) => BPF_W,
        None => BPF_DW,
        _ => return Err(format!("Invalid atomic operation: {}", rest[0])),
    };
    let imm = match (op, fetch) {
        ("add", _) => BPF_ADD as i32,
        ("and", _) => BPF_AND as i32,
        ("or", _) => BPF_OR as i32,
        ("xor", _) => BPF_XOR as i32,
        ("xchg", _) => BPF_XCHG,
        ("cmpxchg", _) => BPF_CMPXCHG,
        _ => return Err(format!("Invalid atomic operation: {}", rest[0])),
    } | if fetch { BPF_FETCH } else { 0 };
    let (dst, off) = parse_memory(rest[1])?;
    let src = parse_register(rest[2])?;
    one(Insn::new(BPF_STX | BPF_ATOMIC | size, dst, src, off, imm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asm1(text: &str) -> Insn {
        let insns = assemble(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(insns.len(), 1, "{text}");
        insns[0]
    }

    #[test]
    fn encodes_table() {
        // (text, opcode, dst, src, off, imm) — one row per instruction shape.
        let table: &[(&str, u8, u8, u8, i16, i32)] = &[
            ("mov %r0, 1", 0xb7, 0, 0, 0, 1),
            ("mov32 %r0, -1", 0xb4, 0, 0, 0, -1),
            ("mov64 %r1, %r2", 0xbf, 1, 2, 0, 0),
            ("add32 %r1, 0xffffffff", 0x04, 1, 0, 0, -1),
            ("sdiv %r1, %r2", 0x3f, 1, 2, 1, 0),
            ("smod32 %r1, 3", 0x94, 1, 0, 1, 3),
            ("movsx864 %r1, %r2", 0xbf, 1, 2, 8, 0),
            ("movsx1632 %r1, %r2", 0xbc, 1, 2, 16, 0),
            ("movsx3264 %r1, %r2", 0xbf, 1, 2, 32, 0),
            ("neg %r3", 0x87, 3, 0, 0, 0),
            ("neg32 %r3", 0x84, 3, 0, 0, 0),
            ("be16 %r0", 0xdc, 0, 0, 0, 16),
            ("le64 %r0", 0xd4, 0, 0, 0, 64),
            ("bswap32 %r0", 0xd7, 0, 0, 0, 32),
            ("swap16 %r0", 0xd7, 0, 0, 0, 16),
            ("ldxw %r0, [%r1+4]", 0x61, 0, 1, 4, 0),
            ("ldxdw %r0, [%r10-8]", 0x79, 0, 10, -8, 0),
            ("ldxsb %r0, [%r1]", 0x91, 0, 1, 0, 0),
            ("stb [%r1+0x10], 7", 0x72, 1, 0, 16, 7),
            ("stxh [%r1 - 2], %r3", 0x6b, 1, 3, -2, 0),
            ("jeq %r1, 0, +1", 0x15, 1, 0, 1, 0),
            ("jsgt32 %r1, %r2, -1", 0x6e, 1, 2, -1, 0),
            ("ja +3", 0x05, 0, 0, 3, 0),
            ("ja32 -2", 0x06, 0, 0, 0, -2),
            ("call 5", 0x85, 0, 0, 0, 5),
            ("call %r2", 0x8d, 2, 0, 0, 0),
            ("call local +4", 0x85, 0, 1, 0, 4),
            ("call bpf_map_lookup_elem", 0x85, 0, 0, 0, 1),
            ("exit", 0x95, 0, 0, 0, 0),
            ("lock add [%r1+8], %r2", 0xdb, 1, 2, 8, 0x00),
            ("lock fetch xor32 [%r1], %r2", 0xc3, 1, 2, 0, 0xa1),
            ("lock xchg [%r10-8], %r2", 0xdb, 10, 2, -8, 0xe1),
            ("lock cmpxchg32 [%r10-8], %r2", 0xc3, 10, 2, -8, 0xf1),
        ];
        for &(text, opc, dst, src, off, imm) in table {
            assert_eq!(asm1(text), Insn::new(opc, dst, src, off, imm), "{text}");
        }
    }

    #[test]
    fn resolves_labels_and_implicit_exit() {
        let insns = assemble("jeq %r1, 0, done\nja exit\ndone:\nmov %r0, 1\nexit\n").unwrap();
        assert_eq!(insns[0].off, 1);
        assert_eq!(insns[1].off, 1);
        let call = assemble("call local f\nexit\nf: mov %r0, 2\nexit").unwrap();
        assert_eq!(call[0].imm, 1);
    }

    #[test]
    fn encodes_lddw_forms() {
        let plain = assemble("lddw %r0, 0x1122334455667788").unwrap();
        assert_eq!(plain, vec![Insn::new(0x18, 0, 0, 0, 0x55667788), Insn::new(0, 0, 0, 0, 0x11223344)]);
        let value = assemble("lddw %r1, map_value(3)+16").unwrap();
        assert_eq!(value, vec![Insn::new(0x18, 1, 2, 0, 3), Insn::new(0, 0, 0, 0, 16)]);
        let func = assemble("lddw %r2, func(f)\nexit\nf: exit").unwrap();
        assert_eq!(func[0], Insn::new(0x18, 2, 4, 0, 2));
    }

    #[test]
    fn never_panics_on_mangled_text() {
        // Every line of a varied program, with each character position
        // replaced by each of a set of troublesome characters.
        let program = "lddw %r1, map_value(3)+16\nldxw %r0, [%r1+4]\nlock fetch add32 [%r10-8], %r1\n\
                       jeq %r1, 0x10, +2\ncall local f\nmovsx1632 %r2, %r3\nf: be16 %r0\nexit";
        for line in program.lines() {
            for position in 0..line.len() {
                for replacement in ["(", ")", "[", "]", "+", "-", ",", ":", "%", "0x", "", " ", "é", "#"] {
                    let mangled = format!("{}{}{}", &line[..position], replacement, &line[position + 1..]);
                    let _ = assemble(&mangled);
                }
            }
        }
    }

    #[test]
    fn rejects_bad_text() {
        let cases = [
            ("or %r0, %r50", "Invalid register"),
            ("lock or [%r10-8]", "Invalid number of operands for lock"),
            ("lock", "Invalid number of operands for lock"),
            ("ldxq %r0, %r1", "Invalid mnemonic"),
            ("ldxb %r0, %r1", "Failed to decode register and offset"),
            ("ldxb %r0, [%r1+0x10000]", "Offset out of 16-bit range"),
            ("mov32 %r0, 2147483648", "Immediate out of 32-bit range"),
            ("mov32 %r0, 0x100000000", "Immediate out of 32-bit range"),
            ("lddw %r0", "Invalid number of operands"),
            ("ja NOT_A_LABEL\nexit", "Invalid label"),
            ("x:\nx:\nexit", "Duplicate label"),
            ("lddw %r1, map_fd)3(", "Missing ')'"),
            ("lddw %r1, map_fd(3)+4", "Unexpected text"),
            ("lock fetch sub [%r1], %r2", "Invalid atomic operation"),
            ("movsx864 %r1, 5", "needs a source register"),
            ("call remote 5", "Invalid call mode"),
        ];
        for (text, expected) in cases {
            let err = assemble(text).expect_err(text);
            assert!(err.message.contains(expected), "{text}: {err}");
        }
    }
}
