//! The x86-64 JIT: compiles a loaded [`Program`] to native code with exactly
//! the interpreter's semantics, and runs it.
//!
//! Owns the public JIT API ([`JitProgram`], [`JitOptions`], [`JitError`]);
//! the encoder lives in `x86`, the translation in `codegen`, the copy-loop
//! idiom (lowered to a guarded `rep movsb`) in `copy_loop`, the choice of
//! loops emitted unrolled in `unroll`, executable
//! memory in [`crate::exec_mem`]. See `docs/arch/vm-jit.md` for the frame
//! layout, register mapping and the tail-call protocol.
//!
//! Like the kernel's JIT, compiled code does no bounds checks: memory safety
//! of loads and stores is the verifier's business. Everything the
//! interpreter decides at run time that *can* be decided at compile time is
//! (unknown helpers are a compile error).

mod codegen;
mod copy_loop;
mod unroll;
mod x86;

use std::ffi::c_void;

use thiserror::Error;

use crate::error::RunError;
use crate::exec_mem::ExecMem;
use crate::insn::{CALLX, MAX_CALL_FRAMES};
use crate::program::{Helpers, Program, TailCallResolver};

pub use codegen::TAIL_CALL_ENTRY_OFFSET;
use codegen::{AbortInfo, ABORT_CALL_DEPTH, ABORT_UNKNOWN_HELPER};

/// Compile-time choices.
#[derive(Clone, Copy, Debug)]
pub struct JitOptions {
    /// Use BMI2 `shlx`/`shrx`/`sarx` for shifts by a register (default: when
    /// the CPU has BMI2).
    pub bmi2: bool,
    /// Resolver for helper 12 (`bpf_tail_call`, also through `callx`), as
    /// in `interp::RunOptions`: a tail call jumps to the resolved target's
    /// `jit_entry`. Without one every tail call falls through, as in the
    /// interpreter (helper 12 is never looked up in the helper table).
    pub tail_call_resolver: Option<TailCallResolver>,
    /// Lower recognized memory-copy loops to a guarded `rep movsb` that
    /// falls back to the loop itself whenever it would not be exact
    /// (overlap, short or wrapping counts; see `copy_loop`). Default: on.
    pub copy_loops: bool,
    /// Emit simple innermost loops (contiguous body of at most 16
    /// instructions, one back edge, entered only at the head, no calls,
    /// `exit` or `lddw`) as two copies of the body, so only every second
    /// iteration takes the back edge (see `unroll`). Exact by construction:
    /// every copy performs one iteration's operations. Default: on.
    pub unroll_loops: bool,
    /// In an unrolled loop, defer a pointer increment (`add p, imm`, `p`
    /// otherwise only a load/store base) to the last copy, adjusting the
    /// displacements in between and performing it on every exit: breaks the
    /// one-add-per-iteration dependency chain (see `unroll`). Needs
    /// `unroll_loops`. Default: on.
    pub defer_loop_increments: bool,
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions {
            bmi2: std::arch::is_x86_feature_detected!("bmi2"),
            tail_call_resolver: None,
            copy_loops: true,
            unroll_loops: true,
            defer_loop_increments: true,
        }
    }
}

/// Why a program could not be compiled. Every error about an instruction
/// names its index.
#[derive(Debug, Error)]
pub enum JitError {
    #[error("insn {pc}: call to unknown helper {id}")]
    UnknownHelper { pc: usize, id: i64 },

    #[error("insn {pc}: {feature} is not supported by the JIT")]
    Unsupported { pc: usize, feature: &'static str },

    /// The program breaks a guarantee of `Program::load` (cannot happen for a
    /// loaded program; reported instead of panicking).
    #[error("insn {pc}: invalid instruction: {reason}")]
    Invalid { pc: usize, reason: &'static str },

    #[error("cannot map executable memory for the compiled code: {0}")]
    ExecMem(#[source] std::io::Error),
}

impl JitError {
    /// Index of the offending instruction, when the error is about one.
    pub fn pc(&self) -> Option<usize> {
        match *self {
            JitError::UnknownHelper { pc, .. }
            | JitError::Unsupported { pc, .. }
            | JitError::Invalid { pc, .. } => Some(pc),
            JitError::ExecMem(_) => None,
        }
    }
}

/// How far below a helper the code is requested: past the helper's own
/// executable image (for a PIE binary or a shared library, typically free
/// address space), well within a rel32's ±2 GiB.
const HELPER_PLACEMENT_DISTANCE: usize = 256 << 20;

/// Signature of compiled code: `(r1, r2, r3, r4, r5, env, abort) -> r0`.
/// `abort` is written when the run stops abnormally (a BPF-to-BPF call
/// deeper than `MAX_CALL_FRAMES`, reachable only through tail calls, or a
/// `callx` to an unregistered helper).
type EntryFn = unsafe extern "C" fn(u64, u64, u64, u64, u64, *mut c_void, *mut AbortInfo) -> u64;

/// Signature of the function entry: `EntryFn` plus the native address of
/// the BPF function to run.
type FunctionEntryFn =
    unsafe extern "C" fn(u64, u64, u64, u64, u64, *mut c_void, *mut AbortInfo, *const u8) -> u64;

/// A JIT-compiled program. Immutable and shareable between threads; each
/// call runs on the calling thread's stack (about 4.2 KiB of it: eight
/// 512-byte eBPF frames plus saved registers).
pub struct JitProgram {
    code: ExecMem,
    entry: EntryFn,
    function_entry: FunctionEntryFn,
    /// (slot, native offset) of every BPF function, sorted by slot.
    functions: Box<[(usize, u32)]>,
    /// Helper addresses by id (0 = unregistered) for `callx`, which looks
    /// them up at run time; the code holds this table's address.
    _callx_table: Option<Box<[u64]>>,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("entry", &self.code.as_ptr())
            .field("code_size", &self.code.len())
            .finish()
    }
}

impl JitProgram {
    /// Compile `prog`. Helpers are resolved now into direct calls: a call to
    /// a helper id missing from `helpers` is an error naming the instruction.
    pub fn compile(
        prog: &Program,
        helpers: &Helpers,
        opts: &JitOptions,
    ) -> Result<JitProgram, JitError> {
        let callx_table: Option<Box<[u64]>> =
            prog.insns().iter().any(|i| i.opc == CALLX).then(|| {
                helpers
                    .as_slice()
                    .iter()
                    .map(|h| h.map_or(0, |f| f as usize as u64))
                    .collect()
            });
        let generated = codegen::generate(prog.insns(), helpers, opts, callx_table.as_deref())?;
        // Ask for the code within reach of a rel32 from the helpers (just
        // below the first one's image) so helper calls can be made direct;
        // where the kernel places it elsewhere they stay absolute.
        let near = generated
            .helper_calls
            .first()
            .map(|&(_, target)| (target as usize).saturating_sub(HELPER_PLACEMENT_DISTANCE));
        let code = ExecMem::with_placement(&generated.code, near, |bytes, base| {
            for &(at, target) in &generated.helper_calls {
                x86::patch_call_slot(bytes, at, (base + at) as u64, target);
            }
        })
        .map_err(JitError::ExecMem)?;
        // SAFETY: `code` holds a complete function generated for the C ABI
        // signature `EntryFn` (see codegen's prologue/epilogue); it lives as
        // long as `self`.
        let entry = unsafe { std::mem::transmute::<*const u8, EntryFn>(code.as_ptr()) };
        // SAFETY: as above, at the function entry, for `FunctionEntryFn`.
        let function_entry = unsafe {
            std::mem::transmute::<*const u8, FunctionEntryFn>(
                code.as_ptr().add(generated.function_entry),
            )
        };
        let functions = prog
            .function_entries()
            .iter()
            .map(|&pc| (pc, generated.offsets[pc]))
            .collect();
        Ok(JitProgram {
            code,
            entry,
            function_entry,
            functions,
            _callx_table: callx_table,
        })
    }

    /// Run the program with `r1 = ctx` (r2..r5 = 0); `env` is handed to every
    /// helper (and the tail-call resolver) as its last argument. Returns r0.
    /// An aborted run (see [`JitProgram::try_call`]) returns 0.
    ///
    /// # Safety
    /// The program must be safe to run on `ctx` (verified by the caller's
    /// verifier: the JIT does no bounds checks), every helper and the
    /// tail-call resolver given at compile time must still be valid for
    /// `env`, and every tail-call target must stay alive during the run.
    #[inline]
    pub unsafe fn call(&self, ctx: *mut u8, env: *mut c_void) -> u64 {
        let mut abort = AbortInfo::default();
        // SAFETY: forwarded from this function's contract; `abort` outlives
        // the call.
        unsafe { (self.entry)(ctx as u64, 0, 0, 0, 0, env, &mut abort) }
    }

    /// Like [`JitProgram::call`], but reports an aborted run, with the
    /// interpreter's errors: a BPF-to-BPF call nesting deeper than
    /// [`MAX_CALL_FRAMES`] (possible only through tail calls;
    /// `Program::load` bounds each program statically) is
    /// [`RunError::CallDepthExceeded`], a `callx` to an unregistered helper
    /// is [`RunError::UnknownHelper`].
    ///
    /// # Safety
    /// As for [`JitProgram::call`].
    pub unsafe fn try_call(&self, ctx: *mut u8, env: *mut c_void) -> Result<u64, RunError> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.try_call_with_args([ctx as u64, 0, 0, 0, 0], env) }
    }

    /// [`JitProgram::try_call`] with r1..r5 set from `args` (the conformance
    /// suite passes the memory length in r2).
    ///
    /// # Safety
    /// As for [`JitProgram::call`], with `args[0]` as the context.
    pub unsafe fn try_call_with_args(
        &self,
        args: [u64; 5],
        env: *mut c_void,
    ) -> Result<u64, RunError> {
        let mut abort = AbortInfo::default();
        let [r1, r2, r3, r4, r5] = args;
        // SAFETY: forwarded from this function's contract; `abort` outlives
        // the call.
        let r0 = unsafe { (self.entry)(r1, r2, r3, r4, r5, env, &mut abort) };
        abort_to_result(r0, abort)
    }

    /// Run the BPF function starting at slot `entry_pc` (a member of
    /// [`Program::function_entries`], e.g. a `bpf_loop` callback) with
    /// r1..r5 = `args` on a fresh stack, returning its r0. Usable from inside
    /// a helper while a run of this program is in progress on this thread
    /// (each call gets its own frames and tail-call count). Same errors as
    /// `interp::run_function`.
    ///
    /// # Safety
    /// As for [`JitProgram::call`].
    pub unsafe fn call_function(
        &self,
        entry_pc: usize,
        args: [u64; 5],
        env: *mut c_void,
    ) -> Result<u64, RunError> {
        let Ok(i) = self
            .functions
            .binary_search_by_key(&entry_pc, |&(pc, _)| pc)
        else {
            return Err(RunError::NotAFunction { pc: entry_pc });
        };
        // SAFETY: the offset of an instruction inside our code.
        let target = unsafe { self.code.as_ptr().add(self.functions[i].1 as usize) };
        let mut abort = AbortInfo::default();
        let [r1, r2, r3, r4, r5] = args;
        // SAFETY: forwarded from this function's contract; `target` is the
        // start of a BPF function of this program.
        let r0 = unsafe { (self.function_entry)(r1, r2, r3, r4, r5, env, &mut abort, target) };
        abort_to_result(r0, abort)
    }

    /// Start of the machine code (what a [`crate::program::TailTarget`]'s
    /// `jit_entry` must hold: tail calls enter at
    /// `entry() + TAIL_CALL_ENTRY_OFFSET`). Valid while `self` lives.
    pub fn entry(&self) -> *const u8 {
        self.code.as_ptr()
    }

    /// Size of the machine code in bytes.
    pub fn code_size(&self) -> usize {
        self.code.len()
    }

    /// The machine code, for disassembly and tests.
    pub fn code(&self) -> &[u8] {
        self.code.bytes()
    }
}

/// The run's outcome from what the compiled code reported.
fn abort_to_result(r0: u64, abort: AbortInfo) -> Result<u64, RunError> {
    let pc = abort.pc as usize;
    match abort.kind {
        0 => Ok(r0),
        ABORT_CALL_DEPTH => Err(RunError::CallDepthExceeded {
            pc,
            max: MAX_CALL_FRAMES,
        }),
        ABORT_UNKNOWN_HELPER => Err(RunError::UnknownHelper {
            pc,
            id: abort.detail as i64,
        }),
        kind => unreachable!("compiled code reported unknown abort kind {kind}"),
    }
}

#[cfg(test)]
mod tests;
