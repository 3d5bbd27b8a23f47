//! Why a program was refused: the kernel's errno and a message in the
//! kernel's wording, tied to the instruction that failed.

/// `EACCES`: the program is well formed but not provably safe.
pub const EACCES: i32 = 13;
/// `EINVAL`: the program is malformed (bad opcode, jump target, ...).
pub const EINVAL: i32 = 22;
/// `EBADF`: a `lddw` names a map fd the loader does not have.
pub const EBADF: i32 = 9;
/// `E2BIG`: the program exceeds the complexity budget.
pub const E2BIG: i32 = 7;

/// An internal rejection, turned into a [`crate::VerifyError`] with the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub errno: i32,
    pub pc: Option<usize>,
    pub message: String,
}

impl Reject {
    pub fn acces(pc: usize, message: String) -> Reject {
        Reject { errno: EACCES, pc: Some(pc), message }
    }

    pub fn inval(pc: Option<usize>, message: String) -> Reject {
        Reject { errno: EINVAL, pc, message }
    }
}
