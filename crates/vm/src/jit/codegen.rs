//! Translation of a loaded eBPF program into x86-64 machine code.
//!
//! Owns the register mapping, the native frame layout, and the code emitted
//! for every eBPF instruction. One forward pass emits code and records the
//! native offset of each instruction; forward jumps and local calls are
//! patched afterwards (backward jumps use the short form when it reaches).
//!
//! ## Register mapping (the Linux x86-64 JIT's)
//!
//! | eBPF | r0  | r1  | r2  | r3  | r4  | r5 | r6  | r7  | r8  | r9  | r10 |
//! |------|-----|-----|-----|-----|-----|----|-----|-----|-----|-----|-----|
//! | x86  | rax | rdi | rsi | rdx | rcx | r8 | rbx | r13 | r14 | r15 | rbp |
//!
//! r1..r5 are exactly the System V argument registers, so a helper call is
//! `mov r9, r12` (env, kept in callee-saved `r12` for the whole run) and a
//! call. `r9`, `r10`, `r11` are scratch.
//!
//! ## Entry and native frame
//!
//! Compiled code has the C signature
//! `fn(r1, r2, r3, r4, r5, env, abort: *mut AbortInfo) -> r0`: the first
//! five arguments arrive in the registers that *are* r1..r5. The prologue
//! saves the callee-saved registers and reserves, at `S` (= `rsp` in the
//! prologue), the run state and eight eBPF frames:
//!
//! ```text
//!   [S + 8]    abort-info pointer, written if the run aborts
//!   [S + 16]   tail calls taken so far (u32)
//!   [S + 32 .. S + 80]   r0..r5 saved across a tail call's resolver
//!   frame d: r10 = S + 4288 - 528 d; stack bytes [r10 - 512, r10);
//!            [r10] holds S, so the rare paths (tail call, abort, call
//!            depth check) find the state from any frame
//! ```
//!
//! The body is entered with a native `call`, so every `exit` is a `ret`; a
//! BPF-to-BPF call checks the depth, saves r6..r10 with pushes, moves r10
//! down one frame, stores `S` there and `call`s the callee. Each push group keeps `rsp`
//! 16-byte aligned at helper calls. A tail call jumps to the target's body
//! (at [`TAIL_CALL_ENTRY_OFFSET`]) with the current native and eBPF frames,
//! so the target's `exit` returns where the caller's would have: the
//! interpreter's semantics, also from inside a BPF-to-BPF call.

use crate::insn::*;
use crate::program::{Helpers, TailCallResolver};

use super::copy_loop;
use super::unroll::{self, SimpleLoop};
use super::x86::{self, alu, cc, shift, Asm, Reg, Size};
use super::x86::{R10, R11, R12, R13, R14, R15, R8, R9, RAX, RBP, RBX, RCX, RDI, RDX, RSI};
use super::{JitError, JitOptions};

/// eBPF register → x86 register.
const REG: [Reg; 11] = [RAX, RDI, RSI, RDX, RCX, R8, RBX, R13, R14, R15, RBP];

const STATE_STATUS: i32 = 8;
const STATE_TAIL_COUNT: i32 = 16;
const STATE_SAVED_ARGS: i32 = 32;
const STATE_SIZE: i32 = 80;
/// Distance between the r10 of consecutive eBPF frames: 512 bytes of stack
/// plus 16 bytes holding the state pointer (8) and padding.
pub(super) const FRAME_STRIDE: i32 = STACK_SIZE as i32 + 16;
/// Bytes reserved below the saved registers. A multiple of 16: with six
/// pushes and the return address, `S ≡ 8 (mod 16)`, so inside the body
/// (entered by `call`) `rsp` is 16-byte aligned.
const FRAME_SIZE: i32 = STATE_SIZE + FRAME_STRIDE * MAX_CALL_FRAMES as i32;
const _: () = assert!(FRAME_SIZE % 16 == 0);
/// r10 of frame 0, relative to `S`.
const FRAME0_R10: i32 = FRAME_SIZE - 16;
/// r10 of the deepest frame allowed (`MAX_CALL_FRAMES - 1`), relative to `S`.
const DEEPEST_R10: i32 = FRAME0_R10 - (MAX_CALL_FRAMES as i32 - 1) * FRAME_STRIDE;
const _: () = assert!(DEEPEST_R10 - STACK_SIZE as i32 == STATE_SIZE);

/// Offset from a program's entry to its body, where tail calls enter (every
/// program compiled by this JIT has the same prologue).
pub const TAIL_CALL_ENTRY_OFFSET: usize = 166;

struct Codegen<'a> {
    asm: Asm,
    insns: &'a [Insn],
    helpers: &'a Helpers,
    tail_call_resolver: Option<TailCallResolver>,
    bmi2: bool,
    /// `JitOptions::defer_loop_increments`.
    defer_increments: bool,
    /// Native offset of each instruction slot (+ one past the end).
    offsets: Vec<u32>,
    /// (position of rel32, target slot) for forward jumps and local calls.
    fixups: Vec<(usize, usize)>,
    /// Position of the abort path (set by the prologue).
    abort: usize,
    /// Position of the function entry (set by the prologue).
    function_entry: usize,
    /// (position of a call slot, helper address) for every helper call.
    helper_calls: Vec<(usize, u64)>,
    /// Address and length of the helper table `callx` indexes (u64 function
    /// addresses, 0 = none), owned by the `JitProgram`.
    callx_table: Option<(*const u64, usize)>,
    /// While an unrolled loop with a deferred increment is emitted: the
    /// loop, the register and the increment not yet performed.
    pending: Option<PendingIncrement>,
    /// Jumps leaving such a loop while an increment is pending: (position
    /// of the rel32, target slot, jumping slot, register, increment). Each
    /// gets a stub that performs the increment and then jumps.
    exit_stubs: Vec<ExitStub>,
}

#[derive(Clone, Copy)]
struct PendingIncrement {
    body: SimpleLoop,
    reg: u8,
    delta: i64,
}

#[derive(Clone, Copy)]
struct ExitStub {
    at: usize,
    target: usize,
    pc: usize,
    reg: u8,
    delta: i64,
}

/// `AbortInfo::kind` values.
pub const ABORT_CALL_DEPTH: u64 = 1;
pub const ABORT_UNKNOWN_HELPER: u64 = 2;

/// Written through the entry's 7th argument when a run aborts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AbortInfo {
    /// 0: the run completed; otherwise `ABORT_*`.
    pub kind: u64,
    /// Instruction that aborted.
    pub pc: u64,
    /// Helper id for `ABORT_UNKNOWN_HELPER`.
    pub detail: u64,
}

/// Generate the machine code for `insns` (a program validated by
/// `Program::load`). The code is position independent except for absolute
/// helper addresses.
pub(super) fn generate(
    insns: &[Insn],
    helpers: &Helpers,
    opts: &JitOptions,
    callx_table: Option<&[u64]>,
) -> Result<Generated, JitError> {
    let mut cg = Codegen {
        asm: Asm::with_capacity(256 + insns.len() * 12),
        insns,
        helpers,
        tail_call_resolver: opts.tail_call_resolver,
        bmi2: opts.bmi2,
        defer_increments: opts.defer_loop_increments,
        offsets: vec![0; insns.len() + 1],
        fixups: Vec::new(),
        abort: 0,
        function_entry: 0,
        helper_calls: Vec::new(),
        callx_table: callx_table.map(|t| (t.as_ptr(), t.len())),
        pending: None,
        exit_stubs: Vec::new(),
    };
    let body_call = cg.prologue();
    let body = cg.asm.pos();
    cg.asm.patch_rel32(body_call, body);
    let loop_heads = loop_heads(insns);
    // Built at the first loop head (most programs have none).
    let mut jump_sources = None;
    let mut pc = 0;
    while pc < insns.len() {
        if loop_heads.get(pc).copied().unwrap_or(false) {
            let copy = opts.copy_loops.then(|| copy_loop::recognize(insns, pc));
            if let Some(copy) = copy.flatten() {
                pc = cg.emit_copy_loop(pc, &copy)?;
                continue;
            }
            cg.asm.align_with_nops(LOOP_ALIGN);
            let simple = if opts.unroll_loops {
                let sources = jump_sources.get_or_insert_with(|| unroll::JumpSources::new(insns));
                unroll::recognize(insns, sources, pc)
            } else {
                None
            };
            if let Some(simple) = simple {
                pc = cg.emit_unrolled_loop(&simple)?;
                continue;
            }
        }
        cg.offsets[pc] = cg.asm.pos() as u32;
        pc = cg.emit(pc)?;
    }
    cg.offsets[insns.len()] = cg.asm.pos() as u32;
    for &(at, target) in &cg.fixups {
        let native = cg.offsets[target] as usize;
        cg.asm.patch_rel32(at, native);
    }
    Ok(Generated {
        code: cg.asm.buf,
        offsets: cg.offsets,
        function_entry: cg.function_entry,
        helper_calls: cg.helper_calls,
    })
}

/// Alignment of loop heads (targets of backward jumps): keeps short loops
/// inside as few fetch blocks as possible.
const LOOP_ALIGN: usize = 16;

/// Marks the targets of backward jumps.
fn loop_heads(insns: &[Insn]) -> Vec<bool> {
    let mut heads = vec![false; insns.len()];
    for (pc, insn) in insns.iter().enumerate() {
        if let Some(target) = insn.jump_target(pc) {
            if target >= 0 && (target as usize) <= pc {
                heads[target as usize] = true;
            }
        }
    }
    heads
}

/// Output of [`generate`].
pub(super) struct Generated {
    pub code: Vec<u8>,
    /// Native offset of each instruction slot.
    pub offsets: Vec<u32>,
    /// Offset of the function entry: same signature as the program entry
    /// plus an 8th argument, the native address of the function to run.
    pub function_entry: usize,
    /// (offset of a call slot, helper address) of every helper call, to be
    /// made direct where the final placement allows (`x86::patch_call_slot`).
    pub helper_calls: Vec<(usize, u64)>,
}

impl Codegen<'_> {
    /// Save the callee-saved registers and build the run state; leaves
    /// `rsp` = state, `r12` = env and `rbp` = r10 of frame 0.
    fn frame_setup(&mut self) {
        let a = &mut self.asm;
        for r in [RBP, RBX, R12, R13, R14, R15] {
            a.push(r);
        }
        a.alu_ri(alu::SUB, true, x86::RSP, FRAME_SIZE);
        a.mov_rr(true, R12, R9);
        // 7th argument: above the frame, six pushes and the return address.
        a.load(Size::B8, R11, x86::RSP, FRAME_SIZE + 7 * 8);
        a.store(Size::B8, x86::RSP, STATE_STATUS, R11);
        a.store_imm(Size::B4, x86::RSP, STATE_TAIL_COUNT, 0);
        a.lea(RBP, x86::RSP, FRAME0_R10);
        a.store(Size::B8, RBP, 0, x86::RSP);
    }

    /// Program entry (at offset 0), epilogue, function entry (see
    /// [`Generated::function_entry`]) and the shared abort path. Returns
    /// the position of the rel32 of the `call` into the body.
    fn prologue(&mut self) -> usize {
        self.frame_setup();
        let body_call = self.asm.call_rel32();
        let epilogue = self.asm.pos();
        let a = &mut self.asm;
        a.alu_ri(alu::ADD, true, x86::RSP, FRAME_SIZE);
        for r in [R15, R14, R13, R12, RBX, RBP] {
            a.pop(r);
        }
        a.ret();
        // Function entry: like the program entry, but calls the native
        // address passed as 8th argument.
        self.function_entry = self.asm.pos();
        self.frame_setup();
        let a = &mut self.asm;
        a.load(Size::B8, R11, x86::RSP, FRAME_SIZE + 8 * 8);
        a.call_reg(R11);
        a.jump_back(None, epilogue);
        // Abort: r9 = kind, rax = pc, r10 = detail (see `AbortInfo`).
        self.abort = a.pos();
        a.load(Size::B8, x86::RSP, RBP, 0);
        a.load(Size::B8, R11, x86::RSP, STATE_STATUS);
        a.store(Size::B8, R11, 0, R9);
        a.store(Size::B8, R11, 8, RAX);
        a.store(Size::B8, R11, 16, R10);
        a.alu_rr(alu::XOR, false, RAX, RAX);
        a.jump_back(None, epilogue);
        debug_assert_eq!(a.pos(), TAIL_CALL_ENTRY_OFFSET);
        body_call
    }

    /// A recognized copy loop at `head` (see `copy_loop`): the guarded bulk
    /// copy at the head, then the ordinary translation of the loop, whose
    /// back edge targets its own first instruction. Returns the next slot.
    fn emit_copy_loop(
        &mut self,
        head: usize,
        copy: &copy_loop::CopyLoop,
    ) -> Result<usize, JitError> {
        let fast_path = self.asm.pos() as u32;
        let (to_scalar, past_loop) =
            copy_loop::emit_fast_path(&mut self.asm, copy, |r| REG[r as usize]);
        let end = head + copy_loop::LEN;
        self.fixups.push((past_loop, end));
        self.asm.align_with_nops(LOOP_ALIGN);
        let scalar = self.asm.pos();
        for at in to_scalar {
            self.asm.patch_rel32(at, scalar);
        }
        // The scalar loop; while it is emitted the head is `scalar`, so the
        // back edge (a backward jump, resolved now) returns there.
        let mut pc = head;
        while pc < end {
            self.offsets[pc] = self.asm.pos() as u32;
            pc = self.emit(pc)?;
        }
        // Every other jump to the head (forward ones are patched at the end,
        // backward ones are emitted later) enters the fast path.
        self.offsets[head] = fast_path;
        Ok(end)
    }

    /// A loop recognized by `unroll` (already aligned): `unroll::FACTOR`
    /// copies of its body, see the module documentation there. Returns the
    /// slot after the loop.
    fn emit_unrolled_loop(&mut self, simple: &SimpleLoop) -> Result<usize, JitError> {
        let (head, back_edge) = (simple.head, simple.back_edge);
        let first_head = self.asm.pos();
        let mut first_offsets = Vec::new();
        let increment = if self.defer_increments {
            unroll::deferred_increment(self.insns, simple)
        } else {
            None
        };
        self.pending = increment.map(|inc| PendingIncrement {
            body: *simple,
            reg: inc.reg,
            delta: 0,
        });
        let stubs_before = self.exit_stubs.len();
        for copy in 0..unroll::FACTOR {
            let is_last = copy + 1 == unroll::FACTOR;
            let fixups_before = self.fixups.len();
            // While a copy is emitted, `offsets` of the body are this copy's:
            // backward jumps inside it resolve to it directly.
            let mut pc = head;
            while pc < back_edge {
                self.offsets[pc] = self.asm.pos() as u32;
                match (increment, self.pending.as_mut()) {
                    (Some(inc), Some(p)) if inc.add_pc == pc => {
                        p.delta += inc.imm as i64;
                        if is_last {
                            let total = std::mem::replace(&mut p.delta, 0);
                            // |total| <= FACTOR * 2^20: fits an imm32.
                            self.asm
                                .alu_ri(alu::ADD, true, REG[inc.reg as usize], total as i32);
                        }
                        pc += 1;
                    }
                    _ => pc = self.emit(pc)?,
                }
            }
            self.offsets[back_edge] = self.asm.pos() as u32;
            self.emit_back_edge(back_edge, is_last, first_head)?;
            // Forward jumps inside the body go to this copy's instruction;
            // jumps leaving it stay pending until the end.
            let pending: Vec<_> = self.fixups.drain(fixups_before..).collect();
            for (at, target) in pending {
                if simple.contains(target) {
                    self.asm.patch_rel32(at, self.offsets[target] as usize);
                } else {
                    self.fixups.push((at, target));
                }
            }
            if copy == 0 {
                first_offsets.extend_from_slice(&self.offsets[head..=back_edge]);
            }
        }
        self.pending = None;
        // Exit stubs, out of the way of the fall-through (a conditional
        // back edge falls through to the next slot).
        if self.exit_stubs.len() > stubs_before {
            let over = (self.insns[back_edge].opc & 0xf0 != BPF_JA).then(|| self.asm.jmp_rel32());
            for stub in self.exit_stubs.drain(stubs_before..).collect::<Vec<_>>() {
                let here = self.asm.pos();
                self.asm.patch_rel32(stub.at, here);
                let reg = REG[stub.reg as usize];
                self.asm.alu_ri(alu::ADD, true, reg, stub.delta as i32);
                self.jump(None, stub.pc, stub.target as i64)?;
            }
            if let Some(at) = over {
                self.fixups.push((at, back_edge + 1));
            }
        }
        // Jumps from outside (only to the head) enter the first copy.
        self.offsets[head..=back_edge].copy_from_slice(&first_offsets);
        Ok(back_edge + 1)
    }

    /// The back edge of copy `i` of an unrolled loop: in all but the last
    /// copy it continues into the next copy when taken (fall-through) and
    /// leaves the loop otherwise; in the last copy it jumps to the first
    /// copy's head.
    fn emit_back_edge(
        &mut self,
        pc: usize,
        is_last: bool,
        first_head: usize,
    ) -> Result<(), JitError> {
        let insn = self.insns[pc];
        let cond = if insn.opc & 0xf0 == BPF_JA {
            None
        } else {
            let (dst, src) = self.operands(pc, insn)?;
            Some(self.emit_condition(pc, insn, dst, src)?)
        };
        match (cond, is_last) {
            (None, false) => {}
            // x86 condition codes come in pairs differing in bit 0.
            (Some(c), false) => self.jump(Some(c ^ 1), pc, pc as i64 + 1)?,
            (cond, true) => self.asm.jump_back(cond, first_head),
        }
        Ok(())
    }

    /// Displacement of a load or store based on eBPF register `base`: its
    /// offset plus the increment of `base` still pending, if any.
    fn disp(&self, base: u8, off: i16) -> i32 {
        match self.pending {
            // `unroll::deferred_increment` bounds the increment so that
            // this cannot overflow.
            Some(p) if p.reg == base => (off as i64 + p.delta) as i32,
            _ => off as i32,
        }
    }

    /// x86 registers of `insn`'s destination and source.
    fn operands(&self, pc: usize, insn: Insn) -> Result<(Reg, Reg), JitError> {
        let reg = |r: u8| -> Result<Reg, JitError> {
            REG.get(r as usize).copied().ok_or(JitError::Invalid {
                pc,
                reason: "register above r10",
            })
        };
        Ok((reg(insn.dst)?, reg(insn.src)?))
    }

    /// Jump (conditional when `cond` is set) from the instruction at `pc` to
    /// slot `target`.
    fn jump(&mut self, cond: Option<u8>, pc: usize, target: i64) -> Result<(), JitError> {
        let target = self.check_target(pc, target)?;
        if let Some(p) = self.pending {
            if p.delta != 0 && !p.body.contains(target) {
                // Leaving the loop: perform the pending increment first.
                let at = match cond {
                    Some(c) => self.asm.jcc_rel32(c),
                    None => self.asm.jmp_rel32(),
                };
                self.exit_stubs.push(ExitStub {
                    at,
                    target,
                    pc,
                    reg: p.reg,
                    delta: p.delta,
                });
                return Ok(());
            }
        }
        if target <= pc {
            self.asm.jump_back(cond, self.offsets[target] as usize);
        } else {
            let at = match cond {
                Some(c) => self.asm.jcc_rel32(c),
                None => self.asm.jmp_rel32(),
            };
            self.fixups.push((at, target));
        }
        Ok(())
    }

    fn check_target(&self, pc: usize, target: i64) -> Result<usize, JitError> {
        if target < 0 || target as usize >= self.insns.len() {
            return Err(JitError::Invalid {
                pc,
                reason: "jump or call target outside the program",
            });
        }
        Ok(target as usize)
    }

    /// Emit the instruction at `pc`; returns the next slot.
    fn emit(&mut self, pc: usize) -> Result<usize, JitError> {
        let insn = self.insns[pc];
        let (dst, src) = self.operands(pc, insn)?;
        match insn.class() {
            BPF_ALU | BPF_ALU64 => self.emit_alu(pc, insn, dst, src)?,
            BPF_JMP | BPF_JMP32 => self.emit_jmp(pc, insn, dst, src)?,
            BPF_LDX => {
                let size = mem_size(insn.opc);
                match insn.opc & 0xe0 {
                    BPF_MEM => self.asm.load(size, dst, src, self.disp(insn.src, insn.off)),
                    BPF_MEMSX => self
                        .asm
                        .load_sx(size, dst, src, self.disp(insn.src, insn.off)),
                    _ => return Err(unknown(pc, insn)),
                }
            }
            BPF_ST => {
                if insn.opc & 0xe0 != BPF_MEM {
                    return Err(unknown(pc, insn));
                }
                let disp = self.disp(insn.dst, insn.off);
                self.asm.store_imm(mem_size(insn.opc), dst, disp, insn.imm);
            }
            BPF_STX => match insn.opc & 0xe0 {
                BPF_MEM => {
                    let disp = self.disp(insn.dst, insn.off);
                    self.asm.store(mem_size(insn.opc), dst, disp, src)
                }
                BPF_ATOMIC => self.emit_atomic(pc, insn, dst, src)?,
                _ => return Err(unknown(pc, insn)),
            },
            BPF_LD => {
                if insn.opc != LDDW || insn.src != 0 {
                    return Err(JitError::Unsupported {
                        pc,
                        feature: "BPF_LD other than a resolved lddw",
                    });
                }
                let Some(high) = self.insns.get(pc + 1) else {
                    return Err(JitError::Invalid {
                        pc,
                        reason: "lddw without its second slot",
                    });
                };
                let value = (insn.imm as u32 as u64) | ((high.imm as u32 as u64) << 32);
                self.asm.mov_ri64(dst, value);
                self.offsets[pc + 1] = self.asm.pos() as u32;
                return Ok(pc + 2);
            }
            _ => return Err(unknown(pc, insn)),
        }
        Ok(pc + 1)
    }

    fn emit_alu(&mut self, pc: usize, insn: Insn, dst: Reg, src: Reg) -> Result<(), JitError> {
        let w = insn.class() == BPF_ALU64;
        let by_reg = insn.opc & BPF_X != 0;
        let imm = insn.imm;
        let a = &mut self.asm;
        let op = insn.opc & 0xf0;
        match op {
            BPF_ADD | BPF_SUB | BPF_OR | BPF_AND | BPF_XOR => {
                let x86op = match op {
                    BPF_ADD => alu::ADD,
                    BPF_SUB => alu::SUB,
                    BPF_OR => alu::OR,
                    BPF_AND => alu::AND,
                    _ => alu::XOR,
                };
                if by_reg {
                    if dst == src && (op == BPF_XOR || op == BPF_SUB) {
                        a.alu_rr(alu::XOR, false, dst, dst);
                    } else {
                        a.alu_rr(x86op, w, dst, src);
                    }
                } else if imm == 0 && op != BPF_AND {
                    // x op 0 == x; the 32-bit form still zero-extends.
                    if !w {
                        a.mov_rr(false, dst, dst);
                    }
                } else if w && op == BPF_AND && imm >= 0 {
                    // Upper bits of a non-negative mask are zero either way.
                    a.alu_ri(alu::AND, false, dst, imm);
                } else {
                    a.alu_ri(x86op, w, dst, imm);
                }
            }
            BPF_MOV => {
                if by_reg {
                    match insn.off {
                        0 => {
                            if !(w && dst == src) {
                                a.mov_rr(w, dst, src);
                            }
                        }
                        8 => a.movsx_rr(w, Size::B1, dst, src),
                        16 => a.movsx_rr(w, Size::B2, dst, src),
                        32 if w => a.movsx_rr(true, Size::B4, dst, src),
                        _ => return Err(unknown(pc, insn)),
                    }
                } else if w {
                    a.mov_ri64(dst, imm as i64 as u64);
                } else {
                    a.mov_ri64(dst, imm as u32 as u64);
                }
            }
            BPF_MUL => {
                if by_reg {
                    a.imul_rr(w, dst, src);
                } else {
                    a.imul_ri(w, dst, imm);
                }
            }
            BPF_DIV | BPF_MOD => {
                let signed = match insn.off {
                    0 => false,
                    1 => true,
                    _ => return Err(unknown(pc, insn)),
                };
                let divisor = if by_reg {
                    Operand::Reg(src)
                } else {
                    Operand::Imm(imm)
                };
                self.emit_divmod(w, signed, op == BPF_MOD, dst, divisor);
            }
            BPF_LSH | BPF_RSH | BPF_ARSH => {
                let digit = match op {
                    BPF_LSH => shift::SHL,
                    BPF_RSH => shift::SHR,
                    _ => shift::SAR,
                };
                if by_reg {
                    self.emit_shift_reg(digit, w, dst, src);
                } else {
                    let count = (imm as u32 & if w { 63 } else { 31 }) as u8;
                    if count != 0 {
                        a.shift_ri(digit, w, dst, count);
                    } else if !w {
                        a.mov_rr(false, dst, dst);
                    }
                }
            }
            BPF_NEG => a.neg(w, dst),
            BPF_END => {
                let to_be = w || by_reg; // ALU64 END is the unconditional bswap
                match (to_be, imm) {
                    (false, 16) => a.movzx16_rr(dst, dst),
                    (false, 32) => a.mov_rr(false, dst, dst),
                    (false, 64) => {}
                    (true, 16) => {
                        a.ror16_8(dst);
                        a.movzx16_rr(dst, dst);
                    }
                    (true, 32) => a.bswap(false, dst),
                    (true, 64) => a.bswap(true, dst),
                    _ => {
                        return Err(JitError::Invalid {
                            pc,
                            reason: "byte swap width not 16/32/64",
                        })
                    }
                }
            }
            _ => return Err(unknown(pc, insn)),
        }
        Ok(())
    }

    /// Division and modulo with eBPF's rules: by zero, `div` gives 0 and
    /// `mod` leaves dst (zero-extended for 32 bits); signed `INT_MIN / -1`
    /// gives `INT_MIN` and `% -1` gives 0 (x86 would trap on both).
    fn emit_divmod(&mut self, w: bool, signed: bool, is_mod: bool, dst: Reg, divisor: Operand) {
        let a = &mut self.asm;
        let d = match divisor {
            Operand::Imm(0) => {
                if !is_mod {
                    a.alu_rr(alu::XOR, false, dst, dst);
                } else if !w {
                    a.mov_rr(false, dst, dst);
                }
                return;
            }
            Operand::Imm(-1) if signed => {
                if is_mod {
                    a.alu_rr(alu::XOR, false, dst, dst);
                } else {
                    a.neg(w, dst);
                }
                return;
            }
            Operand::Imm(imm) => {
                if w {
                    a.mov_ri64(R11, imm as i64 as u64);
                } else {
                    a.mov_ri32(R11, imm as u32);
                }
                self.emit_div_core(w, signed, is_mod, dst, R11);
                return;
            }
            Operand::Reg(s) if s == RAX || s == RDX => {
                a.mov_rr(true, R11, s);
                R11
            }
            Operand::Reg(s) => s,
        };
        a.test_rr(w, d, d);
        let to_zero = a.jcc_rel8(cc::E);
        let to_minus_one = if signed {
            a.alu_ri(alu::CMP, w, d, -1);
            Some(self.asm.jcc_rel8(cc::E))
        } else {
            None
        };
        self.emit_div_core(w, signed, is_mod, dst, d);
        let a = &mut self.asm;
        // 64-bit `mod` by zero leaves dst as is: nothing to do, no jump over.
        let zero_block_empty = is_mod && w;
        let mut to_done = Vec::new();
        if !zero_block_empty {
            to_done.push(a.jmp_rel8());
        }
        let zero = a.pos();
        a.patch_rel8(to_zero, zero);
        if !is_mod {
            a.alu_rr(alu::XOR, false, dst, dst);
        } else if !w {
            a.mov_rr(false, dst, dst);
        }
        if let Some(j) = to_minus_one {
            to_done.push(a.jmp_rel8());
            let minus_one = a.pos();
            a.patch_rel8(j, minus_one);
            if is_mod {
                a.alu_rr(alu::XOR, false, dst, dst);
            } else {
                a.neg(w, dst);
            }
        }
        let done = a.pos();
        for j in to_done {
            a.patch_rel8(j, done);
        }
    }

    /// `dst = dst {/,%} d` with the hardware divider; `d` is neither rax nor
    /// rdx, nonzero, and (signed) not -1. Preserves every other eBPF register
    /// (a 32-bit result is already zero-extended by the 32-bit divide).
    fn emit_div_core(&mut self, w: bool, signed: bool, is_mod: bool, dst: Reg, d: Reg) {
        let a = &mut self.asm;
        if dst != RAX {
            a.mov_rr(true, R10, RAX);
        }
        if dst != RDX {
            a.mov_rr(true, R9, RDX);
        }
        if dst != RAX {
            a.mov_rr(w, RAX, dst);
        }
        // 64-bit: when both operands fit in 32 bits (so both are
        // non-negative), the 32-bit unsigned divide gives the same quotient
        // and remainder, signed or not, and is faster ("bypass slow
        // division", as LLVM does for x86). The test leaves edx = 0.
        let mut to_joined = None;
        if w {
            a.mov_rr(true, RDX, RAX);
            a.alu_rr(alu::OR, true, RDX, d);
            a.shift_ri(shift::SHR, true, RDX, 32);
            let to_wide = a.jcc_rel8(cc::NE);
            a.group3(6, false, d);
            to_joined = Some(a.jmp_rel8());
            let wide = a.pos();
            a.patch_rel8(to_wide, wide);
        }
        if signed {
            a.cqo(w);
        } else {
            a.alu_rr(alu::XOR, false, RDX, RDX);
        }
        a.group3(if signed { 7 } else { 6 }, w, d);
        if let Some(j) = to_joined {
            let joined = a.pos();
            a.patch_rel8(j, joined);
        }
        let result = if is_mod { RDX } else { RAX };
        if dst != result {
            a.mov_rr(true, dst, result);
        }
        if dst != RAX {
            a.mov_rr(true, RAX, R10);
        }
        if dst != RDX {
            a.mov_rr(true, RDX, R9);
        }
    }

    /// Shift by a register; x86 masks the count exactly as eBPF does.
    fn emit_shift_reg(&mut self, digit: u8, w: bool, dst: Reg, count: Reg) {
        let a = &mut self.asm;
        if self.bmi2 {
            a.shiftx(digit, w, dst, dst, count);
        } else if count == RCX {
            a.shift_cl(digit, w, dst);
        } else if dst == RCX {
            a.mov_rr(true, R11, RCX);
            a.mov_rr(true, RCX, count);
            a.shift_cl(digit, w, R11);
            a.mov_rr(true, RCX, R11);
        } else {
            a.mov_rr(true, R11, RCX);
            a.mov_rr(true, RCX, count);
            a.shift_cl(digit, w, dst);
            a.mov_rr(true, RCX, R11);
        }
    }

    fn emit_atomic(&mut self, pc: usize, insn: Insn, base: Reg, src: Reg) -> Result<(), JitError> {
        let w = match insn.opc & 0x18 {
            BPF_W => false,
            BPF_DW => true,
            _ => return Err(unknown(pc, insn)),
        };
        let off = insn.off as i32;
        let a = &mut self.asm;
        match insn.imm {
            0x00 => a.lock_alu_mem(alu::ADD, w, base, off, src),
            0x40 => a.lock_alu_mem(alu::OR, w, base, off, src),
            0x50 => a.lock_alu_mem(alu::AND, w, base, off, src),
            0xa0 => a.lock_alu_mem(alu::XOR, w, base, off, src),
            0x01 => a.lock_xadd(w, base, off, src),
            BPF_XCHG => a.xchg_mem(w, base, off, src),
            BPF_CMPXCHG => {
                a.lock_cmpxchg(w, base, off, src);
                if !w {
                    // On success cmpxchg leaves rax untouched; r0 must hold
                    // the zero-extended old value either way.
                    a.mov_rr(false, RAX, RAX);
                }
            }
            0x41 | 0x51 | 0xa1 => {
                let op = match insn.imm {
                    0x41 => alu::OR,
                    0x51 => alu::AND,
                    _ => alu::XOR,
                };
                // r10 keeps r0, so a base or operand that is r0 reads it there.
                let base = if base == RAX { R10 } else { base };
                let operand = if src == RAX { R10 } else { src };
                let size = if w { Size::B8 } else { Size::B4 };
                a.mov_rr(true, R10, RAX);
                a.load(size, RAX, base, off);
                let retry = a.pos();
                a.mov_rr(w, R11, RAX);
                a.alu_rr(op, w, R11, operand);
                a.lock_cmpxchg(w, base, off, R11);
                a.jump_back(Some(cc::NE), retry);
                a.mov_rr(w, src, RAX);
                if src != RAX {
                    a.mov_rr(true, RAX, R10);
                }
            }
            _ => {
                return Err(JitError::Invalid {
                    pc,
                    reason: "unknown atomic operation",
                });
            }
        }
        Ok(())
    }

    fn emit_jmp(&mut self, pc: usize, insn: Insn, dst: Reg, src: Reg) -> Result<(), JitError> {
        let is32 = insn.class() == BPF_JMP32;
        let target = pc as i64 + 1 + insn.off as i64;
        match insn.opc & 0xf0 {
            BPF_JA => {
                let target = if is32 {
                    pc as i64 + 1 + insn.imm as i64
                } else {
                    target
                };
                if target != pc as i64 + 1 {
                    self.jump(None, pc, target)?;
                }
                return Ok(());
            }
            BPF_EXIT if !is32 => {
                self.asm.ret();
                return Ok(());
            }
            BPF_CALL if !is32 => return self.emit_call(pc, insn),
            _ => {}
        }
        let cond = self.emit_condition(pc, insn, dst, src)?;
        self.jump(Some(cond), pc, target)
    }

    /// The compare (or test) of a conditional jump; returns the x86
    /// condition code under which the jump is taken.
    fn emit_condition(
        &mut self,
        pc: usize,
        insn: Insn,
        dst: Reg,
        src: Reg,
    ) -> Result<u8, JitError> {
        let w = insn.class() != BPF_JMP32;
        let by_reg = insn.opc & BPF_X != 0;
        let op = insn.opc & 0xf0;
        let cond = match op {
            BPF_JEQ => cc::E,
            BPF_JNE => cc::NE,
            BPF_JGT => cc::A,
            BPF_JGE => cc::AE,
            BPF_JLT => cc::B,
            BPF_JLE => cc::BE,
            BPF_JSGT => cc::G,
            BPF_JSGE => cc::GE,
            BPF_JSLT => cc::L,
            BPF_JSLE => cc::LE,
            BPF_JSET => cc::NE,
            _ => return Err(unknown(pc, insn)),
        };
        let a = &mut self.asm;
        match (op == BPF_JSET, by_reg) {
            (true, true) => a.test_rr(w, dst, src),
            (true, false) => a.test_ri(w, dst, insn.imm),
            (false, true) => a.alu_rr(alu::CMP, w, dst, src),
            // `test r, r` sets the flags exactly as `cmp r, 0` does.
            (false, false) if insn.imm == 0 => a.test_rr(w, dst, dst),
            (false, false) => a.alu_ri(alu::CMP, w, dst, insn.imm),
        }
        Ok(cond)
    }

    /// Jump to the abort path reporting `kind` at `pc`, with `detail`
    /// taken from a register.
    fn emit_abort(&mut self, kind: u64, pc: usize, detail: Option<Reg>) {
        let a = &mut self.asm;
        if let Some(r) = detail {
            a.mov_rr(true, R10, r);
        }
        a.mov_ri64(R9, kind);
        a.mov_ri64(RAX, pc as u64);
        a.jump_back(None, self.abort);
    }

    /// `callx`: call the helper whose id is in `id_reg`, looked up at run
    /// time in the program's own copy of the helper table; an unknown id
    /// aborts the run (the interpreter's `UnknownHelper`).
    fn emit_callx(&mut self, pc: usize, id_reg: Reg) -> Result<(), JitError> {
        let Some((table, len)) = self.callx_table else {
            return Err(JitError::Invalid {
                pc,
                reason: "callx without a helper table",
            });
        };
        let a = &mut self.asm;
        a.mov_rr(true, R11, id_reg);
        a.alu_ri(alu::CMP, true, R11, HELPER_TAIL_CALL);
        let not_tail = a.jcc_rel32(cc::NE);
        let mut to_done = Vec::new();
        if let Some(resolver) = self.tail_call_resolver {
            self.emit_tail_call(resolver);
        }
        let a = &mut self.asm;
        to_done.push(a.jmp_rel32());
        let here = a.pos();
        a.patch_rel32(not_tail, here);
        a.alu_ri(alu::CMP, true, R11, len.min(i32::MAX as usize) as i32);
        let unknown_big = a.jcc_rel32(cc::AE);
        a.mov_ri64(R10, table as u64);
        a.shift_ri(shift::SHL, true, R11, 3);
        a.alu_rr(alu::ADD, true, R11, R10);
        a.load(Size::B8, R11, R11, 0);
        a.test_rr(true, R11, R11);
        let unknown_missing = a.jcc_rel32(cc::E);
        a.mov_rr(true, R9, R12);
        a.call_reg(R11);
        to_done.push(a.jmp_rel32());
        let unknown = a.pos();
        a.patch_rel32(unknown_big, unknown);
        a.patch_rel32(unknown_missing, unknown);
        self.emit_abort(ABORT_UNKNOWN_HELPER, pc, Some(id_reg));
        let done = self.asm.pos();
        for j in to_done {
            self.asm.patch_rel32(j, done);
        }
        Ok(())
    }

    fn emit_call(&mut self, pc: usize, insn: Insn) -> Result<(), JitError> {
        if insn.opc & BPF_X != 0 {
            let id_reg = REG[(insn.dst as usize).min(10)];
            return self.emit_callx(pc, id_reg);
        }
        match insn.src {
            0 => {
                if insn.imm == HELPER_TAIL_CALL {
                    // Without a resolver every tail call falls through.
                    if let Some(resolver) = self.tail_call_resolver {
                        self.emit_tail_call(resolver);
                    }
                    return Ok(());
                }
                let helper = u32::try_from(insn.imm)
                    .ok()
                    .and_then(|id| self.helpers.get(id))
                    .ok_or(JitError::UnknownHelper {
                        pc,
                        id: insn.imm as i64,
                    })?;
                let a = &mut self.asm;
                a.mov_rr(true, R9, R12);
                let target = helper as usize as u64;
                let at = a.call_slot(target);
                self.helper_calls.push((at, target));
            }
            BPF_PSEUDO_CALL => {
                let target = self.check_target(pc, pc as i64 + 1 + insn.imm as i64)?;
                let a = &mut self.asm;
                // Depth check (tail calls can nest calls deeper than
                // Program::load's static bound): the caller's frame must be
                // above the deepest one. r11 = state, kept for the callee.
                a.load(Size::B8, R11, RBP, 0);
                a.lea(R10, R11, DEEPEST_R10);
                a.alu_rr(alu::CMP, true, RBP, R10);
                let ok = a.jcc_rel8(cc::A);
                self.emit_abort(ABORT_CALL_DEPTH, pc, None);
                let a = &mut self.asm;
                let here = a.pos();
                a.patch_rel8(ok, here);
                // Five pushes + the return address keep rsp 16-byte aligned.
                for r in [RBX, R13, R14, R15, RBP] {
                    a.push(r);
                }
                a.alu_ri(alu::SUB, true, RBP, FRAME_STRIDE);
                a.store(Size::B8, RBP, 0, R11);
                let at = a.call_rel32();
                if target <= pc {
                    let native = self.offsets[target] as usize;
                    self.asm.patch_rel32(at, native);
                } else {
                    self.fixups.push((at, target));
                }
                let a = &mut self.asm;
                for r in [RBP, R15, R14, R13, RBX] {
                    a.pop(r);
                }
            }
            _ => {
                return Err(JitError::Unsupported {
                    pc,
                    feature: "call with this source (kfunc?)",
                })
            }
        }
        Ok(())
    }

    /// `bpf_tail_call(ctx, prog_array, index)`: r2 = prog array, r3 = index.
    /// On success control continues in the target's body with the current
    /// frames and r0..r5 as they were; on failure (no target, target not
    /// JIT-compiled, or 33 tail calls already taken) execution falls through
    /// with r0..r5 unchanged, as in the interpreter.
    fn emit_tail_call(&mut self, resolver: TailCallResolver) {
        let a = &mut self.asm;
        a.load(Size::B8, R11, RBP, 0);
        a.alu_mi8(alu::CMP, false, R11, STATE_TAIL_COUNT, MAX_TAIL_CALLS as i8);
        let over_limit = a.jcc_rel32(cc::AE);
        for (i, r) in [RAX, RDI, RSI, RDX, RCX, R8].into_iter().enumerate() {
            a.store(Size::B8, R11, STATE_SAVED_ARGS + 8 * i as i32, r);
        }
        a.mov_rr(true, RDI, RSI);
        a.mov_rr(true, RSI, RDX);
        a.mov_rr(true, RDX, R12);
        a.mov_ri64(RAX, resolver as usize as u64);
        a.call_reg(RAX);
        a.load(Size::B8, R11, RBP, 0);
        a.test_rr(true, RAX, RAX);
        let mut to_fail = vec![a.jcc_rel8(cc::E)];
        let entry_field = std::mem::offset_of!(crate::program::TailTarget, jit_entry) as i32;
        a.load(Size::B8, R10, RAX, entry_field);
        a.test_rr(true, R10, R10);
        to_fail.push(a.jcc_rel8(cc::E));
        a.alu_mi8(alu::ADD, false, R11, STATE_TAIL_COUNT, 1);
        a.alu_ri(alu::ADD, true, R10, TAIL_CALL_ENTRY_OFFSET as i32);
        let to_jump = a.jmp_rel8();
        let fail = a.pos();
        for j in to_fail {
            a.patch_rel8(j, fail);
        }
        // Failure: restore and fall through (r10 = 0 marks "no jump").
        a.alu_rr(alu::XOR, false, R10, R10);
        let restore = a.pos();
        a.patch_rel8(to_jump, restore);
        for (i, r) in [RAX, RDI, RSI, RDX, RCX, R8].into_iter().enumerate() {
            a.load(Size::B8, r, R11, STATE_SAVED_ARGS + 8 * i as i32);
        }
        a.test_rr(true, R10, R10);
        let no_jump = a.jcc_rel8(cc::E);
        a.jmp_reg(R10);
        let done = a.pos();
        a.patch_rel8(no_jump, done);
        a.patch_rel32(over_limit, done);
    }
}

#[derive(Clone, Copy)]
enum Operand {
    Reg(Reg),
    Imm(i32),
}

fn mem_size(opc: u8) -> Size {
    match opc & 0x18 {
        BPF_B => Size::B1,
        BPF_H => Size::B2,
        BPF_W => Size::B4,
        _ => Size::B8,
    }
}

fn unknown(pc: usize, insn: Insn) -> JitError {
    JitError::Invalid {
        pc,
        reason: match insn.class() {
            BPF_LDX | BPF_ST | BPF_STX => "unknown load/store mode",
            BPF_ALU | BPF_ALU64 => "unknown ALU operation or offset",
            BPF_JMP | BPF_JMP32 => "unknown jump operation",
            _ => "unknown instruction",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prologue_length_matches_tail_call_entry_offset() {
        let mut cg = Codegen {
            asm: Asm::with_capacity(128),
            insns: &[],
            helpers: &Helpers::new(),
            tail_call_resolver: None,
            bmi2: false,
            defer_increments: false,
            offsets: vec![0],
            fixups: Vec::new(),
            abort: 0,
            function_entry: 0,
            helper_calls: Vec::new(),
            callx_table: None,
            pending: None,
            exit_stubs: Vec::new(),
        };
        cg.prologue();
        assert_eq!(cg.asm.pos(), TAIL_CALL_ENTRY_OFFSET);
    }
}
