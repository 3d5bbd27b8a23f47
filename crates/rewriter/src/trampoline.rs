//! Code generation for the per-site entry trampoline.
//!
//! The probed function's first bytes become `jmp trampoline`. The trampoline
//! runs at an ABI function-entry point, which is what makes it small:
//! status flags are dead (only DF matters, and it is clear), the 128-byte
//! red zone below `rsp` is free, `xmm0-7` may hold arguments and `xmm8-15`
//! are dead. Because the status flags carry nothing at a function entry,
//! `pt_regs.flags` is reported as `0x202` (IF and the reserved bit) instead
//! of paying for `pushfq` (measured: ~0.8 ns of the ~6 ns per hit); the
//! breakpoint path reports the real flags. It:
//!
//! ```text
//!   push rbp; mov rbp, rsp                  ; keep the entry sp
//!   and rsp, -16; sub rsp, FRAME            ; aligned frame: pt_regs + xmm0-7
//!   mov [rsp+off], reg   (all 15 GPRs)      ; kernel pt_regs layout
//!   bp, flags, sp (= entry sp), ip (= function address), cs, ss, orig_ax
//!   movaps [rsp+X+16*i], xmm_i  (i = 0..7)
//!   rdi = &pt_regs; rsi = site; call dispatch_trampoline_entry; test rax, rax
//!   restore xmm0-7, rax, rcx, rdx, rsi, rdi, r8-r11 (argument and scratch
//!   registers; callee-saved ones were preserved by the call)
//!   mov rsp, rbp; pop rbp
//!   jnz call_path                           ; a uretprobe hijacked the return
//! original_copy:
//!   <displaced prologue instructions, relocated>
//!   jmp function + displaced length
//! call_path:
//!   lea rsp, [rsp + 8]                      ; real return address: shadow stack
//!   call original_copy
//! continuation:
//!   jmp [rip + x] -> balanced_return_trampoline
//! ```
//!
//! The uretprobe path keeps the return-stack buffer (RSB) balanced: the
//! function sees exactly the stack of a normal call (same return-address
//! slot, rsp ≡ 8 mod 16, stack arguments at the same offsets, nothing
//! written below rsp beyond what a call writes) except that the slot holds
//! `continuation`, which the `call` pushed on the RSB too, so the function's
//! `ret` is predicted; `balanced_return_trampoline` leaves with
//! `push real; ret`, which consumes the RSB entry of the caller's own
//! `call` — also predicted. Overwriting the return address in place (the
//! breakpoint path) makes the function's `ret` a sure misprediction.
//!
//! `original_copy` doubles as the bypass used while a site is being
//! unpatched and as the landing place of threads moved out of the interior
//! of the prologue while it is being patched.

use crate::regs::{offset, USER_CS, USER_SS};
use crate::relocate::{self, Displaced};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

/// Bytes of the frame below the aligned rsp: pt_regs, 8 bytes of padding,
/// then 8 × 16 bytes of xmm registers.
const XMM_AREA: i32 = offset::SIZE + 8;
const FRAME: i32 = XMM_AREA + 8 * 16;
const _: () = assert!(FRAME % 16 == 0 && XMM_AREA % 16 == 0);
/// `pt_regs.flags` reported at a trampoline hit: IF | reserved bit 1.
const ENTRY_FLAGS: i32 = 0x202;

pub(crate) struct EntryTrampoline {
    pub code: Vec<u8>,
    /// Address of the relocated original instructions.
    pub original_copy: usize,
    /// Prologue boundaries: (offset in the original, address of the copy).
    pub boundaries: Vec<(usize, usize)>,
    /// Return address pushed by the `call` of the uretprobe path.
    pub return_continuation: usize,
}

/// `jnz rel32`, its displacement patched once the target is known.
const JNZ_REL32: [u8; 6] = [0x0f, 0x85, 0, 0, 0, 0];

/// Generates the trampoline placed at `page` for the function at
/// `function_address`, whose displaced instructions are `displaced`.
/// `balanced_return` is where the uretprobe path's continuation jumps.
pub(crate) fn build_entry(
    page: usize,
    function_address: usize,
    site: usize,
    dispatch: usize,
    balanced_return: usize,
    displaced: &Displaced,
) -> Result<EntryTrampoline, String> {
    let assembling = |e: IcedError| format!("assembling the trampoline: {e}");
    let mut code = entry_stub(function_address, site, dispatch).map_err(assembling)?.assemble(page as u64).map_err(assembling)?;
    let jnz_at = code.len();
    code.extend_from_slice(&JNZ_REL32);
    let original_copy = page + code.len();
    let relocated = relocate::relocate(displaced, original_copy)?;
    code.extend_from_slice(&relocated.code);
    let call_path = page + code.len();
    let displacement = i32::try_from(call_path - original_copy).map_err(|_| "trampoline too large".to_string())?;
    code[jnz_at + 2..jnz_at + 6].copy_from_slice(&displacement.to_le_bytes());
    let (tail, return_continuation) = call_path_code(call_path, original_copy, balanced_return).map_err(assembling)?;
    code.extend_from_slice(&tail);
    Ok(EntryTrampoline { code, original_copy, boundaries: relocated.boundaries, return_continuation })
}

/// The uretprobe path, reached when the dispatcher hijacked the return (the
/// real return address is on the shadow stack):
///
/// ```text
///   lea rsp, [rsp + 8]         ; drop the real return address
///   call original_copy         ; same slot, same alignment as the caller's call
/// continuation:
///   jmp [rip + target]         ; to balanced_return_trampoline
/// target: dq balanced_return
/// ```
///
/// Returns the code and the continuation's address.
fn call_path_code(at: usize, original_copy: usize, balanced_return: usize) -> Result<(Vec<u8>, usize), IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut continuation = a.create_label();
    let mut target = a.create_label();
    a.lea(rsp, qword_ptr(rsp + 8))?;
    a.call(original_copy as u64)?;
    a.set_label(&mut continuation)?;
    a.jmp(qword_ptr(target))?;
    a.set_label(&mut target)?;
    a.dq(&[balanced_return as u64])?;
    let result = a.assemble_options(at as u64, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    let continuation = result.label_ip(&continuation)? as usize;
    Ok((result.inner.code_buffer, continuation))
}

fn entry_stub(function_address: usize, site: usize, dispatch: usize) -> Result<CodeAssembler, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    a.push(rbp)?;
    a.mov(rbp, rsp)?;
    a.and(rsp, -16)?;
    a.sub(rsp, FRAME)?;
    let saved = [
        (offset::AX, rax),
        (offset::CX, rcx),
        (offset::DX, rdx),
        (offset::SI, rsi),
        (offset::DI, rdi),
        (offset::R8, r8),
        (offset::R9, r9),
        (offset::R10, r10),
        (offset::R11, r11),
        (offset::BX, rbx),
        (offset::R12, r12),
        (offset::R13, r13),
        (offset::R14, r14),
        (offset::R15, r15),
    ];
    for (off, reg) in saved {
        a.mov(qword_ptr(rsp + off), reg)?;
    }
    a.mov(rax, qword_ptr(rbp))?;
    a.mov(qword_ptr(rsp + offset::BP), rax)?;
    a.mov(qword_ptr(rsp + offset::FLAGS), ENTRY_FLAGS)?;
    a.lea(rax, qword_ptr(rbp + 8))?;
    a.mov(qword_ptr(rsp + offset::SP), rax)?;
    a.mov(rax, function_address as u64)?;
    a.mov(qword_ptr(rsp + offset::IP), rax)?;
    a.mov(qword_ptr(rsp + offset::CS), USER_CS as i32)?;
    a.mov(qword_ptr(rsp + offset::SS), USER_SS as i32)?;
    a.mov(qword_ptr(rsp + offset::ORIG_AX), -1)?;
    let xmms = [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7];
    for (i, x) in xmms.iter().enumerate() {
        a.movaps(xmmword_ptr(rsp + (XMM_AREA + 16 * i as i32)), *x)?;
    }
    a.mov(rdi, rsp)?;
    a.mov(rsi, site as u64)?;
    a.mov(rax, dispatch as u64)?;
    a.call(rax)?;
    // Nonzero: take the uretprobe path. Nothing below changes the flags.
    a.test(rax, rax)?;
    for (i, x) in xmms.iter().enumerate() {
        a.movaps(*x, xmmword_ptr(rsp + (XMM_AREA + 16 * i as i32)))?;
    }
    for (off, reg) in &saved[..9] {
        a.mov(*reg, qword_ptr(rsp + *off))?;
    }
    a.mov(rsp, rbp)?;
    a.pop(rbp)?;
    Ok(a)
}
