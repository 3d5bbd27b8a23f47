//! The probe context handed to every handler: `struct pt_regs` with exactly
//! the kernel's x86-64 layout, so programs compiled for kernel uprobes
//! (bpftrace's `arg0` = `di`, `retval` = `ax`, …) read the same offsets here.

/// Kernel x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h), 168 bytes.
///
/// At a uprobe, `ip` is the probed function's address and `sp` the stack
/// pointer at function entry (pointing at the return address), as the kernel
/// reports them. At a uretprobe, `ip` is the address the function returns to
/// and `sp` the stack pointer after the return, `ax` the return value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    /// `-1` (all ones) outside system calls, as in the kernel.
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
}

/// Byte offsets of the fields, used by the trampoline code generator.
pub(crate) mod offset {
    pub const R15: i32 = 0;
    pub const R14: i32 = 8;
    pub const R13: i32 = 16;
    pub const R12: i32 = 24;
    pub const BP: i32 = 32;
    pub const BX: i32 = 40;
    pub const R11: i32 = 48;
    pub const R10: i32 = 56;
    pub const R9: i32 = 64;
    pub const R8: i32 = 72;
    pub const AX: i32 = 80;
    pub const CX: i32 = 88;
    pub const DX: i32 = 96;
    pub const SI: i32 = 104;
    pub const DI: i32 = 112;
    pub const ORIG_AX: i32 = 120;
    pub const IP: i32 = 128;
    pub const CS: i32 = 136;
    pub const FLAGS: i32 = 144;
    pub const SP: i32 = 152;
    pub const SS: i32 = 160;
    pub const SIZE: i32 = 168;
}

/// User code segment selector on x86-64 Linux (`__USER_CS`).
pub(crate) const USER_CS: u64 = 0x33;
/// User stack segment selector on x86-64 Linux (`__USER_DS`).
pub(crate) const USER_SS: u64 = 0x2b;

// The layout is part of the ABI with eBPF programs: check it at compile time.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<PtRegs>() == offset::SIZE as usize);
    assert!(offset_of!(PtRegs, r15) == offset::R15 as usize);
    assert!(offset_of!(PtRegs, r14) == offset::R14 as usize);
    assert!(offset_of!(PtRegs, r13) == offset::R13 as usize);
    assert!(offset_of!(PtRegs, r12) == offset::R12 as usize);
    assert!(offset_of!(PtRegs, bp) == offset::BP as usize);
    assert!(offset_of!(PtRegs, bx) == offset::BX as usize);
    assert!(offset_of!(PtRegs, r11) == offset::R11 as usize);
    assert!(offset_of!(PtRegs, r10) == offset::R10 as usize);
    assert!(offset_of!(PtRegs, r9) == offset::R9 as usize);
    assert!(offset_of!(PtRegs, r8) == offset::R8 as usize);
    assert!(offset_of!(PtRegs, ax) == offset::AX as usize);
    assert!(offset_of!(PtRegs, cx) == offset::CX as usize);
    assert!(offset_of!(PtRegs, dx) == offset::DX as usize);
    assert!(offset_of!(PtRegs, si) == offset::SI as usize);
    assert!(offset_of!(PtRegs, di) == offset::DI as usize);
    assert!(offset_of!(PtRegs, orig_ax) == offset::ORIG_AX as usize);
    assert!(offset_of!(PtRegs, ip) == offset::IP as usize);
    assert!(offset_of!(PtRegs, cs) == offset::CS as usize);
    assert!(offset_of!(PtRegs, flags) == offset::FLAGS as usize);
    assert!(offset_of!(PtRegs, sp) == offset::SP as usize);
    assert!(offset_of!(PtRegs, ss) == offset::SS as usize);
};
