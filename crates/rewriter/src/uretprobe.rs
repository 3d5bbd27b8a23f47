//! uretprobes: return-address hijack with a per-thread shadow stack.
//!
//! At a probed function's entry (inside the dispatcher, so in probe context)
//! the return address at `[sp]` is pushed on the thread's shadow stack with
//! the address of its stack slot, and replaced by `return_trampoline`. When
//! the function returns there (rsp = the slot + 8), the trampoline saves
//! the registers into a
//! `pt_regs` (`ax` = return value, `ip` = real return address, `sp` = the
//! stack pointer after the return, as the kernel reports them), finds the
//! entry whose slot is just below the current sp, drops entries above it
//! (frames abandoned by `longjmp`), runs the site's return handlers and
//! jumps to the real address through `r11` (dead at a return: caller-saved
//! and not a return register; `rax`, `rdx`, `xmm0`, `xmm1` are restored).
//!
//! That is the breakpoint sites' way. Trampoline sites keep the CPU's
//! return-stack buffer balanced instead: the dispatcher only pushes the
//! shadow entry, and the entry trampoline drops the return address and
//! `call`s the function, so the return-address slot holds the site's
//! continuation (which jumps to `balanced_return_trampoline`); see
//! `trampoline.rs`. Both kinds of slot value are recognised below.
//!
//! C++ exceptions (and thread cancellation, `backtrace`) walk the stack with
//! the DWARF unwinder, which cannot find CFI for the trampoline. Internal
//! uprobes on the unwinder's entry points (`_Unwind_RaiseException`,
//! `_Unwind_Resume`, `_Unwind_Resume_or_Rethrow`, `_Unwind_ForcedUnwind`,
//! `_Unwind_Backtrace`) of every loaded copy of the unwinder put the real
//! return addresses back before the walk starts; those frames' uretprobes
//! are then not reported (counted in `uretprobes_lost_to_unwinding`).

use crate::error::Result;
use crate::probes::{HandlerList, Kind, Registry, ReturnHijack, Site};
use crate::regs::{offset, PtRegs, USER_CS, USER_SS};
use crate::thread_state::{current_slot, InProbe, ShadowEntry, ThreadSlot};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) static LOST_TO_UNWINDING: AtomicU64 = AtomicU64::new(0);

const UNWINDER_ENTRY_POINTS: [&str; 5] = [
    "_Unwind_RaiseException",
    "_Unwind_Resume",
    "_Unwind_Resume_or_Rethrow",
    "_Unwind_ForcedUnwind",
    "_Unwind_Backtrace",
];

/// Called at entry (in probe context) when the site has return handlers.
/// Pushes the shadow-stack entry and, for `InPlace`, overwrites the return
/// address; for `ByCall` the entry trampoline replaces it with its `call`.
/// Returns whether the return was hijacked.
pub(crate) fn hijack_return(slot: &ThreadSlot, site: &'static Site, regs: &PtRegs, how: ReturnHijack) -> bool {
    let slot_address = regs.sp as usize;
    // SAFETY: at a function entry sp points at the return address, in the
    // running thread's stack.
    let return_address = unsafe { *(slot_address as *const usize) };
    if is_hijacked(slot, slot_address, return_address) {
        return false; // already hijacked (a tail call into the same frame)
    }
    if !slot.push_return(ShadowEntry { slot_address, return_address, site }) {
        return false;
    }
    if how == ReturnHijack::InPlace {
        // SAFETY: as above; the slot is the probed frame's own.
        unsafe { *(slot_address as *mut usize) = return_trampoline as *const () as usize };
    }
    true
}

/// Whether the return-address slot at `slot_address`, holding `value`, is
/// one we hijacked (in place, or by a trampoline's `call`).
fn is_hijacked(slot: &ThreadSlot, slot_address: usize, value: usize) -> bool {
    value == return_trampoline as *const () as usize
        || slot.entry_at(slot_address).is_some_and(|entry| {
            // SAFETY: sites are never freed.
            let continuation = unsafe { &*entry.site }.return_continuation();
            continuation != 0 && value == continuation
        })
}

/// Called by `return_trampoline`; returns the real return address.
extern "C" fn on_return(regs: *mut PtRegs) -> usize {
    // SAFETY: the trampoline passes its own pt_regs frame.
    let regs = unsafe { &mut *regs };
    let in_probe = InProbe::enter();
    let slot_address = regs.sp as usize - 8;
    let entry = current_slot().and_then(|slot| slot.pop_return(slot_address));
    let Some(entry) = entry else {
        fatal(b"userbpf rewriter: a hijacked return has no shadow-stack entry (stack switched by a coroutine library?)\n");
    };
    regs.ip = entry.return_address as u64;
    if in_probe.is_some() {
        // SAFETY: sites are never freed; we are in probe context.
        let site = unsafe { &*entry.site };
        HandlerList::run(&site.handlers().on_return, regs);
    }
    drop(in_probe);
    entry.return_address
}

fn fatal(message: &[u8]) -> ! {
    // SAFETY: write(2) to stderr then abort: async-signal-safe.
    unsafe {
        libc::write(2, message.as_ptr() as *const c_void, message.len());
        libc::abort();
    }
}

/// Defines a return trampoline: saves the registers in a `pt_regs`, calls
/// `on_return`, restores the return registers (and the argument registers,
/// in case the function does not follow the ABI), and leaves to the real
/// return address (in `r11`) through the given instructions.
macro_rules! return_trampoline {
    ($(#[$attr:meta])* $name:ident, $($leave:literal),+ $(,)?) => {
$(#[$attr])*
#[unsafe(naked)]
pub(crate) extern "C" fn $name() {
    core::arch::naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "and rsp, -16",
        "sub rsp, {frame}",
        "mov [rsp + {ax}], rax",
        "mov [rsp + {cx}], rcx",
        "mov [rsp + {dx}], rdx",
        "mov [rsp + {si}], rsi",
        "mov [rsp + {di}], rdi",
        "mov [rsp + {r8}], r8",
        "mov [rsp + {r9}], r9",
        "mov [rsp + {r10}], r10",
        "mov [rsp + {r11}], r11",
        "mov [rsp + {bx}], rbx",
        "mov [rsp + {r12}], r12",
        "mov [rsp + {r13}], r13",
        "mov [rsp + {r14}], r14",
        "mov [rsp + {r15}], r15",
        "mov rax, [rbp]",
        "mov [rsp + {bp}], rax",
        "lea rax, [rbp + 8]",
        "mov [rsp + {sp}], rax",
        // Status flags are dead at a return (not preserved across calls).
        "mov qword ptr [rsp + {flags}], 0x202",
        "mov qword ptr [rsp + {cs}], {user_cs}",
        "mov qword ptr [rsp + {ss}], {user_ss}",
        "mov qword ptr [rsp + {orig_ax}], -1",
        "movaps [rsp + {xmm}], xmm0",
        "movaps [rsp + {xmm} + 16], xmm1",
        "mov rdi, rsp",
        "call {on_return}",
        "mov r11, rax",
        "movaps xmm0, [rsp + {xmm}]",
        "movaps xmm1, [rsp + {xmm} + 16]",
        "mov rax, [rsp + {ax}]",
        "mov rcx, [rsp + {cx}]",
        "mov rdx, [rsp + {dx}]",
        "mov rsi, [rsp + {si}]",
        "mov rdi, [rsp + {di}]",
        "mov r8, [rsp + {r8}]",
        "mov r9, [rsp + {r9}]",
        "mov r10, [rsp + {r10}]",
        "mov rsp, rbp",
        "pop rbp",
        $($leave),+,
        frame = const 208,
        xmm = const 176,
        ax = const offset::AX,
        cx = const offset::CX,
        dx = const offset::DX,
        si = const offset::SI,
        di = const offset::DI,
        r8 = const offset::R8,
        r9 = const offset::R9,
        r10 = const offset::R10,
        r11 = const offset::R11,
        bx = const offset::BX,
        r12 = const offset::R12,
        r13 = const offset::R13,
        r14 = const offset::R14,
        r15 = const offset::R15,
        bp = const offset::BP,
        sp = const offset::SP,
        flags = const offset::FLAGS,
        cs = const offset::CS,
        ss = const offset::SS,
        orig_ax = const offset::ORIG_AX,
        user_cs = const USER_CS,
        user_ss = const USER_SS,
        on_return = sym on_return,
    );
}
    };
}

return_trampoline!(
    /// Where functions hijacked in place (breakpoint sites) return to.
    /// Leaves with an indirect jump, not `ret`: the probed function's `ret`
    /// already consumed the return-stack-buffer entry of its call, so
    /// jumping keeps the predictor aligned for the caller's own returns.
    return_trampoline,
    "jmp r11",
);

return_trampoline!(
    /// Where the continuation of a trampoline site's `call` path jumps.
    /// Leaves with `push; ret`: the function's `ret` consumed the entry of
    /// the trampoline's `call`, so this `ret` consumes the caller's own
    /// entry, which is exactly the real return address (predicted).
    balanced_return_trampoline,
    "push r11",
    "ret",
);

/// Internal handler on the unwinder's entry points: put back every real
/// return address of this thread's hijacked frames that are still live
/// (above the unwinder's own frame and still holding the trampoline).
unsafe extern "C" fn restore_hijacked_returns(regs: *mut PtRegs, _data: *mut c_void) {
    // SAFETY: regs is the dispatcher's valid pt_regs.
    let sp = unsafe { (*regs).sp } as usize;
    let Some(slot) = current_slot() else { return };
    let in_place = return_trampoline as *const () as usize;
    slot.retain_returns(|entry| {
        if entry.slot_address <= sp {
            return false; // a frame below the unwinder's: abandoned by longjmp
        }
        // SAFETY: sites are never freed.
        let continuation = unsafe { &*entry.site }.return_continuation();
        let slot_ptr = entry.slot_address as *mut usize;
        // SAFETY: the slot is above sp in this thread's stack, i.e. inside a
        // live frame; we only write it if it still holds one of our return
        // addresses, which only a live hijacked frame's return-address slot
        // does (the newest entry for a slot is handled first).
        unsafe {
            let value = *slot_ptr;
            if value == in_place || (continuation != 0 && value == continuation) {
                *slot_ptr = entry.return_address;
                LOST_TO_UNWINDING.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        // Not (or not yet) holding our address: a frame abandoned by
        // `longjmp` (dropped later, when a shallower frame returns), or a
        // trampoline interrupted between its dispatcher and its `call`
        // (a signal handler calling `backtrace`), whose return still needs
        // the entry.
        true
    });
}

/// Attaches the unwinder hooks in every loaded object that defines one of
/// the unwinder's entry points (idempotent; objects loaded later are hooked
/// at the next uretprobe attach).
pub(crate) fn ensure_unwinder_hooks(registry: &mut Registry) -> Result<()> {
    let maps = crate::maps::read_self_maps()?;
    for mapping in maps.iter().filter(|m| m.executable && m.is_file()) {
        let Some(symbols) = registry.symbols_of(mapping) else { continue };
        for symbol in symbols.iter().filter(|s| UNWINDER_ENTRY_POINTS.contains(&s.name.as_str())) {
            let end = mapping.offset + (mapping.end - mapping.start) as u64;
            if symbol.file_offset < mapping.offset || symbol.file_offset >= end {
                continue;
            }
            let address = mapping.start + (symbol.file_offset - mapping.offset) as usize;
            if registry.unwinder_hooks.contains_key(&address) {
                continue;
            }
            let id = registry.attach(address, Kind::Entry, restore_hijacked_returns, std::ptr::null_mut())?;
            registry.unwinder_hooks.insert(address, id);
        }
    }
    Ok(())
}
