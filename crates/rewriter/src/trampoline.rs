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
//!   rdi = &pt_regs; rsi = site; call dispatch_entry
//!   restore xmm0-7, rax, rcx, rdx, rsi, rdi, r8-r11 (argument and scratch
//!   registers; callee-saved ones were preserved by the call)
//!   mov rsp, rbp; pop rbp
//! original_copy:
//!   <displaced prologue instructions, relocated>
//!   jmp function + displaced length
//! ```
//!
//! `original_copy` doubles as the bypass used while a site is being
//! unpatched and as the landing place of threads moved out of the interior
//! of the prologue while it is being patched.

use crate::regs::{offset, USER_CS, USER_SS};
use crate::relocate::{self, Displaced};
use iced_x86::code_asm::*;

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
}

/// Generates the trampoline placed at `page` for the function at
/// `function_address`, whose displaced instructions are `displaced`.
pub(crate) fn build_entry(
    page: usize,
    function_address: usize,
    site: usize,
    dispatch: usize,
    displaced: &Displaced,
) -> Result<EntryTrampoline, String> {
    let mut stub = entry_stub(function_address, site, dispatch).map_err(|e| format!("assembling the trampoline: {e}"))?;
    let stub = stub.assemble(page as u64).map_err(|e| format!("assembling the trampoline: {e}"))?;
    let original_copy = page + stub.len();
    let relocated = relocate::relocate(displaced, original_copy)?;
    let mut code = stub;
    code.extend_from_slice(&relocated.code);
    Ok(EntryTrampoline { code, original_copy, boundaries: relocated.boundaries })
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
