//! The interpreter: the oracle every other execution engine (the JIT) is
//! checked against, so it follows kernel semantics exactly:
//!
//! - 32-bit ALU results are zero-extended into the 64-bit register;
//! - shift amounts are masked (`& 63` / `& 31`);
//! - division by zero yields 0, modulo by zero leaves `dst` unchanged (the
//!   32-bit forms still zero-extend `dst`); signed `INT_MIN / -1` wraps to
//!   `INT_MIN` and `INT_MIN % -1` is 0;
//! - immediates are sign-extended to 64 bits in 64-bit operations and jumps;
//! - BPF-to-BPF calls get their own 512-byte stack frame (r6..r9 and r10 are
//!   restored on return), at most [`MAX_CALL_FRAMES`] frames;
//! - helper 12 (`bpf_tail_call`) is handled here: it replaces the running
//!   program through the embedder's [`TailCallResolver`], at most
//!   [`MAX_TAIL_CALLS`] times per run; a failed tail call falls through with
//!   r0 unchanged;
//! - `callx` (`call %reg`) calls the helper whose id is in the register;
//! - atomics are real `SeqCst` atomics (maps live in shared memory); a
//!   misaligned one stops the run with [`RunError::MisalignedAtomic`].
//!
//! Two modes, chosen per run by [`RunOptions`]: *unchecked* (the default:
//! the program is trusted, e.g. verified, and memory accesses are plain
//! loads/stores) and *checked* (every load, store and atomic must fall inside
//! the run's stack or one of the allowed [`MemoryRegion`]s; used by tests and
//! by the verifier's fuzzing). The mode is a const generic parameter so the
//! unchecked loop carries no checks at all. Nothing is allocated per run: the
//! stack lives in the interpreter's own native frame.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Access, RunError};
use crate::insn::*;
use crate::program::{Helpers, Program, TailCallResolver};

/// A memory range a checked run may access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Whether stores and atomics are allowed.
    pub writable: bool,
}

impl MemoryRegion {
    /// Region covering a byte slice the program may read and write.
    pub fn from_mut_slice(bytes: &mut [u8]) -> MemoryRegion {
        MemoryRegion { start: bytes.as_mut_ptr() as u64, len: bytes.len() as u64, writable: true }
    }

    /// Region covering a byte slice the program may only read.
    pub fn from_slice(bytes: &[u8]) -> MemoryRegion {
        MemoryRegion { start: bytes.as_ptr() as u64, len: bytes.len() as u64, writable: false }
    }

    #[inline]
    fn contains(&self, addr: u64, size: u64) -> bool {
        addr >= self.start && addr - self.start <= self.len && self.len - (addr - self.start) >= size
    }
}

/// Per-run options. `RunOptions::default()` is the fast unchecked mode with no
/// tail-call resolver and no instruction budget.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions<'a> {
    /// `Some`: checked mode; every memory access must lie in the run's stack
    /// or in one of these regions (an empty slice allows the stack only).
    pub memory_regions: Option<&'a [MemoryRegion]>,
    /// Resolver for `bpf_tail_call`; without one every tail call falls through.
    pub tail_call_resolver: Option<TailCallResolver>,
    /// Stop with [`RunError::InstructionLimit`] after this many instructions
    /// (counting every program of a tail-call chain).
    pub instruction_limit: Option<u64>,
}

const STACK_BYTES: usize = STACK_SIZE * MAX_CALL_FRAMES;

/// The stack of one run, all frames: frame `d` (0 = main) occupies the 512
/// bytes just below `top - d * 512`.
#[repr(C, align(16))]
struct Stack([u8; STACK_BYTES]);

/// Caller state saved by a BPF-to-BPF call.
#[derive(Clone, Copy)]
struct Frame {
    return_pc: usize,
    callee_saved: [u64; 4],
    program: *const Program,
}

const EMPTY_FRAME: Frame = Frame { return_pc: 0, callee_saved: [0; 4], program: std::ptr::null() };

/// Run `prog` with `r1 = ctx`, returning r0 at the final `exit`.
///
/// # Safety
/// In unchecked mode (`opts.memory_regions == None`) the program's memory
/// accesses are performed as is: the caller guarantees the program is safe
/// (verified) for `ctx`. In both modes helpers are called with whatever the
/// program passes, `env` is handed to them unchanged, and every
/// [`crate::program::TailTarget`] the resolver returns must point to a live
/// `Program` for the duration of the run.
pub unsafe fn run(
    prog: &Program,
    helpers: &Helpers,
    ctx: *mut u8,
    env: *mut c_void,
    opts: &RunOptions,
) -> Result<u64, RunError> {
    // SAFETY: forwarded from this function's contract.
    unsafe { run_with_args(prog, helpers, [ctx as u64, 0, 0, 0, 0], env, opts) }
}

/// Like [`run`], with r1..r5 set from `args` (the conformance suite passes
/// the memory length in r2).
///
/// # Safety
/// As for [`run`].
pub unsafe fn run_with_args(
    prog: &Program,
    helpers: &Helpers,
    args: [u64; 5],
    env: *mut c_void,
    opts: &RunOptions,
) -> Result<u64, RunError> {
    // SAFETY: forwarded from this function's contract; slot 0 is the main
    // function's entry.
    unsafe { run_function(prog, helpers, 0, args, env, opts) }
}

/// Run the BPF function starting at slot `entry_pc` of `prog` (a
/// [`Program::function_entries`] member, e.g. a `bpf_loop` callback reached
/// through `lddw` `BPF_PSEUDO_FUNC`) with r1..r5 = `args` on a fresh stack,
/// returning its r0. Usable from inside a helper while another run of the
/// same program is in progress (each run has its own stack).
///
/// # Safety
/// As for [`run`].
pub unsafe fn run_function(
    prog: &Program,
    helpers: &Helpers,
    entry_pc: usize,
    args: [u64; 5],
    env: *mut c_void,
    opts: &RunOptions,
) -> Result<u64, RunError> {
    if prog.function_entries().binary_search(&entry_pc).is_err() {
        return Err(RunError::NotAFunction { pc: entry_pc });
    }
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match (opts.memory_regions.is_some(), opts.instruction_limit.is_some()) {
            (false, false) => execute::<false, false>(prog, helpers, entry_pc, args, env, opts),
            (false, true) => execute::<false, true>(prog, helpers, entry_pc, args, env, opts),
            (true, false) => execute::<true, false>(prog, helpers, entry_pc, args, env, opts),
            (true, true) => execute::<true, true>(prog, helpers, entry_pc, args, env, opts),
        }
    }
}

/// Checks a memory access in checked mode; compiled out otherwise.
#[inline(always)]
fn check_access<const CHECK_MEM: bool>(
    opts: &RunOptions,
    stack: &Stack,
    pc: usize,
    access: Access,
    addr: u64,
    size: usize,
) -> Result<(), RunError> {
    if !CHECK_MEM {
        return Ok(());
    }
    let stack_region =
        MemoryRegion { start: stack.0.as_ptr() as u64, len: STACK_BYTES as u64, writable: true };
    let write = access != Access::Load;
    let regions = opts.memory_regions.unwrap_or(&[]);
    let allowed = stack_region.contains(addr, size as u64)
        || regions.iter().any(|r| (r.writable || !write) && r.contains(addr, size as u64));
    if allowed {
        Ok(())
    } else {
        Err(RunError::OutOfBounds { pc, access, addr, size })
    }
}

#[inline(always)]
fn sign_extend_imm(imm: i32) -> u64 {
    imm as i64 as u64
}

/// The interpreter loop. `CHECK_MEM`: bounds-check memory accesses;
/// `BUDGET`: count instructions against `opts.instruction_limit`.
unsafe fn execute<const CHECK_MEM: bool, const BUDGET: bool>(
    prog: &Program,
    helpers: &Helpers,
    entry_pc: usize,
    args: [u64; 5],
    env: *mut c_void,
    opts: &RunOptions,
) -> Result<u64, RunError> {
    let mut stack = Stack([0; STACK_BYTES]);
    let stack_top = stack.0.as_mut_ptr() as u64 + STACK_BYTES as u64;

    // 16 registers so that `index & 0xf` needs no bounds check; r11..r15
    // never occur in a loaded program.
    let mut reg = [0u64; 16];
    reg[1..6].copy_from_slice(&args);
    reg[10] = stack_top;

    let mut frames = [EMPTY_FRAME; MAX_CALL_FRAMES];
    let mut depth = 0usize;
    let mut tail_calls = 0u32;
    let mut budget = opts.instruction_limit.unwrap_or(u64::MAX);

    let mut program: *const Program = prog;
    let mut insns: &[Insn] = prog.insns();
    let mut pc = entry_pc;

    macro_rules! load {
        ($ty:ty, $addr:expr) => {{
            let addr: u64 = $addr;
            check_access::<CHECK_MEM>(opts, &stack, pc - 1, Access::Load, addr, size_of::<$ty>())?;
            // SAFETY: checked mode verified the range above; in unchecked mode
            // the caller vouched for the program's accesses (see `run`).
            unsafe { (addr as *const $ty).read_unaligned() }
        }};
    }
    macro_rules! store {
        ($ty:ty, $addr:expr, $value:expr) => {{
            let addr: u64 = $addr;
            check_access::<CHECK_MEM>(opts, &stack, pc - 1, Access::Store, addr, size_of::<$ty>())?;
            // SAFETY: as for `load!`.
            unsafe { (addr as *mut $ty).write_unaligned($value as $ty) }
        }};
    }

    loop {
        if BUDGET {
            if budget == 0 {
                return Err(RunError::InstructionLimit {
                    pc,
                    limit: opts.instruction_limit.unwrap_or(0),
                });
            }
            budget -= 1;
        }
        // SAFETY: `Program::load` guarantees every jump, call and return
        // lands inside the program and no function falls off its end, so
        // `pc` is always in bounds here.
        let insn = unsafe { *insns.get_unchecked(pc) };
        let dst = (insn.dst & 0xf) as usize;
        let src = (insn.src & 0xf) as usize;
        let imm = insn.imm;
        let off = insn.off as i64 as u64;
        pc += 1;

        macro_rules! jump_if {
            ($cond:expr) => {
                if $cond {
                    pc = (pc as i64 + insn.off as i64) as usize;
                }
            };
        }

        match insn.opc {
            // ---- 64-bit ALU ----------------------------------------------
            0x07 => reg[dst] = reg[dst].wrapping_add(sign_extend_imm(imm)),
            0x0f => reg[dst] = reg[dst].wrapping_add(reg[src]),
            0x17 => reg[dst] = reg[dst].wrapping_sub(sign_extend_imm(imm)),
            0x1f => reg[dst] = reg[dst].wrapping_sub(reg[src]),
            0x27 => reg[dst] = reg[dst].wrapping_mul(sign_extend_imm(imm)),
            0x2f => reg[dst] = reg[dst].wrapping_mul(reg[src]),
            0x37 | 0x3f => {
                let divisor = if insn.opc & BPF_X != 0 { reg[src] } else { sign_extend_imm(imm) };
                reg[dst] = if divisor == 0 {
                    0
                } else if insn.off == 0 {
                    reg[dst] / divisor
                } else {
                    (reg[dst] as i64).wrapping_div(divisor as i64) as u64
                };
            }
            0x47 => reg[dst] |= sign_extend_imm(imm),
            0x4f => reg[dst] |= reg[src],
            0x57 => reg[dst] &= sign_extend_imm(imm),
            0x5f => reg[dst] &= reg[src],
            0x67 => reg[dst] <<= imm as u32 & 63,
            0x6f => reg[dst] <<= reg[src] & 63,
            0x77 => reg[dst] >>= imm as u32 & 63,
            0x7f => reg[dst] >>= reg[src] & 63,
            0x87 => reg[dst] = reg[dst].wrapping_neg(),
            0x97 | 0x9f => {
                let divisor = if insn.opc & BPF_X != 0 { reg[src] } else { sign_extend_imm(imm) };
                if divisor != 0 {
                    reg[dst] = if insn.off == 0 {
                        reg[dst] % divisor
                    } else {
                        (reg[dst] as i64).wrapping_rem(divisor as i64) as u64
                    };
                }
            }
            0xa7 => reg[dst] ^= sign_extend_imm(imm),
            0xaf => reg[dst] ^= reg[src],
            0xb7 => reg[dst] = sign_extend_imm(imm),
            0xbf => {
                reg[dst] = match insn.off {
                    8 => reg[src] as i8 as i64 as u64,
                    16 => reg[src] as i16 as i64 as u64,
                    32 => reg[src] as i32 as i64 as u64,
                    _ => reg[src],
                }
            }
            0xc7 => reg[dst] = ((reg[dst] as i64) >> (imm as u32 & 63)) as u64,
            0xcf => reg[dst] = ((reg[dst] as i64) >> (reg[src] & 63)) as u64,
            // bswap (ALU64 | END | K): unconditional byte swap.
            0xd7 => {
                reg[dst] = match imm {
                    16 => (reg[dst] as u16).swap_bytes() as u64,
                    32 => (reg[dst] as u32).swap_bytes() as u64,
                    _ => reg[dst].swap_bytes(),
                }
            }

            // ---- 32-bit ALU (results zero-extended) ----------------------
            0x04 => reg[dst] = (reg[dst] as u32).wrapping_add(imm as u32) as u64,
            0x0c => reg[dst] = (reg[dst] as u32).wrapping_add(reg[src] as u32) as u64,
            0x14 => reg[dst] = (reg[dst] as u32).wrapping_sub(imm as u32) as u64,
            0x1c => reg[dst] = (reg[dst] as u32).wrapping_sub(reg[src] as u32) as u64,
            0x24 => reg[dst] = (reg[dst] as u32).wrapping_mul(imm as u32) as u64,
            0x2c => reg[dst] = (reg[dst] as u32).wrapping_mul(reg[src] as u32) as u64,
            0x34 | 0x3c => {
                let divisor = if insn.opc & BPF_X != 0 { reg[src] as u32 } else { imm as u32 };
                let dividend = reg[dst] as u32;
                reg[dst] = if divisor == 0 {
                    0
                } else if insn.off == 0 {
                    (dividend / divisor) as u64
                } else {
                    (dividend as i32).wrapping_div(divisor as i32) as u32 as u64
                };
            }
            0x44 => reg[dst] = (reg[dst] as u32 | imm as u32) as u64,
            0x4c => reg[dst] = (reg[dst] as u32 | reg[src] as u32) as u64,
            0x54 => reg[dst] = (reg[dst] as u32 & imm as u32) as u64,
            0x5c => reg[dst] = (reg[dst] as u32 & reg[src] as u32) as u64,
            0x64 => reg[dst] = ((reg[dst] as u32) << (imm as u32 & 31)) as u64,
            0x6c => reg[dst] = ((reg[dst] as u32) << (reg[src] as u32 & 31)) as u64,
            0x74 => reg[dst] = ((reg[dst] as u32) >> (imm as u32 & 31)) as u64,
            0x7c => reg[dst] = ((reg[dst] as u32) >> (reg[src] as u32 & 31)) as u64,
            0x84 => reg[dst] = (reg[dst] as u32).wrapping_neg() as u64,
            0x94 | 0x9c => {
                let divisor = if insn.opc & BPF_X != 0 { reg[src] as u32 } else { imm as u32 };
                let dividend = reg[dst] as u32;
                reg[dst] = if divisor == 0 {
                    dividend as u64
                } else if insn.off == 0 {
                    (dividend % divisor) as u64
                } else {
                    (dividend as i32).wrapping_rem(divisor as i32) as u32 as u64
                };
            }
            0xa4 => reg[dst] = (reg[dst] as u32 ^ imm as u32) as u64,
            0xac => reg[dst] = (reg[dst] as u32 ^ reg[src] as u32) as u64,
            0xb4 => reg[dst] = imm as u32 as u64,
            0xbc => {
                reg[dst] = match insn.off {
                    8 => reg[src] as i8 as i32 as u32 as u64,
                    16 => reg[src] as i16 as i32 as u32 as u64,
                    _ => reg[src] as u32 as u64,
                }
            }
            0xc4 => reg[dst] = ((reg[dst] as i32) >> (imm as u32 & 31)) as u32 as u64,
            0xcc => reg[dst] = ((reg[dst] as i32) >> (reg[src] as u32 & 31)) as u32 as u64,
            // le: the host is little-endian, so only truncate.
            0xd4 => {
                reg[dst] = match imm {
                    16 => reg[dst] as u16 as u64,
                    32 => reg[dst] as u32 as u64,
                    _ => reg[dst],
                }
            }
            // be: swap to big-endian.
            0xdc => {
                reg[dst] = match imm {
                    16 => (reg[dst] as u16).swap_bytes() as u64,
                    32 => (reg[dst] as u32).swap_bytes() as u64,
                    _ => reg[dst].swap_bytes(),
                }
            }

            // ---- lddw (pseudo sources already resolved by load) ----------
            LDDW => {
                // SAFETY: `Program::load` guarantees the second slot exists.
                let high = unsafe { insns.get_unchecked(pc) }.imm;
                reg[dst] = (imm as u32 as u64) | ((high as u32 as u64) << 32);
                pc += 1;
            }

            // ---- loads ---------------------------------------------------
            0x61 => reg[dst] = load!(u32, reg[src].wrapping_add(off)) as u64,
            0x69 => reg[dst] = load!(u16, reg[src].wrapping_add(off)) as u64,
            0x71 => reg[dst] = load!(u8, reg[src].wrapping_add(off)) as u64,
            0x79 => reg[dst] = load!(u64, reg[src].wrapping_add(off)),
            0x81 => reg[dst] = load!(i32, reg[src].wrapping_add(off)) as i64 as u64,
            0x89 => reg[dst] = load!(i16, reg[src].wrapping_add(off)) as i64 as u64,
            0x91 => reg[dst] = load!(i8, reg[src].wrapping_add(off)) as i64 as u64,

            // ---- stores --------------------------------------------------
            0x62 => store!(u32, reg[dst].wrapping_add(off), imm as u32),
            0x6a => store!(u16, reg[dst].wrapping_add(off), imm as u16),
            0x72 => store!(u8, reg[dst].wrapping_add(off), imm as u8),
            0x7a => store!(u64, reg[dst].wrapping_add(off), sign_extend_imm(imm)),
            0x63 => store!(u32, reg[dst].wrapping_add(off), reg[src] as u32),
            0x6b => store!(u16, reg[dst].wrapping_add(off), reg[src] as u16),
            0x73 => store!(u8, reg[dst].wrapping_add(off), reg[src] as u8),
            0x7b => store!(u64, reg[dst].wrapping_add(off), reg[src]),

            // ---- atomics -------------------------------------------------
            0xc3 => {
                let addr = reg[dst].wrapping_add(off);
                check_access::<CHECK_MEM>(opts, &stack, pc - 1, Access::Atomic, addr, 4)?;
                if addr % 4 != 0 {
                    return Err(RunError::MisalignedAtomic { pc: pc - 1, addr, size: 4 });
                }
                // SAFETY: aligned; in bounds by the checked-mode test above or
                // by the caller's guarantee in unchecked mode.
                let cell = unsafe { AtomicU32::from_ptr(addr as *mut u32) };
                let operand = reg[src] as u32;
                let old = match imm & !BPF_FETCH {
                    0x00 => cell.fetch_add(operand, Ordering::SeqCst),
                    0x40 => cell.fetch_or(operand, Ordering::SeqCst),
                    0x50 => cell.fetch_and(operand, Ordering::SeqCst),
                    0xa0 => cell.fetch_xor(operand, Ordering::SeqCst),
                    0xe0 => cell.swap(operand, Ordering::SeqCst),
                    _ => {
                        // cmpxchg: compare with r0, r0 receives the old value.
                        let expected = reg[0] as u32;
                        let old = match cell.compare_exchange(
                            expected,
                            operand,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(v) | Err(v) => v,
                        };
                        reg[0] = old as u64;
                        continue;
                    }
                };
                if imm & BPF_FETCH != 0 {
                    reg[src] = old as u64;
                }
            }
            0xdb => {
                let addr = reg[dst].wrapping_add(off);
                check_access::<CHECK_MEM>(opts, &stack, pc - 1, Access::Atomic, addr, 8)?;
                if addr % 8 != 0 {
                    return Err(RunError::MisalignedAtomic { pc: pc - 1, addr, size: 8 });
                }
                // SAFETY: as for the 32-bit form.
                let cell = unsafe { AtomicU64::from_ptr(addr as *mut u64) };
                let operand = reg[src];
                let old = match imm & !BPF_FETCH {
                    0x00 => cell.fetch_add(operand, Ordering::SeqCst),
                    0x40 => cell.fetch_or(operand, Ordering::SeqCst),
                    0x50 => cell.fetch_and(operand, Ordering::SeqCst),
                    0xa0 => cell.fetch_xor(operand, Ordering::SeqCst),
                    0xe0 => cell.swap(operand, Ordering::SeqCst),
                    _ => {
                        let old = match cell.compare_exchange(
                            reg[0],
                            operand,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        ) {
                            Ok(v) | Err(v) => v,
                        };
                        reg[0] = old;
                        continue;
                    }
                };
                if imm & BPF_FETCH != 0 {
                    reg[src] = old;
                }
            }

            // ---- 64-bit jumps --------------------------------------------
            JA => pc = (pc as i64 + insn.off as i64) as usize,
            JA32 => pc = (pc as i64 + imm as i64) as usize,
            0x15 => jump_if!(reg[dst] == sign_extend_imm(imm)),
            0x1d => jump_if!(reg[dst] == reg[src]),
            0x25 => jump_if!(reg[dst] > sign_extend_imm(imm)),
            0x2d => jump_if!(reg[dst] > reg[src]),
            0x35 => jump_if!(reg[dst] >= sign_extend_imm(imm)),
            0x3d => jump_if!(reg[dst] >= reg[src]),
            0x45 => jump_if!(reg[dst] & sign_extend_imm(imm) != 0),
            0x4d => jump_if!(reg[dst] & reg[src] != 0),
            0x55 => jump_if!(reg[dst] != sign_extend_imm(imm)),
            0x5d => jump_if!(reg[dst] != reg[src]),
            0x65 => jump_if!((reg[dst] as i64) > imm as i64),
            0x6d => jump_if!((reg[dst] as i64) > reg[src] as i64),
            0x75 => jump_if!((reg[dst] as i64) >= imm as i64),
            0x7d => jump_if!((reg[dst] as i64) >= reg[src] as i64),
            0xa5 => jump_if!(reg[dst] < sign_extend_imm(imm)),
            0xad => jump_if!(reg[dst] < reg[src]),
            0xb5 => jump_if!(reg[dst] <= sign_extend_imm(imm)),
            0xbd => jump_if!(reg[dst] <= reg[src]),
            0xc5 => jump_if!((reg[dst] as i64) < imm as i64),
            0xcd => jump_if!((reg[dst] as i64) < reg[src] as i64),
            0xd5 => jump_if!((reg[dst] as i64) <= imm as i64),
            0xdd => jump_if!((reg[dst] as i64) <= reg[src] as i64),

            // ---- 32-bit jumps (compare the low halves) -------------------
            0x16 => jump_if!(reg[dst] as u32 == imm as u32),
            0x1e => jump_if!(reg[dst] as u32 == reg[src] as u32),
            0x26 => jump_if!(reg[dst] as u32 > imm as u32),
            0x2e => jump_if!(reg[dst] as u32 > reg[src] as u32),
            0x36 => jump_if!(reg[dst] as u32 >= imm as u32),
            0x3e => jump_if!(reg[dst] as u32 >= reg[src] as u32),
            0x46 => jump_if!(reg[dst] as u32 & imm as u32 != 0),
            0x4e => jump_if!(reg[dst] as u32 & reg[src] as u32 != 0),
            0x56 => jump_if!(reg[dst] as u32 != imm as u32),
            0x5e => jump_if!(reg[dst] as u32 != reg[src] as u32),
            0x66 => jump_if!(reg[dst] as i32 > imm),
            0x6e => jump_if!(reg[dst] as i32 > reg[src] as i32),
            0x76 => jump_if!(reg[dst] as i32 >= imm),
            0x7e => jump_if!(reg[dst] as i32 >= reg[src] as i32),
            0xa6 => jump_if!((reg[dst] as u32) < imm as u32),
            0xae => jump_if!((reg[dst] as u32) < reg[src] as u32),
            0xb6 => jump_if!(reg[dst] as u32 <= imm as u32),
            0xbe => jump_if!(reg[dst] as u32 <= reg[src] as u32),
            0xc6 => jump_if!((reg[dst] as i32) < imm),
            0xce => jump_if!((reg[dst] as i32) < reg[src] as i32),
            0xd6 => jump_if!(reg[dst] as i32 <= imm),
            0xde => jump_if!(reg[dst] as i32 <= reg[src] as i32),

            // ---- calls and exit ------------------------------------------
            CALL | CALLX => {
                if insn.opc == CALL && insn.src == BPF_PSEUDO_CALL {
                    if depth + 1 >= MAX_CALL_FRAMES {
                        return Err(RunError::CallDepthExceeded { pc: pc - 1, max: MAX_CALL_FRAMES });
                    }
                    frames[depth] = Frame {
                        return_pc: pc,
                        callee_saved: [reg[6], reg[7], reg[8], reg[9]],
                        program,
                    };
                    depth += 1;
                    reg[10] = stack_top - (depth * STACK_SIZE) as u64;
                    pc = (pc as i64 + imm as i64) as usize;
                    continue;
                }
                let id = if insn.opc == CALLX { reg[dst] as i64 } else { imm as i64 };
                if id == HELPER_TAIL_CALL as i64 {
                    let Some(resolver) = opts.tail_call_resolver else { continue };
                    if tail_calls >= MAX_TAIL_CALLS {
                        continue;
                    }
                    // SAFETY: the embedder's resolver, called as documented.
                    let target = unsafe { resolver(reg[2], reg[3], env) };
                    // SAFETY: non-null targets are live `TailTarget`s whose
                    // `program` is null or a live `Program` (run's contract).
                    let Some(next) = (unsafe { target.as_ref() }).and_then(|t| unsafe { t.program.as_ref() })
                    else {
                        continue;
                    };
                    tail_calls += 1;
                    program = next;
                    insns = next.insns();
                    pc = 0;
                    continue;
                }
                let helper = u32::try_from(id).ok().and_then(|id| helpers.get(id));
                let Some(helper) = helper else {
                    return Err(RunError::UnknownHelper { pc: pc - 1, id });
                };
                // SAFETY: a helper registered by the embedder, called with its
                // documented C ABI.
                reg[0] = unsafe { helper(reg[1], reg[2], reg[3], reg[4], reg[5], env) };
            }
            EXIT => {
                if depth == 0 {
                    return Ok(reg[0]);
                }
                depth -= 1;
                let frame = frames[depth];
                reg[6..10].copy_from_slice(&frame.callee_saved);
                reg[10] = stack_top - (depth * STACK_SIZE) as u64;
                pc = frame.return_pc;
                program = frame.program;
                // SAFETY: frames only hold `prog` or tail targets, live for
                // the whole run.
                insns = unsafe { &*program }.insns();
            }

            // `Program::load` admits no other opcode.
            opcode => unreachable!("opcode {opcode:#04x} passed Program::load validation"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;
    use crate::program::TailTarget;

    unsafe extern "C" fn return_first(r1: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
        r1
    }

    fn load(text: &str) -> Program {
        let insns = assemble(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        Program::load_plain(&insns).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Run in checked mode (stack only) with a budget, helper 5 = identity.
    fn run_checked(prog: &Program, opts: RunOptions) -> Result<u64, RunError> {
        let mut helpers = Helpers::new();
        helpers.register(5, return_first);
        let opts = RunOptions {
            memory_regions: Some(opts.memory_regions.unwrap_or(&[])),
            instruction_limit: Some(opts.instruction_limit.unwrap_or(100_000)),
            ..opts
        };
        // SAFETY: checked mode, no pointers handed in.
        unsafe { run(prog, &helpers, std::ptr::null_mut(), std::ptr::null_mut(), &opts) }
    }

    fn eval(text: &str) -> u64 {
        let prog = load(text);
        let checked = run_checked(&prog, RunOptions::default()).unwrap_or_else(|e| panic!("{text}: {e}"));
        // The unchecked fast path must agree with the checked one.
        let mut helpers = Helpers::new();
        helpers.register(5, return_first);
        // SAFETY: the same program passed the checked run.
        let fast = unsafe {
            run(&prog, &helpers, std::ptr::null_mut(), std::ptr::null_mut(), &RunOptions::default())
        }
        .unwrap();
        assert_eq!(checked, fast, "{text}: checked and unchecked runs disagree");
        checked
    }

    /// (program body without the final exit, expected r0)
    type Case = (&'static str, u64);

    fn check_table(table: &[Case]) {
        for &(body, expected) in table {
            let text = format!("{body}\nexit");
            assert_eq!(eval(&text), expected, "{body}");
        }
    }

    #[test]
    fn alu64() {
        check_table(&[
            ("mov %r0, -1", u64::MAX),
            ("mov %r0, 7\nadd %r0, -8", u64::MAX),
            ("mov %r0, 3\nsub %r0, 5", (-2i64) as u64),
            ("lddw %r0, 0x100000000\nmul %r0, 3", 0x3_0000_0000),
            ("mov %r0, 7\ndiv %r0, 2", 3),
            ("mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1", 0),
            ("mov %r0, 7\nmov %r1, 0\nmod %r0, %r1", 7),
            ("mov %r0, -7\ndiv %r0, -1", 0),
            ("mov %r0, 9\nmod %r0, 4", 1),
            ("mov %r0, -7\nsdiv %r0, 2", (-3i64) as u64),
            ("mov %r0, -7\nsmod %r0, 2", (-1i64) as u64),
            ("mov %r0, 7\nsmod %r0, -2", 1),
            ("lddw %r0, 0x8000000000000000\nsdiv %r0, -1", 0x8000_0000_0000_0000),
            ("lddw %r0, 0x8000000000000000\nsmod %r0, -1", 0),
            ("mov %r0, 5\nsdiv %r0, 0", 0),
            ("mov %r0, 5\nsmod %r0, 0", 5),
            ("mov %r0, 0xf0\nor %r0, 0x0f", 0xff),
            ("mov %r0, 0xf0\nand %r0, 0x3c", 0x30),
            ("mov %r0, 0xff\nxor %r0, -1", !0xffu64),
            ("mov %r0, 1\nlsh %r0, 65", 2),
            ("mov %r0, -1\nrsh %r0, 63", 1),
            ("mov %r0, -16\narsh %r0, 2", (-4i64) as u64),
            ("mov %r1, 1\nmov %r0, -8\narsh %r0, %r1", (-4i64) as u64),
            ("mov %r0, 5\nneg %r0", (-5i64) as u64),
            ("mov %r1, 0x80\nmovsx864 %r0, %r1", (-128i64) as u64),
            ("mov %r1, 0x8000\nmovsx1664 %r0, %r1", (-32768i64) as u64),
            ("mov32 %r1, -1\nmovsx3264 %r0, %r1", u64::MAX),
            ("lddw %r0, 0x0102030405060708\nbswap64 %r0", 0x0807060504030201),
            ("lddw %r0, 0x0102030405060708\nbswap32 %r0", 0x08070605),
            ("lddw %r0, 0x0102030405060708\nbswap16 %r0", 0x0807),
        ]);
    }

    #[test]
    fn alu32_zero_extends() {
        check_table(&[
            ("mov32 %r0, -1", 0xffff_ffff),
            ("mov %r0, -1\nadd32 %r0, 1", 0),
            ("mov %r0, -1\nmov32 %r0, %r0", 0xffff_ffff),
            ("mov %r0, 3\nsub32 %r0, 5", 0xffff_fffe),
            ("mov32 %r0, 0x10000\nmul32 %r0, 0x10000", 0),
            ("mov %r0, -1\ndiv32 %r0, 0", 0),
            ("mov %r0, -1\nmod32 %r0, 0", 0xffff_ffff),
            ("lddw %r0, 0x100000007\nmov32 %r1, 0\nmod32 %r0, %r1", 7),
            ("mov32 %r0, 0x80000000\nsdiv32 %r0, -1", 0x8000_0000),
            ("mov32 %r0, 0x80000000\nsmod32 %r0, -1", 0),
            ("mov32 %r0, -7\nsmod32 %r0, 2", 0xffff_ffff),
            ("mov32 %r0, 1\nlsh32 %r0, 33", 2),
            ("mov32 %r0, -1\nrsh32 %r0, 31", 1),
            ("mov32 %r0, -16\narsh32 %r0, 2", 0xffff_fffc),
            ("mov32 %r0, 5\nneg32 %r0", 0xffff_fffb),
            ("mov %r1, 0x80\nmovsx832 %r0, %r1", 0xffff_ff80),
            ("mov %r1, 0x8000\nmovsx1632 %r0, %r1", 0xffff_8000),
            ("lddw %r0, 0x0102030405060708\nle32 %r0", 0x05060708),
            ("lddw %r0, 0x0102030405060708\nle16 %r0", 0x0708),
            ("lddw %r0, 0x0102030405060708\nle64 %r0", 0x0102030405060708),
            ("lddw %r0, 0x0102030405060708\nbe16 %r0", 0x0807),
            ("lddw %r0, 0x0102030405060708\nbe32 %r0", 0x08070605),
            ("lddw %r0, 0x0102030405060708\nbe64 %r0", 0x0807060504030201),
        ]);
    }

    #[test]
    fn memory() {
        check_table(&[
            ("lddw %r1, 0x8899aabbccddeeff\nstxdw [%r10-8], %r1\nldxdw %r0, [%r10-8]", 0x8899_aabb_ccdd_eeff),
            ("lddw %r1, 0x8899aabbccddeeff\nstxdw [%r10-8], %r1\nldxw %r0, [%r10-8]", 0xccdd_eeff),
            ("lddw %r1, 0x8899aabbccddeeff\nstxdw [%r10-8], %r1\nldxh %r0, [%r10-6]", 0xccdd),
            ("lddw %r1, 0x8899aabbccddeeff\nstxdw [%r10-8], %r1\nldxb %r0, [%r10-1]", 0x88),
            ("lddw %r1, 0x8899aabbccddeeff\nstxdw [%r10-8], %r1\nldxsw %r0, [%r10-8]", 0xffff_ffff_ccdd_eeff),
            ("lddw %r1, 0x8899aabbccddeeff\nstxdw [%r10-8], %r1\nldxsh %r0, [%r10-6]", 0xffff_ffff_ffff_ccdd),
            ("lddw %r1, 0x8899aabbccddeeff\nstxdw [%r10-8], %r1\nldxsb %r0, [%r10-1]", 0xffff_ffff_ffff_ff88),
            ("stdw [%r10-8], -2\nldxdw %r0, [%r10-8]", (-2i64) as u64),
            ("stdw [%r10-8], 0\nstw [%r10-8], -1\nldxdw %r0, [%r10-8]", 0xffff_ffff),
            ("stdw [%r10-8], 0\nsth [%r10-8], 0x1234\nstb [%r10-7], 0x56\nldxdw %r0, [%r10-8]", 0x5634),
            ("mov %r1, 0\nstxdw [%r10-8], %r1\nstxw [%r10-4], %r10\nldxw %r0, [%r10-8]", 0),
        ]);
    }

    #[test]
    fn atomics() {
        check_table(&[
            ("stdw [%r10-8], 10\nmov %r1, 3\nlock add [%r10-8], %r1\nldxdw %r0, [%r10-8]", 13),
            ("stdw [%r10-8], 10\nmov %r1, 3\nlock fetch add [%r10-8], %r1\nmov %r0, %r1", 10),
            ("stdw [%r10-8], 10\nmov %r1, 3\nlock or [%r10-8], %r1\nldxdw %r0, [%r10-8]", 11),
            ("stdw [%r10-8], 10\nmov %r1, 3\nlock fetch and [%r10-8], %r1\nldxdw %r0, [%r10-8]", 2),
            ("stdw [%r10-8], 10\nmov %r1, 3\nlock fetch xor [%r10-8], %r1\nmov %r0, %r1", 10),
            ("stdw [%r10-8], 10\nmov %r1, 3\nlock xchg [%r10-8], %r1\nldxdw %r0, [%r10-8]\nlsh %r0, 8\nor %r0, %r1", 0x30a),
            ("stdw [%r10-8], 10\nmov %r1, 3\nmov %r0, 10\nlock cmpxchg [%r10-8], %r1\nldxdw %r1, [%r10-8]\nlsh %r0, 8\nor %r0, %r1", 0xa03),
            ("stdw [%r10-8], 10\nmov %r1, 3\nmov %r0, 9\nlock cmpxchg [%r10-8], %r1\nldxdw %r1, [%r10-8]\nlsh %r0, 8\nor %r0, %r1", 0xa0a),
            // 32-bit forms touch only the low word and zero-extend fetched values.
            ("stdw [%r10-8], -1\nmov %r1, 1\nlock add32 [%r10-8], %r1\nldxdw %r0, [%r10-8]", 0xffff_ffff_0000_0000),
            ("stdw [%r10-8], -1\nmov %r1, 1\nlock fetch add32 [%r10-8], %r1\nmov %r0, %r1", 0xffff_ffff),
            ("stdw [%r10-8], 5\nmov %r0, -1\nmov32 %r0, 5\nmov %r1, 7\nlock cmpxchg32 [%r10-8], %r1\nldxdw %r0, [%r10-8]", 7),
        ]);
    }

    #[test]
    fn jumps() {
        let taken = |cond: &str| format!("mov %r0, 0\n{cond}, +1\nexit\nmov %r0, 1");
        let table = [
            ("mov %r1, -1\njgt %r1, 5", 1),
            ("mov %r1, -1\njsgt %r1, 5", 0),
            ("mov %r1, -1\njslt %r1, -1", 0),
            ("mov %r1, -1\njsle %r1, -1", 1),
            ("mov %r1, -1\njeq %r1, -1", 1),
            ("mov32 %r1, -1\njeq %r1, -1", 0),
            ("mov32 %r1, -1\njeq32 %r1, -1", 1),
            ("lddw %r1, 0x100000001\njeq32 %r1, 1", 1),
            ("lddw %r1, 0x100000001\njne %r1, 1", 1),
            ("mov %r1, 6\njset %r1, 2", 1),
            ("mov %r1, 6\njset %r1, 1", 0),
            ("mov32 %r1, 0x80000000\njsgt32 %r1, 0", 0),
            ("mov32 %r1, 0x80000000\njgt32 %r1, 0", 1),
            ("mov %r1, 1\nmov %r2, 2\njlt %r1, %r2", 1),
            ("mov %r1, 2\nmov %r2, 2\njle %r1, %r2", 1),
            ("mov %r1, 2\nmov %r2, 2\njge32 %r1, %r2", 1),
            ("mov %r1, -2\nmov %r2, -1\njslt32 %r1, %r2", 1),
            ("mov %r1, -2\nmov %r2, -1\njsge %r1, %r2", 0),
        ];
        for (cond, expected) in table {
            let (setup, jump) = cond.rsplit_once('\n').unwrap();
            let text = format!("{setup}\n{}\nexit", taken(jump));
            assert_eq!(eval(&text), expected, "{cond}");
        }
        check_table(&[("mov %r0, 1\nja32 +1\nmov %r0, 2", 1), ("mov %r0, 1\nja +1\nmov %r0, 2", 1)]);
    }

    #[test]
    fn local_calls_have_own_frames_and_restore_callee_saved() {
        let text = "mov %r6, 6\nstdw [%r10-8], 1\ncall local f\nldxdw %r1, [%r10-8]\nadd %r0, %r1\n\
                    add %r0, %r6\nexit\n\
                    f:\nstdw [%r10-8], 100\nmov %r6, 1000\nldxdw %r0, [%r10-8]\nexit";
        // 100 (callee's own slot) + 1 (caller's slot intact) + 6 (r6 restored)
        assert_eq!(eval(text), 107);
    }

    #[test]
    fn helpers_callx_and_errors() {
        check_table(&[("mov %r1, 42\ncall 5", 42), ("mov %r1, 9\nmov %r2, 5\ncall %r2", 9)]);
        let prog = load("call 77\nexit");
        assert_eq!(run_checked(&prog, RunOptions::default()), Err(RunError::UnknownHelper { pc: 0, id: 77 }));
        let oob = load("mov %r1, 0\nldxdw %r0, [%r1+16]\nexit");
        assert_eq!(
            run_checked(&oob, RunOptions::default()),
            Err(RunError::OutOfBounds { pc: 1, access: Access::Load, addr: 16, size: 8 })
        );
        let above_stack = load("stdw [%r10+0], 1\nexit");
        assert!(matches!(
            run_checked(&above_stack, RunOptions::default()),
            Err(RunError::OutOfBounds { pc: 0, access: Access::Store, .. })
        ));
        let misaligned = load("mov %r1, 1\nlock add [%r10-15], %r1\nexit");
        let result = run_checked(&misaligned, RunOptions::default());
        assert!(matches!(result, Err(RunError::MisalignedAtomic { pc: 1, .. })), "{result:?}");
        let spin = load("ja -1\nexit");
        let opts = RunOptions { instruction_limit: Some(1000), ..Default::default() };
        assert_eq!(run_checked(&spin, opts), Err(RunError::InstructionLimit { pc: 0, limit: 1000 }));
    }

    #[test]
    fn checked_mode_honours_regions() {
        let prog = load("ldxb %r0, [%r1+3]\nstb [%r1+3], 9\nexit");
        let mut data = [1u8, 2, 3, 4];
        let helpers = Helpers::new();
        let read_only = [MemoryRegion::from_slice(&data)];
        let opts = RunOptions { memory_regions: Some(&read_only), ..Default::default() };
        // SAFETY: checked mode.
        let denied = unsafe { run(&prog, &helpers, data.as_mut_ptr(), std::ptr::null_mut(), &opts) };
        assert!(matches!(denied, Err(RunError::OutOfBounds { pc: 1, access: Access::Store, .. })));
        let writable = [MemoryRegion::from_mut_slice(&mut data)];
        let opts = RunOptions { memory_regions: Some(&writable), ..Default::default() };
        // SAFETY: checked mode.
        let ok = unsafe { run(&prog, &helpers, data.as_mut_ptr(), std::ptr::null_mut(), &opts) };
        assert_eq!(ok, Ok(4));
        assert_eq!(data[3], 9);
    }

    struct TailTable {
        targets: Vec<TailTarget>,
    }

    unsafe extern "C" fn resolve_tail(array: u64, index: u64, _env: *mut c_void) -> *const TailTarget {
        // SAFETY: tests pass a pointer to a live TailTable as the array handle.
        let table = unsafe { &*(array as *const TailTable) };
        table.targets.get(index as usize).map_or(std::ptr::null(), |t| t as *const TailTarget)
    }

    #[test]
    fn tail_calls_replace_program_and_are_bounded() {
        // Slot 0: counts in r6 and tail-calls itself forever.
        let looping = load("add %r6, 1\nmov %r0, %r6\nmov %r2, %r7\nmov %r3, 0\ncall 12\nexit");
        // Slot 1: returns 77.
        let target = load("mov %r0, 77\nexit");
        let table = TailTable {
            targets: vec![
                TailTarget { program: &looping, jit_entry: std::ptr::null() },
                TailTarget { program: &target, jit_entry: std::ptr::null() },
            ],
        };
        let handle = &table as *const TailTable as u64;
        let opts = RunOptions { tail_call_resolver: Some(resolve_tail), ..Default::default() };
        let entry = load(&format!("lddw %r7, {handle:#x}\nmov %r2, %r7\nmov %r3, 1\ncall 12\nmov %r0, 5\nexit"));
        assert_eq!(run_checked(&entry, opts), Ok(77));
        // Empty slot: falls through with r0 unchanged.
        let missing = load(&format!("mov %r0, 3\nlddw %r2, {handle:#x}\nmov %r3, 9\ncall 12\nexit"));
        assert_eq!(run_checked(&missing, opts), Ok(3));
        // 33 tail calls succeed (the self-loop body runs 33 times), the 34th
        // falls through.
        let start = load(&format!("lddw %r7, {handle:#x}\nmov %r6, 0\nmov %r2, %r7\nmov %r3, 0\ncall 12\nexit"));
        assert_eq!(run_checked(&start, opts), Ok(33));
        // Without a resolver every tail call falls through.
        assert_eq!(run_checked(&missing, RunOptions::default()), Ok(3));
    }

    #[test]
    fn run_function_enters_a_callback() {
        let insns = assemble("lddw %r1, func(cb)\nexit\ncb:\nmov %r0, %r2\nadd %r0, 1\nexit").unwrap();
        let prog = Program::load(&insns, &mut |p| Ok((p.pc as i64 + 1 + p.imm as i64) as u64)).unwrap();
        assert_eq!(prog.function_entries(), &[0, 3]);
        let helpers = Helpers::new();
        let opts = RunOptions::default();
        // SAFETY: the function touches no memory.
        let r = unsafe { run_function(&prog, &helpers, 3, [0, 41, 0, 0, 0], std::ptr::null_mut(), &opts) };
        assert_eq!(r, Ok(42));
        // SAFETY: as above.
        let bad = unsafe { run_function(&prog, &helpers, 1, [0; 5], std::ptr::null_mut(), &opts) };
        assert_eq!(bad, Err(RunError::NotAFunction { pc: 1 }));
    }

    #[test]
    fn every_loadable_encoding_runs_without_panicking() {
        // Each opcode with assorted fields, in checked mode with a budget:
        // whatever Program::load accepts, the interpreter must execute.
        let mut loaded = 0;
        for opc in 0..=255u8 {
            for (dst, src) in [(0u8, 0u8), (1, 2), (10, 1)] {
                for off in [0i16, 1, 8, 16, 32, -8] {
                    for imm in [0i32, 1, 16, 32, 64, 0x41, 0xe1, 0xf1] {
                        let insn = Insn::new(opc, dst, src, off, imm);
                        let exit = Insn::new(EXIT, 0, 0, 0, 0);
                        let insns = if insn.is_lddw() {
                            vec![insn, Insn::default(), exit]
                        } else {
                            vec![insn, exit, exit]
                        };
                        if let Ok(prog) = Program::load_plain(&insns) {
                            loaded += 1;
                            let opts = RunOptions { instruction_limit: Some(10), ..Default::default() };
                            let _ = run_checked(&prog, opts);
                        }
                    }
                }
            }
        }
        assert!(loaded > 100, "only {loaded} encodings loaded");
    }
}
