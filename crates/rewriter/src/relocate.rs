//! Prologue relocation with iced-x86: decide which whole instructions the
//! 5-byte `jmp rel32` overwrites, prove they can run elsewhere, and re-encode
//! them at a trampoline address (RIP-relative operands and relative branches
//! re-targeted by iced's `BlockEncoder`), followed by a jump back.
//!
//! Refusals (each leads the caller to the `int3` fallback):
//! - the function ends (ret/jmp/ud2/int3…) before 5 bytes are covered, or its
//!   symbol size says it is shorter than the patch;
//! - a `call` within the patched bytes (the callee would return into the
//!   trampoline, which unwinders and `detach` cannot see);
//! - an instruction that iced cannot decode or that must not move (`xbegin`);
//! - any direct branch of the function that targets the inside of the patched
//!   bytes (found by a linear sweep of the whole function). Jump-table
//!   targets cannot be seen by a sweep; compilers do not emit jump-table
//!   entries pointing into the first 5 bytes of a function, which always
//!   belong to the entry block.

use iced_x86::{BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionBlock};

/// Length of `jmp rel32`.
pub(crate) const JMP_LEN: usize = 5;
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// The instructions a patch at `address` displaces.
#[derive(Clone, Debug)]
pub(crate) struct Displaced {
    pub address: usize,
    pub instructions: Vec<Instruction>,
    /// Bytes covered by `instructions` (≥ the patch length for a jump).
    pub length: usize,
}

/// Re-encoded displaced instructions plus the jump back.
pub(crate) struct Relocated {
    pub code: Vec<u8>,
    /// For each displaced instruction, its offset in the original and the
    /// address of its copy.
    pub boundaries: Vec<(usize, usize)>,
}

/// Whether the code at `address` starts with `endbr64` (kept in place: the
/// patch goes after it, so indirect-branch tracking still finds it).
pub(crate) fn starts_with_endbr64(code: &[u8]) -> bool {
    code.starts_with(&ENDBR64)
}

/// Decodes whole instructions at `address` (bytes `code`) until at least
/// `min_len` bytes are covered, and checks they can be moved.
/// `function_end` is the end of the function (from its symbol) if known.
pub(crate) fn displace(address: usize, code: &[u8], min_len: usize, function_end: Option<usize>) -> Result<Displaced, String> {
    let mut decoder = Decoder::with_ip(64, code, address as u64, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    let mut length = 0;
    while length < min_len {
        if !decoder.can_decode() {
            return Err(format!("only {length} bytes of code available, {min_len} needed"));
        }
        let ins = decoder.decode();
        if ins.is_invalid() {
            return Err(format!("undecodable instruction at {:#x}", address + length));
        }
        check_movable(&ins)?;
        length += ins.len();
        instructions.push(ins);
        let falls_through = matches!(ins.flow_control(), FlowControl::Next | FlowControl::ConditionalBranch);
        if !falls_through && length < min_len {
            return Err(format!(
                "the function leaves (`{}`) after {length} bytes, shorter than the {min_len}-byte patch",
                ins.mnemonic_name()
            ));
        }
    }
    if let Some(end) = function_end {
        if address + length > end {
            return Err(format!("the function is {} bytes long, shorter than the {min_len}-byte patch", end.saturating_sub(address)));
        }
    }
    Ok(Displaced { address, instructions, length })
}

fn check_movable(ins: &Instruction) -> Result<(), String> {
    match ins.flow_control() {
        FlowControl::Call | FlowControl::IndirectCall => {
            Err(format!("`{}` in the patched bytes would return into the trampoline", ins.mnemonic_name()))
        }
        FlowControl::XbeginXabortXend => Err(format!("`{}` cannot be moved", ins.mnemonic_name())),
        FlowControl::Interrupt if ins.code() == Code::Int3 => {
            Err("an `int3` is already there (a debugger or another tool owns this address)".into())
        }
        _ => Ok(()),
    }
}

/// The single instruction at `address`, for the breakpoint path (which
/// runs it out of line, or emulates it when it is a direct `call`).
pub(crate) fn first_instruction(address: usize, code: &[u8]) -> Result<Displaced, String> {
    let mut decoder = Decoder::with_ip(64, code, address as u64, DecoderOptions::NONE);
    let ins = decoder.decode();
    if ins.is_invalid() {
        return Err(format!("undecodable instruction at {address:#x}"));
    }
    match ins.flow_control() {
        FlowControl::Call if ins.op0_kind() == iced_x86::OpKind::NearBranch64 => {}
        _ => check_movable(&ins)?,
    }
    Ok(Displaced { address, instructions: vec![ins], length: ins.len() })
}

/// Target of a displaced direct `call rel32`.
pub(crate) fn direct_call_target(displaced: &Displaced) -> Option<usize> {
    let ins = displaced.instructions.first()?;
    (ins.flow_control() == FlowControl::Call && ins.op0_kind() == iced_x86::OpKind::NearBranch64)
        .then(|| ins.near_branch_target() as usize)
}

trait MnemonicName {
    fn mnemonic_name(&self) -> String;
}
impl MnemonicName for Instruction {
    fn mnemonic_name(&self) -> String {
        format!("{:?}", self.mnemonic()).to_lowercase()
    }
}

/// Linear sweep of `function` (bytes at `start`): refuses when a direct
/// branch targets the inside of `[patch, patch + length)` (its first byte is
/// fine: it lands on the jump).
pub(crate) fn check_no_branch_into(start: usize, function: &[u8], patch: usize, length: usize) -> Result<(), String> {
    let mut decoder = Decoder::with_ip(64, function, start as u64, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            continue;
        }
        if matches!(
            ins.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
        ) && ins.op0_kind() == iced_x86::OpKind::NearBranch64
        {
            let target = ins.near_branch_target() as usize;
            if target > patch && target < patch + length {
                return Err(format!("the instruction at {:#x} branches to {target:#x}, inside the patched bytes", ins.ip()));
            }
        }
    }
    Ok(())
}

/// Re-encodes `displaced` at `new_address`, followed by `jmp` to the first
/// byte after the displaced instructions.
pub(crate) fn relocate(displaced: &Displaced, new_address: usize) -> Result<Relocated, String> {
    let mut block = displaced.instructions.clone();
    let back = Instruction::with_branch(Code::Jmp_rel32_64, (displaced.address + displaced.length) as u64)
        .map_err(|e| e.to_string())?;
    block.push(back);
    let encoded = BlockEncoder::encode(
        64,
        InstructionBlock::new(&block, new_address as u64),
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )
    .map_err(|e| format!("iced cannot re-encode it {:#x} bytes away: {e}", new_address.abs_diff(displaced.address)))?;
    let mut boundaries = Vec::with_capacity(displaced.instructions.len());
    for (ins, &new_offset) in displaced.instructions.iter().zip(&encoded.new_instruction_offsets) {
        if new_offset == u32::MAX {
            return Err(format!("iced had to rewrite `{}` into several instructions", ins.mnemonic_name()));
        }
        boundaries.push((ins.ip() as usize - displaced.address, new_address + new_offset as usize));
    }
    Ok(Relocated { code: encoded.code_buffer, boundaries })
}

/// Bytes of `jmp rel32` at `from` to `to`.
pub(crate) fn jmp_rel32(from: usize, to: usize) -> Option<[u8; JMP_LEN]> {
    let displacement = (to as i64).wrapping_sub((from + JMP_LEN) as i64);
    let displacement = i32::try_from(displacement).ok()?;
    let mut bytes = [0xe9, 0, 0, 0, 0];
    bytes[1..].copy_from_slice(&displacement.to_le_bytes());
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_whole_instructions_and_fixes_rip_relative_operands() {
        // push rbp; mov rbp,rsp; mov rax,[rip+0x10]; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x8b, 0x05, 0x10, 0, 0, 0, 0xc3];
        let d = displace(0x1000, &code, JMP_LEN, Some(0x1000 + code.len())).unwrap();
        assert_eq!(d.length, 11);
        assert_eq!(d.instructions.len(), 3);
        let r = relocate(&d, 0x2000).unwrap();
        assert_eq!(r.boundaries, vec![(0, 0x2000), (1, 0x2001), (4, 0x2004)]);
        // The load still reads 0x1000 + 11 + 0x10.
        let mut decoder = Decoder::with_ip(64, &r.code, 0x2000, DecoderOptions::NONE);
        let moved: Vec<Instruction> = decoder.iter().collect();
        assert_eq!(moved[2].memory_displacement64(), 0x1000 + 11 + 0x10);
        assert_eq!(moved[3].near_branch_target(), 0x1000 + 11);
    }

    #[test]
    fn refuses_short_functions_calls_and_branches_into_the_patch() {
        assert!(displace(0x1000, &[0x31, 0xc0, 0xc3, 0xcc, 0xcc], JMP_LEN, None).unwrap_err().contains("shorter"));
        assert!(displace(0x1000, &[0xe8, 0, 0, 0, 0], JMP_LEN, None).unwrap_err().contains("call"));
        // 0: push rbp; 1: mov rbp,rsp; 4: nop; 5: jmp 1
        let f = [0x55, 0x48, 0x89, 0xe5, 0x90, 0xeb, 0xfa];
        assert!(check_no_branch_into(0x1000, &f, 0x1000, 5).unwrap_err().contains("inside the patched bytes"));
        let to_start = [0x55, 0x48, 0x89, 0xe5, 0x90, 0xeb, 0xf9];
        assert!(check_no_branch_into(0x1000, &to_start, 0x1000, 5).is_ok());
    }

    #[test]
    fn jump_encoding() {
        assert_eq!(jmp_rel32(0x1000, 0x1005), Some([0xe9, 0, 0, 0, 0]));
        assert_eq!(jmp_rel32(0x1000, 0x1000), Some([0xe9, 0xfb, 0xff, 0xff, 0xff]));
        assert_eq!(jmp_rel32(0, 0x1_0000_0000), None);
    }
}
