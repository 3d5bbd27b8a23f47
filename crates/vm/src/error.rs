//! Errors of the VM: why a program was refused at load time
//! ([`LoadError`]) and why a run stopped abnormally ([`RunError`]).
//!
//! Every load error names the index (`pc`, in 8-byte instruction slots, the
//! numbering the kernel and `llvm-objdump` use) of the offending instruction,
//! so a message can be traced back to a disassembly listing.

use thiserror::Error;

/// A program failed structural validation in [`crate::program::Program::load`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LoadError {
    #[error("empty program: no instructions")]
    Empty,

    #[error("program too long: {len} instructions (maximum {max})")]
    TooLong { len: usize, max: usize },

    #[error("insn {pc}: unknown opcode {opcode:#04x}")]
    UnknownOpcode { pc: usize, opcode: u8 },

    #[error("insn {pc}: {feature} is not supported by userbpf")]
    Unsupported { pc: usize, feature: &'static str },

    #[error("insn {pc}: reserved field {field} must be {expected}, found {found}")]
    ReservedField { pc: usize, field: &'static str, expected: &'static str, found: i64 },

    #[error("insn {pc}: invalid {field} value {found} ({reason})")]
    InvalidField { pc: usize, field: &'static str, found: i64, reason: &'static str },

    #[error("insn {pc}: invalid register r{reg} in {field} (registers are r0..r10)")]
    BadRegister { pc: usize, field: &'static str, reg: u8 },

    #[error("insn {pc}: r10 is the read-only frame pointer and cannot be written")]
    WriteToFramePointer { pc: usize },

    #[error("insn {pc}: jump target {target} is outside the program (0..{len})")]
    JumpOutOfRange { pc: usize, target: i64, len: usize },

    #[error("insn {pc}: jump target {target} is the second slot of the lddw at {}", target - 1)]
    JumpIntoLddw { pc: usize, target: usize },

    #[error("insn {pc}: jump target {target} lies in another function (function at {function})")]
    JumpAcrossFunction { pc: usize, target: usize, function: usize },

    #[error("insn {pc}: lddw is truncated (its second slot is missing)")]
    TruncatedLddw { pc: usize },

    #[error("insn {pc}: malformed second slot of lddw (opcode, registers and offset must be 0)")]
    BadLddwSecondSlot { pc: usize },

    #[error("insn {pc}: call to unknown local function at {target}")]
    BadCallTarget { pc: usize, target: i64 },

    #[error("insn {pc}: recursive BPF-to-BPF call into the function at {function}")]
    Recursion { pc: usize, function: usize },

    #[error("insn {pc}: BPF-to-BPF call chain is {depth} frames deep (maximum {max})")]
    CallChainTooDeep { pc: usize, depth: usize, max: usize },

    #[error("program has no exit instruction")]
    NoExit,

    #[error("insn {pc}: execution falls off the end of {what} (last instruction must be exit or ja)")]
    FallsOffEnd { pc: usize, what: &'static str },

    #[error("insn {pc}: lddw pseudo source {src} rejected by the embedder: {message}")]
    PseudoLoad { pc: usize, src: u8, message: String },
}

impl LoadError {
    /// Index of the offending instruction, when the error is about one.
    pub fn pc(&self) -> Option<usize> {
        use LoadError::*;
        match *self {
            Empty | TooLong { .. } | NoExit => None,
            UnknownOpcode { pc, .. }
            | Unsupported { pc, .. }
            | ReservedField { pc, .. }
            | InvalidField { pc, .. }
            | BadRegister { pc, .. }
            | WriteToFramePointer { pc }
            | JumpOutOfRange { pc, .. }
            | JumpIntoLddw { pc, .. }
            | JumpAcrossFunction { pc, .. }
            | TruncatedLddw { pc }
            | BadLddwSecondSlot { pc }
            | BadCallTarget { pc, .. }
            | Recursion { pc, .. }
            | CallChainTooDeep { pc, .. }
            | FallsOffEnd { pc, .. }
            | PseudoLoad { pc, .. } => Some(pc),
        }
    }
}

/// Kind of memory access, for [`RunError::OutOfBounds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Load,
    Store,
    Atomic,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Load => "load",
            Access::Store => "store",
            Access::Atomic => "atomic",
        })
    }
}

/// A run of a loaded program stopped abnormally.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RunError {
    #[error("insn {pc}: {access} of {size} bytes at {addr:#x} is outside the stack and every allowed region")]
    OutOfBounds { pc: usize, access: Access, addr: u64, size: usize },

    #[error("insn {pc}: atomic access of {size} bytes at {addr:#x} is not naturally aligned")]
    MisalignedAtomic { pc: usize, addr: u64, size: usize },

    #[error("insn {pc}: call to unregistered helper {id}")]
    UnknownHelper { pc: usize, id: i64 },

    #[error("insn {pc}: BPF-to-BPF call exceeds {max} stack frames")]
    CallDepthExceeded { pc: usize, max: usize },

    #[error("slot {pc} is not the entry of a function of the program")]
    NotAFunction { pc: usize },

    #[error("instruction budget of {limit} exhausted (at insn {pc})")]
    InstructionLimit { pc: usize, limit: u64 },
}
