//! Differential testing of the JIT against the interpreter (the oracle).
//!
//! A seeded generator builds random *valid* programs that exercise every ALU,
//! jump, load/store and atomic operation, helper calls and BPF-to-BPF calls
//! (with r6..r9 preservation and per-frame stacks), `callx`, forward jumps
//! and bounded loops. Memory accesses stay inside a 384-byte buffer (r1) and the
//! initialized part of each function's stack frame. A pointer reaches a data
//! register only as a borrowed base (copied from r1 or r10 for exactly one
//! access, then overwritten) and is never stored or computed with, so
//! results do not depend on addresses.
//!
//! Each program runs in the interpreter (checked mode, instruction budget)
//! and in the JIT; r0, the whole buffer (whose tail receives a dump of the
//! main stack frame) and the helper's accumulated arguments must agree.
//!
//! `USERBPF_DIFF_CASES` (default 10000) and `USERBPF_DIFF_SEED` (default
//! fixed) select more or other cases; a failure prints the seed, case and
//! the program's listing.

use std::ffi::c_void;

use vm::insn::*;
use vm::interp::{self, MemoryRegion, RunOptions};
use vm::jit::{JitOptions, JitProgram};
use vm::program::{Helpers, Program};

const DEFAULT_CASES: u64 = 10_000;
const DEFAULT_SEED: u64 = 0x0005_eed0_fb9f_d1ff;

/// Data region of the buffer the programs read and write (r1 + 0..).
const DATA_LEN: i16 = 256;
/// Where the main function dumps its stack frame at the end.
const DUMP_OFFSET: i16 = 256;
/// Initialized stack bytes per frame: [r10 - 128, r10 - 16).
const STACK_LOW: i16 = -128;
const STACK_HIGH: i16 = -16;
/// Slot holding the frame's copy of r1 (the buffer pointer).
const CTX_SLOT: i16 = -8;
const BUF_LEN: usize = 384;

/// Registers the generated code computes with (never r1 = buffer, r10).
const DATA_REGS: [u8; 9] = [0, 2, 3, 4, 5, 6, 7, 8, 9];
const LOOP_COUNTER: u8 = 9;
const MIX_HELPER: i32 = 1;

// ---- deterministic randomness ----------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn imm(&mut self) -> i32 {
        const EDGES: [i32; 14] = [
            0,
            1,
            -1,
            2,
            7,
            31,
            32,
            63,
            64,
            255,
            0x7fff,
            0x8000,
            i32::MIN,
            i32::MAX,
        ];
        if self.chance(50) {
            self.pick(&EDGES)
        } else if self.chance(50) {
            self.below(200) as i32 - 100
        } else {
            self.next() as i32
        }
    }
    fn value(&mut self) -> u64 {
        const EDGES: [u64; 8] = [
            0,
            1,
            u64::MAX,
            i64::MIN as u64,
            i64::MAX as u64,
            u32::MAX as u64,
            0x8000_0000,
            0xffff_ffff_8000_0000,
        ];
        match self.below(4) {
            0 => self.pick(&EDGES),
            1 => self.below(1000),
            2 => self.imm() as i64 as u64,
            _ => self.next(),
        }
    }
    fn data_reg(&mut self) -> u8 {
        self.pick(&DATA_REGS)
    }
}

// ---- program construction --------------------------------------------------

/// A generated instruction (or lddw pair) with its jump resolved by item
/// index, so targets never fall inside an lddw.
struct Item {
    insns: Vec<Insn>,
    /// Jump or local-call target as an item index (absolute).
    target: Option<Target>,
    /// Inside a loop body or a borrowed-base sequence: jumping here from
    /// outside would skip its set-up.
    not_a_target: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Item(usize),
    /// Entry of generated function `n`.
    Function(usize),
}

fn item(insn: Insn) -> Item {
    Item {
        insns: vec![insn],
        target: None,
        not_a_target: false,
    }
}

fn lddw(dst: u8, value: u64) -> Item {
    Item {
        insns: vec![
            Insn::new(LDDW, dst, 0, 0, value as u32 as i32),
            Insn::new(0, 0, 0, 0, (value >> 32) as u32 as i32),
        ],
        target: None,
        not_a_target: false,
    }
}

struct Gen<'r> {
    rng: &'r mut Rng,
    items: Vec<Item>,
    /// Item index where each function starts.
    function_starts: Vec<usize>,
    functions: usize,
}

impl Gen<'_> {
    fn push(&mut self, it: Item) {
        self.items.push(it);
    }

    fn function(&mut self, index: usize, body_len: usize) {
        self.function_starts.push(self.items.len());
        self.push(item(Insn::new(
            BPF_STX | BPF_MEM | BPF_DW,
            10,
            1,
            CTX_SLOT,
            0,
        )));
        for &r in &DATA_REGS {
            if index == 0 || r >= 6 || self.rng.chance(30) {
                let v = self.rng.value();
                self.push(lddw(r, v));
            }
        }
        let mut off = STACK_LOW;
        while off < STACK_HIGH {
            let imm = self.rng.imm();
            self.push(item(Insn::new(BPF_ST | BPF_MEM | BPF_DW, 10, 0, off, imm)));
            off += 8;
        }
        let body_start = self.items.len();
        // Jumps are resolved to items in [i + 1, end]; `end` is the
        // function's epilogue, created after the body.
        let mut pending_jumps: Vec<usize> = Vec::new();
        while self.items.len() - body_start < body_len {
            match self.rng.below(100) {
                0..=44 => self.alu(),
                45..=59 => self.memory(),
                60..=66 => self.atomic(),
                67..=79 => {
                    pending_jumps.push(self.items.len());
                    self.jump();
                }
                80..=84 => self.helper_call(),
                85..=89 if index + 1 < self.functions => self.local_call(index + 1),
                90..=93 => self.bounded_loop(),
                _ => self.alu(),
            }
        }
        let end = self.items.len();
        for j in pending_jumps {
            // A target after the jump, outside every loop body.
            let candidates: Vec<usize> = (j + 1..=end)
                .filter(|&t| t == end || !self.items[t].not_a_target)
                .collect();
            let t = self.rng.pick(&candidates);
            self.items[j].target = Some(Target::Item(t));
        }
        if index == 0 {
            self.main_epilogue();
        } else {
            self.push(item(Insn::new(EXIT, 0, 0, 0, 0)));
        }
    }

    fn main_epilogue(&mut self) {
        // Fold every data register into r0 ...
        for &r in &DATA_REGS[1..] {
            self.push(item(Insn::new(BPF_ALU64 | BPF_MUL | BPF_K, 0, 0, 0, 31)));
            self.push(item(Insn::new(BPF_ALU64 | BPF_ADD | BPF_X, 0, r, 0, 0)));
        }
        // ... and dump the initialized stack into the buffer.
        let mut off = STACK_LOW;
        let mut dump = DUMP_OFFSET;
        while off < STACK_HIGH {
            self.push(item(Insn::new(BPF_LDX | BPF_MEM | BPF_DW, 2, 10, off, 0)));
            self.push(item(Insn::new(BPF_STX | BPF_MEM | BPF_DW, 1, 2, dump, 0)));
            off += 8;
            dump += 8;
        }
        self.push(item(Insn::new(EXIT, 0, 0, 0, 0)));
    }

    /// One random ALU instruction writing `dst` (never r1/r10).
    fn alu_insn(&mut self, dst: u8) -> Insn {
        let class = if self.rng.chance(50) {
            BPF_ALU64
        } else {
            BPF_ALU
        };
        let src = self.rng.data_reg();
        let by_reg = self.rng.chance(50);
        let source = if by_reg { BPF_X } else { BPF_K };
        let imm = if by_reg { 0 } else { self.rng.imm() };
        let src_field = if by_reg { src } else { 0 };
        let op = self.rng.pick(&[
            BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_NEG,
            BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH, BPF_END,
        ]);
        match op {
            BPF_NEG => Insn::new(class | BPF_NEG, dst, 0, 0, 0),
            BPF_END => {
                let width = self.rng.pick(&[16, 32, 64]);
                if class == BPF_ALU64 {
                    Insn::new(BPF_ALU64 | BPF_END | BPF_TO_LE, dst, 0, 0, width)
                } else {
                    let order = if self.rng.chance(50) {
                        BPF_TO_BE
                    } else {
                        BPF_TO_LE
                    };
                    Insn::new(BPF_ALU | BPF_END | order, dst, 0, 0, width)
                }
            }
            BPF_DIV | BPF_MOD => {
                let signed = self.rng.chance(50) as i16;
                Insn::new(class | op | source, dst, src_field, signed, imm)
            }
            BPF_MOV if by_reg && self.rng.chance(40) => {
                let widths: &[i16] = if class == BPF_ALU64 {
                    &[8, 16, 32]
                } else {
                    &[8, 16]
                };
                let off = self.rng.pick(widths);
                Insn::new(class | BPF_MOV | BPF_X, dst, src, off, 0)
            }
            _ => Insn::new(class | op | source, dst, src_field, 0, imm),
        }
    }

    fn alu(&mut self) {
        let dst = self.rng.data_reg();
        let insn = self.alu_insn(dst);
        self.push(item(insn));
    }

    /// A random in-bounds `(base, offset)` for an access of `size` bytes,
    /// aligned to `align`.
    fn address(&mut self, size: i16, align: i16) -> (u8, i16) {
        if self.rng.chance(50) {
            let slots = (DATA_LEN - size) / align + 1;
            (1, self.rng.below(slots as u64) as i16 * align)
        } else {
            let slots = (STACK_HIGH - STACK_LOW - size) / align + 1;
            (10, STACK_LOW + self.rng.below(slots as u64) as i16 * align)
        }
    }

    /// With some probability, copy the access's base pointer into a data
    /// register first (so every register is exercised as a base, r0 = rax
    /// included, which the atomics treat specially). Returns the base to use
    /// and whether it was borrowed; a borrowed base must be cleared with
    /// [`Gen::release_base`] right after the access.
    fn maybe_borrow_base(&mut self, base: u8) -> (u8, bool) {
        if !self.rng.chance(40) {
            return (base, false);
        }
        let temp = self.rng.data_reg();
        self.push(item(Insn::new(
            BPF_ALU64 | BPF_MOV | BPF_X,
            temp,
            base,
            0,
            0,
        )));
        (temp, true)
    }

    fn release_base(&mut self, temp: u8) {
        let imm = self.rng.imm();
        let mut clear = item(Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, temp, 0, 0, imm));
        clear.not_a_target = true;
        self.push(clear);
    }

    /// A data register other than `avoid` (a borrowed base must never be
    /// stored or used as an operand: its value is an address).
    fn data_reg_except(&mut self, avoid: Option<u8>) -> u8 {
        loop {
            let r = self.rng.data_reg();
            if Some(r) != avoid {
                return r;
            }
        }
    }

    /// Push the access; when its base was borrowed, protect it from being a
    /// jump target and clear the base afterwards.
    fn push_access(&mut self, insn: Insn, borrowed: Option<u8>) {
        let mut access = item(insn);
        access.not_a_target = borrowed.is_some();
        self.push(access);
        if let Some(temp) = borrowed {
            self.release_base(temp);
        }
    }

    fn memory(&mut self) {
        let (size_code, size) = self
            .rng
            .pick(&[(BPF_B, 1), (BPF_H, 2), (BPF_W, 4), (BPF_DW, 8)]);
        let (base, off) = self.address(size, 1);
        let (base, borrowed) = self.maybe_borrow_base(base);
        let avoid = borrowed.then_some(base);
        let insn = match self.rng.below(4) {
            0 if size_code != BPF_DW => Insn::new(
                BPF_LDX | BPF_MEMSX | size_code,
                self.rng.data_reg(),
                base,
                off,
                0,
            ),
            0 | 1 => Insn::new(
                BPF_LDX | BPF_MEM | size_code,
                self.rng.data_reg(),
                base,
                off,
                0,
            ),
            2 => Insn::new(BPF_ST | BPF_MEM | size_code, base, 0, off, self.rng.imm()),
            _ => Insn::new(
                BPF_STX | BPF_MEM | size_code,
                base,
                self.data_reg_except(avoid),
                off,
                0,
            ),
        };
        self.push_access(insn, avoid);
    }

    fn atomic(&mut self) {
        let (size_code, size) = self.rng.pick(&[(BPF_W, 4), (BPF_DW, 8)]);
        let (base, off) = self.address(size, size);
        let (base, borrowed) = self.maybe_borrow_base(base);
        let avoid = borrowed.then_some(base);
        let op = self.rng.pick(&[
            0x00,
            0x01,
            0x40,
            0x41,
            0x50,
            0x51,
            0xa0,
            0xa1,
            BPF_XCHG,
            BPF_CMPXCHG,
        ]);
        let src = self.data_reg_except(avoid);
        let insn = Insn::new(BPF_STX | BPF_ATOMIC | size_code, base, src, off, op);
        self.push_access(insn, avoid);
    }

    fn jump(&mut self) {
        let is32 = self.rng.chance(40);
        let class = if is32 { BPF_JMP32 } else { BPF_JMP };
        let op = self.rng.pick(&[
            BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT,
            BPF_JLE, BPF_JSLT, BPF_JSLE,
        ]);
        let insn = if op == BPF_JA {
            Insn::new(class | BPF_JA, 0, 0, 0, 0)
        } else if self.rng.chance(50) {
            Insn::new(
                class | op | BPF_X,
                self.rng.data_reg(),
                self.rng.data_reg(),
                0,
                0,
            )
        } else {
            Insn::new(
                class | op | BPF_K,
                self.rng.data_reg(),
                0,
                0,
                self.rng.imm(),
            )
        };
        self.push(item(insn));
    }

    /// Call the mixing helper, then re-establish r1..r5 (which a call
    /// leaves undefined).
    fn helper_call(&mut self) {
        if self.rng.chance(30) {
            // callx: the helper id in a register.
            let id_reg = self.rng.data_reg();
            self.push(item(Insn::new(
                BPF_ALU64 | BPF_MOV | BPF_K,
                id_reg,
                0,
                0,
                MIX_HELPER,
            )));
            let mut call = item(Insn::new(CALLX, id_reg, 0, 0, 0));
            call.not_a_target = true;
            self.push(call);
        } else {
            self.push(item(Insn::new(CALL, 0, 0, 0, MIX_HELPER)));
        }
        self.restore_after_call();
    }

    fn restore_after_call(&mut self) {
        self.push(item(Insn::new(
            BPF_LDX | BPF_MEM | BPF_DW,
            1,
            10,
            CTX_SLOT,
            0,
        )));
        for r in 2..=5 {
            let imm = self.rng.imm();
            self.push(item(Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, r, 0, 0, imm)));
        }
    }

    fn local_call(&mut self, function: usize) {
        let mut call = item(Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 0));
        call.target = Some(Target::Function(function));
        self.push(call);
    }

    /// `r9 = n; body (no jumps, r9 untouched); r9 -= 1; if r9 != 0 goto body`.
    fn bounded_loop(&mut self) {
        let n = 1 + self.rng.below(8) as i32;
        self.push(item(Insn::new(
            BPF_ALU64 | BPF_MOV | BPF_K,
            LOOP_COUNTER,
            0,
            0,
            n,
        )));
        let body = self.items.len();
        for _ in 0..1 + self.rng.below(5) {
            let mut dst = self.rng.data_reg();
            while dst == LOOP_COUNTER {
                dst = self.rng.data_reg();
            }
            let mut it = if self.rng.chance(30) {
                let (base, off) = self.address(8, 8);
                item(Insn::new(
                    BPF_STX | BPF_ATOMIC | BPF_DW,
                    base,
                    dst,
                    off,
                    0x01,
                ))
            } else {
                let insn = self.alu_insn(dst);
                item(insn)
            };
            it.not_a_target = true;
            self.push(it);
        }
        let mut dec = item(Insn::new(
            BPF_ALU64 | BPF_ADD | BPF_K,
            LOOP_COUNTER,
            0,
            0,
            -1,
        ));
        dec.not_a_target = true;
        self.push(dec);
        let mut back = item(Insn::new(BPF_JMP | BPF_JNE | BPF_K, LOOP_COUNTER, 0, 0, 0));
        back.target = Some(Target::Item(body));
        back.not_a_target = true;
        self.push(back);
    }

    /// Lay the items out in slots and resolve targets.
    fn finish(self) -> Vec<Insn> {
        let mut slot_of = Vec::with_capacity(self.items.len() + 1);
        let mut slot = 0usize;
        for it in &self.items {
            slot_of.push(slot);
            slot += it.insns.len();
        }
        slot_of.push(slot);
        let mut out = Vec::with_capacity(slot);
        for (i, it) in self.items.iter().enumerate() {
            let mut first = it.insns[0];
            if let Some(target) = it.target {
                let to = match target {
                    Target::Item(t) => slot_of[t],
                    Target::Function(f) => slot_of[self.function_starts[f]],
                };
                let rel = to as i64 - slot_of[i] as i64 - 1;
                if first.opc == CALL || first.opc == JA32 {
                    first.imm = rel as i32;
                } else {
                    first.off = rel as i16;
                }
            }
            out.push(first);
            out.extend_from_slice(&it.insns[1..]);
        }
        out
    }
}

fn generate(rng: &mut Rng) -> Vec<Insn> {
    let functions = 1 + rng.below(4) as usize;
    let main_len = 20 + rng.below(150) as usize;
    let mut g = Gen {
        rng,
        items: Vec::new(),
        function_starts: Vec::new(),
        functions,
    };
    for f in 0..functions {
        let len = if f == 0 {
            main_len
        } else {
            5 + g.rng.below(30) as usize
        };
        g.function(f, len);
    }
    g.finish()
}

// ---- running ------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MixEnv {
    calls: u64,
    acc: u64,
}

/// Helper 1: folds r2..r5 into the environment (r1 is the buffer pointer,
/// which differs between the two runs) and returns the new accumulator.
unsafe extern "C" fn mix(_r1: u64, r2: u64, r3: u64, r4: u64, r5: u64, env: *mut c_void) -> u64 {
    // SAFETY: every run in this file passes a valid `MixEnv`.
    let env = unsafe { &mut *(env as *mut MixEnv) };
    env.calls += 1;
    env.acc = (env.acc.rotate_left(7) ^ r2)
        .wrapping_mul(0x100_0000_01b3)
        .wrapping_add(r3 ^ r4.rotate_left(17) ^ r5.rotate_left(31));
    env.acc ^ env.calls
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    r0: u64,
    buffer: Vec<u8>,
    env: MixEnv,
}

fn initial_buffer(rng: &mut Rng) -> Vec<u64> {
    (0..BUF_LEN / 8).map(|_| rng.value()).collect()
}

fn as_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

#[test]
fn jit_matches_interpreter_on_random_programs() {
    let cases = env_u64("USERBPF_DIFF_CASES", DEFAULT_CASES);
    let seed = env_u64("USERBPF_DIFF_SEED", DEFAULT_SEED);
    let mut helpers = Helpers::new();
    helpers.register(MIX_HELPER as u32, mix);
    let mut insns_total = 0usize;
    for case in 0..cases {
        let mut rng = Rng(seed ^ case.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let insns = generate(&mut rng);
        insns_total += insns.len();
        let words = initial_buffer(&mut rng);
        let describe = || {
            format!(
                "seed {seed:#x} case {case} (rerun: USERBPF_DIFF_SEED={seed:#x}):\n{}",
                vm::disasm::listing(&insns)
            )
        };
        let prog = Program::load_plain(&insns).unwrap_or_else(|e| {
            panic!("generator produced an invalid program: {e}\n{}", describe())
        });

        let mut interp_words = words.clone();
        let mut interp_env = MixEnv::default();
        let interp_r0 = {
            let region = MemoryRegion {
                start: interp_words.as_mut_ptr() as u64,
                len: BUF_LEN as u64,
                writable: true,
            };
            let regions = [region];
            let opts = RunOptions {
                memory_regions: Some(&regions),
                tail_call_resolver: None,
                instruction_limit: Some(1_000_000),
            };
            let ctx = interp_words.as_mut_ptr() as *mut u8;
            let env = &mut interp_env as *mut MixEnv as *mut c_void;
            // SAFETY: checked mode: every access is bounds-checked.
            unsafe { interp::run(&prog, &helpers, ctx, env, &opts) }.unwrap_or_else(|e| {
                panic!("interpreter failed ({e}): generator bug\n{}", describe())
            })
        };

        let jit_opts = JitOptions {
            bmi2: case % 2 == 0 && JitOptions::default().bmi2,
            ..Default::default()
        };
        let jit = JitProgram::compile(&prog, &helpers, &jit_opts)
            .unwrap_or_else(|e| panic!("JIT refused the program: {e}\n{}", describe()));
        let mut jit_words = words.clone();
        let mut jit_env = MixEnv::default();
        let ctx = jit_words.as_mut_ptr() as *mut u8;
        let env = &mut jit_env as *mut MixEnv as *mut c_void;
        // SAFETY: the interpreter's checked run just proved every access of
        // this program stays inside the buffer and the stack.
        let jit_r0 = unsafe { jit.try_call(ctx, env) }
            .unwrap_or_else(|e| panic!("JIT run aborted ({e})\n{}", describe()));

        let interp = Outcome {
            r0: interp_r0,
            buffer: as_bytes(&interp_words),
            env: interp_env,
        };
        let jitted = Outcome {
            r0: jit_r0,
            buffer: as_bytes(&jit_words),
            env: jit_env,
        };
        if interp != jitted {
            let first_diff = interp
                .buffer
                .iter()
                .zip(&jitted.buffer)
                .position(|(a, b)| a != b);
            panic!(
                "JIT differs from the interpreter (bmi2: {}): r0 {:#x} vs {:#x}, env {:?} vs {:?}, \
                 first differing buffer byte {:?}\n{}",
                jit_opts.bmi2,
                interp.r0,
                jitted.r0,
                interp.env,
                jitted.env,
                first_diff,
                describe()
            );
        }
    }
    eprintln!("{cases} random programs ({insns_total} instructions) agree");
}

/// The generator itself must produce what it promises: every class of
/// instruction shows up in a modest number of cases (so the differential
/// test cannot silently degrade into testing nothing).
#[test]
fn generator_covers_the_instruction_set() {
    let mut seen = std::collections::HashSet::new();
    let mut bases = std::collections::HashSet::new();
    let mut rng = Rng(DEFAULT_SEED);
    for _ in 0..200 {
        for insn in generate(&mut rng) {
            match insn.class() {
                BPF_LDX => bases.insert(("load", insn.src)),
                BPF_ST | BPF_STX if insn.opc & 0xe0 == BPF_ATOMIC => {
                    bases.insert(("atomic", insn.dst))
                }
                BPF_ST | BPF_STX => bases.insert(("store", insn.dst)),
                _ => false,
            };
            let atomic = insn.class() == BPF_STX && insn.opc & 0xe0 == BPF_ATOMIC;
            seen.insert((insn.opc, if atomic { insn.imm } else { 0 }));
        }
    }
    let must_see: &[(u8, i32)] = &[
        (BPF_ALU64 | BPF_DIV | BPF_X, 0),
        (BPF_ALU | BPF_MOD | BPF_K, 0),
        (BPF_ALU | BPF_END | BPF_TO_BE, 0),
        (BPF_ALU64 | BPF_END, 0),
        (BPF_ALU | BPF_ARSH | BPF_X, 0),
        (BPF_LDX | BPF_MEMSX | BPF_H, 0),
        (BPF_ST | BPF_MEM | BPF_B, 0),
        (BPF_STX | BPF_ATOMIC | BPF_W, BPF_CMPXCHG),
        (BPF_STX | BPF_ATOMIC | BPF_DW, 0xa1),
        (BPF_JMP32 | BPF_JSLE | BPF_X, 0),
        (BPF_JMP | BPF_JSET | BPF_K, 0),
        (JA32, 0),
        (CALL, 0),
        (CALLX, 0),
        (EXIT, 0),
    ];
    for kind in ["load", "store", "atomic"] {
        for base in [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10] {
            assert!(
                bases.contains(&(kind, base)),
                "generator never used r{base} as the base of a {kind}"
            );
        }
    }
    for want in must_see {
        assert!(
            seen.contains(want),
            "generator never produced opcode {:#04x} (imm {:#x})",
            want.0,
            want.1
        );
    }
}
