//! Differential fuzzing of the verifier against the VM's checked interpreter,
//! shared by the bounded CI test (`tests/fuzz.rs`) and the long-running local
//! fuzzer (`examples/fuzz.rs`).
//!
//! Programs are generated from templates of what real programs do (stack
//! traffic, map lookups with or without NULL checks, indexed map values,
//! context reads, helper calls, forward branches, small loops, ring buffer
//! reservations) and mutated from earlier accepted programs (field tweaks,
//! opcode swaps, insertions, deletions). Every program the verifier accepts
//! is loaded into the VM and run several times in checked mode with random
//! context contents and helper results: the interpreter checks every access
//! against the stack and the allowed regions (context read-only, map values,
//! ring buffer reservations), and the fake helpers check every pointer
//! argument against the regions its prototype describes. Any violation, VM
//! load failure, or run that does not terminate is a finding.

#![allow(dead_code)]

use std::ffi::c_void;

use verifier::{helper, map_type, verify_with_maps, ArgKind, MapDesc, Maps, ProgType, PseudoLoad, VerifyOptions, HELPERS};
use vm::insn::*;
use vm::interp::{run, MemoryRegion, RunOptions};
use vm::program::{Helpers, Program};

/// xorshift64* — deterministic from a seed, no dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------- maps

const CTX_SIZE: usize = 168;
const RINGBUF_SLOTS: usize = 4;
const RINGBUF_SLOT_BYTES: usize = 4096;

/// The fuzzing maps (fds 1..=8, as in the rejection corpus).
pub fn fuzz_map(fd: i32) -> Option<MapDesc> {
    let d = |map_type, key_size, value_size, max_entries| Some(MapDesc { map_type, key_size, value_size, max_entries });
    match fd {
        1 => d(map_type::PERCPU_HASH, 8, 8, 64),
        2 => d(map_type::PERF_EVENT_ARRAY, 4, 4, 2),
        3 => d(map_type::ARRAY, 4, 64, 4),
        4 => d(map_type::RINGBUF, 0, 0, 4096),
        5 => d(map_type::PROG_ARRAY, 4, 4, 4),
        6 => d(map_type::ARRAY, 4, 8, 1),
        7 => d(map_type::HASH, 4, 16, 64),
        8 => d(map_type::QUEUE, 0, 8, 16),
        _ => None,
    }
}

/// Element 0 of the frozen read-only map 6 (also frozen into the kernel map
/// by `examples/kernel_diff.rs`).
pub const FROZEN: [u8; 8] = [3, 0, 0, 0, 0, 0, 0, 0];

/// The fuzzing maps as the verifier sees them (map 6 frozen, read-only).
pub struct FuzzMaps;

impl Maps for FuzzMaps {
    fn describe(&self, load: PseudoLoad) -> Option<MapDesc> {
        fuzz_map(load.imm)
    }
    fn frozen_readonly_value(&self, load: PseudoLoad) -> Option<Vec<u8>> {
        (load.imm == 6).then(|| FROZEN.to_vec())
    }
}

/// Everything a run may touch besides its stack, plus what the fake helpers
/// need. Lives in a `Box` so region addresses stay put.
pub struct Env {
    ctx: [u64; CTX_SIZE / 8],
    /// One value buffer per map fd (index fd); 8-byte aligned.
    values: Vec<Vec<u64>>,
    ringbuf: [[u64; RINGBUF_SLOT_BYTES / 8]; RINGBUF_SLOTS],
    ringbuf_live: [bool; RINGBUF_SLOTS],
    rng: Rng,
    /// First violation a helper saw.
    pub finding: Option<String>,
}

impl Env {
    pub fn new(seed: u64) -> Box<Env> {
        let values = (0..=8).map(|fd| vec![0u64; fuzz_map(fd).map_or(0, |d| (d.value_size as usize).div_ceil(8))]).collect();
        Box::new(Env {
            ctx: [0; CTX_SIZE / 8],
            values,
            ringbuf: [[0; RINGBUF_SLOT_BYTES / 8]; RINGBUF_SLOTS],
            ringbuf_live: [false; RINGBUF_SLOTS],
            rng: Rng::new(seed),
            finding: None,
        })
    }

    fn map_handle(&self, fd: i32) -> u64 {
        0x4d41_5000_0000_0000 | fd as u64
    }

    fn fd_of_handle(&self, h: u64) -> Option<i32> {
        (h >> 32 == 0x4d41_5000 && fuzz_map((h & 0xff) as i32).is_some()).then_some((h & 0xff) as i32)
    }

    fn regions(&mut self) -> Vec<MemoryRegion> {
        let mut r = vec![MemoryRegion { start: self.ctx.as_ptr() as u64, len: CTX_SIZE as u64, writable: false }];
        for (fd, v) in self.values.iter_mut().enumerate() {
            if let Some(d) = fuzz_map(fd as i32) {
                if d.value_size > 0 {
                    r.push(MemoryRegion { start: v.as_ptr() as u64, len: d.value_size as u64, writable: fd != 6 });
                }
            }
        }
        for slot in self.ringbuf.iter_mut() {
            r.push(MemoryRegion { start: slot.as_ptr() as u64, len: RINGBUF_SLOT_BYTES as u64, writable: true });
        }
        r
    }

    /// Whether `[ptr, ptr+size)` is memory a helper may access.
    fn mem_ok(&self, ptr: u64, size: u64, write: bool) -> bool {
        if size == 0 {
            return true;
        }
        let within = |start: u64, len: u64| ptr >= start && ptr - start <= len && len - (ptr - start) >= size;
        if within(self.ctx.as_ptr() as u64, CTX_SIZE as u64) && !write {
            return true;
        }
        for (fd, v) in self.values.iter().enumerate() {
            if let Some(d) = fuzz_map(fd as i32) {
                if within(v.as_ptr() as u64, d.value_size as u64) && (!write || fd != 6) {
                    return true;
                }
            }
        }
        for (i, slot) in self.ringbuf.iter().enumerate() {
            if self.ringbuf_live[i] && within(slot.as_ptr() as u64, RINGBUF_SLOT_BYTES as u64) {
                return true;
            }
        }
        // The interpreter's stack lives in its own frame, a little above the
        // helper's: accept a window there (wild pointers fall far outside).
        let marker = 0u8;
        let sp = &marker as *const u8 as u64;
        ptr >= sp && ptr - sp < (256 << 10)
    }

    fn fail(&mut self, msg: String) {
        if self.finding.is_none() {
            self.finding = Some(msg);
        }
    }

    fn helper(&mut self, id: u32, a: [u64; 5]) -> u64 {
        let Some(proto) = helper(id) else {
            self.fail(format!("helper {id} called but not in the table"));
            return 0;
        };
        let mut map: Option<MapDesc> = None;
        for (k, kind) in proto.args.iter().enumerate() {
            let v = a[k];
            let next = a.get(k + 1).copied().unwrap_or(0);
            let bad = match kind {
                ArgKind::ConstMapPtr => match self.fd_of_handle(v) {
                    Some(fd) => {
                        map = fuzz_map(fd);
                        false
                    }
                    None => true,
                },
                ArgKind::MapKey => !self.mem_ok(v, map.map_or(0, |m| m.key_size) as u64, false),
                ArgKind::MapValue => !self.mem_ok(v, map.map_or(0, |m| m.value_size) as u64, false),
                ArgKind::UninitMapValue => !self.mem_ok(v, map.map_or(0, |m| m.value_size) as u64, true),
                ArgKind::Mem => !self.mem_ok(v, next, false),
                ArgKind::MemOrNull => v != 0 && !self.mem_ok(v, next, false) || (v == 0 && next != 0),
                ArgKind::UninitMem => !self.mem_ok(v, next, true),
                ArgKind::Ctx => v != self.ctx.as_ptr() as u64,
                ArgKind::ReleaseAllocMem => !self.ringbuf.iter().enumerate().any(|(i, s)| self.ringbuf_live[i] && s.as_ptr() as u64 == v),
                ArgKind::ConstStr => !self.mem_ok(v, 1, false),
                _ => false,
            };
            if bad {
                self.fail(format!("{}: argument {} ({kind:?}) = {v:#x} (size arg {next}) outside its region", proto.name, k + 1));
                return 0;
            }
        }
        let r = self.rng.next();
        match id {
            1 | 195 => {
                let fd = self.fd_of_handle(a[0]).unwrap_or(0);
                if r % 3 == 0 { 0 } else { self.values[fd as usize].as_ptr() as u64 }
            }
            // Helpers that fill memory: write random bytes where they may.
            4 | 16 | 45 | 67 | 88 | 89 | 112..=115 | 120 => {
                let (dst, size) = match id {
                    67 => (a[1], a[2]),
                    120 => (a[2], a[3]),
                    88 | 89 => (a[1], map.map_or(0, |m| m.value_size) as u64),
                    _ => (a[0], a[1]),
                };
                for i in 0..size {
                    // SAFETY: `mem_ok` above proved [dst, dst+size) writable memory of this run.
                    unsafe { *((dst + i) as *mut u8) = self.rng.next() as u8 };
                }
                0
            }
            131 => {
                let free = (0..RINGBUF_SLOTS).find(|&i| !self.ringbuf_live[i]);
                match free {
                    Some(i) if a[1] as usize <= RINGBUF_SLOT_BYTES && r % 4 != 0 => {
                        self.ringbuf_live[i] = true;
                        self.ringbuf[i].as_ptr() as u64
                    }
                    _ => 0,
                }
            }
            132 | 133 => {
                for i in 0..RINGBUF_SLOTS {
                    if self.ringbuf[i].as_ptr() as u64 == a[0] {
                        self.ringbuf_live[i] = false;
                    }
                }
                0
            }
            // Callbacks are not invoked by this fake (a callback's run has
            // its own stack, so the checked interpreter could not tell its
            // access to the caller's stack from a wild one).
            164 | 181 => 0,
            7 | 8 => r & 0xffff_ffff,
            _ => r,
        }
    }
}

macro_rules! fakes {
    ($($id:literal),*) => {
        fn fake_for(id: u32) -> Option<vm::program::HelperFn> {
            $(
                if id == $id {
                    unsafe extern "C" fn f(a: u64, b: u64, c: u64, d: u64, e: u64, env: *mut c_void) -> u64 {
                        // SAFETY: every run passes a live `Env` as its environment.
                        let env = unsafe { &mut *(env as *mut Env) };
                        env.helper($id, [a, b, c, d, e])
                    }
                    return Some(f);
                }
            )*
            None
        }
    };
}

// The last two: the string kfuncs (`verifier::BPF_STRNLEN`, `BPF_STRNSTR`).
fakes!(1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16, 25, 27, 35, 45, 67, 80, 87, 88, 89, 112, 113, 114, 115, 125, 130, 131, 132, 133, 134, 164, 165, 173, 174, 181, 182, 195, 120, 208, 109, 117, 1024, 1025);

/// Fake implementations of every helper in the table (tail calls are the
/// interpreter's own).
pub fn fake_helpers() -> Helpers {
    let mut h = Helpers::new();
    for p in HELPERS {
        if p.id == 12 {
            continue;
        }
        let f = fake_for(p.id).unwrap_or_else(|| panic!("fuzz harness lacks a fake for {}", p.name));
        h.register(p.id, f);
    }
    h
}

// ---------------------------------------------------------------- generation

fn ins(opc: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { opc, dst, src, off, imm }
}

fn lddw(dst: u8, src: u8, imm: i32, next: i32) -> [Insn; 2] {
    [ins(LDDW, dst, src, 0, imm), ins(0, 0, 0, 0, next)]
}

const SPECIAL_IMMS: &[i32] = &[0, 1, -1, 2, 7, 8, 15, 16, 63, 64, 255, 4096, i32::MAX, i32::MIN, -8, -16, -512];
const ALU_OPS: &[u8] = &[BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH];
const JMP_OPS: &[u8] = &[BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE];
const SIZES: &[u8] = &[BPF_B, BPF_H, BPF_W, BPF_DW];

fn imm(rng: &mut Rng) -> i32 {
    if rng.chance(70) {
        rng.pick(SPECIAL_IMMS)
    } else {
        rng.next() as i32
    }
}

fn stack_off(rng: &mut Rng) -> i16 {
    if rng.chance(85) {
        -8 * (1 + rng.below(8) as i16)
    } else {
        -(rng.below(530) as i16) + 4
    }
}

/// Registers the generated code may freely use (r6 holds the context).
fn reg(rng: &mut Rng) -> u8 {
    rng.pick(&[0, 1, 2, 3, 4, 5, 7, 8, 9])
}

/// A forward conditional jump whose offset is patched when the program is finished.
const JUMP_PLACEHOLDER: i16 = i16::MIN;

fn block(rng: &mut Rng, out: &mut Vec<Insn>) {
    match rng.below(14) {
        0 | 1 => out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, reg(rng), 0, 0, imm(rng))),
        2 => {
            let cls = if rng.chance(70) { BPF_ALU64 } else { BPF_ALU };
            let op = rng.pick(ALU_OPS);
            if rng.chance(50) {
                let mut k = imm(rng);
                if matches!(op, BPF_DIV | BPF_MOD) && k == 0 {
                    k = 3;
                }
                if matches!(op, BPF_LSH | BPF_RSH | BPF_ARSH) {
                    k = (k as u32 % if cls == BPF_ALU64 { 64 } else { 32 }) as i32;
                }
                out.push(ins(cls | op | BPF_K, reg(rng), 0, 0, k));
            } else {
                out.push(ins(cls | op | BPF_X, reg(rng), reg(rng), 0, 0));
            }
        }
        3 => {
            let size = rng.pick(SIZES);
            if rng.chance(50) {
                out.push(ins(BPF_STX | BPF_MEM | size, 10, reg(rng), stack_off(rng), 0));
            } else {
                out.push(ins(BPF_ST | BPF_MEM | size, 10, 0, stack_off(rng), imm(rng)));
            }
        }
        4 => out.push(ins(BPF_LDX | BPF_MEM | rng.pick(SIZES), reg(rng), 10, stack_off(rng), 0)),
        5 => {
            let off = if rng.chance(80) { 8 * rng.below(21) as i16 } else { rng.below(200) as i16 - 16 };
            out.push(ins(BPF_LDX | BPF_MEM | rng.pick(SIZES), reg(rng), 6, off, 0));
        }
        6 | 7 => lookup_block(rng, out),
        8 => {
            let cls = if rng.chance(80) { BPF_JMP } else { BPF_JMP32 };
            if rng.chance(60) {
                out.push(ins(cls | rng.pick(JMP_OPS) | BPF_K, reg(rng), 0, JUMP_PLACEHOLDER, imm(rng)));
            } else {
                out.push(ins(cls | rng.pick(JMP_OPS) | BPF_X, reg(rng), reg(rng), JUMP_PLACEHOLDER, 0));
            }
        }
        9 => helper_block(rng, out),
        10 => {
            // A small bounded loop on r9.
            let n = 1 + rng.below(6) as i32;
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 9, 0, 0, 0));
            let body_len = 1 + rng.below(3) as i16;
            for _ in 0..body_len {
                out.push(ins(BPF_ALU64 | rng.pick(&[BPF_ADD, BPF_XOR, BPF_MOV]) | BPF_K, rng.pick(&[0, 7, 8]), 0, 0, imm(rng)));
            }
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 9, 0, 0, 1));
            out.push(ins(BPF_JMP | BPF_JLT | BPF_K, 9, 0, -(body_len + 2), n));
        }
        11 => ringbuf_block(rng, out),
        12 if rng.chance(50) => {
            // Spill a pointer or number and fill it back, maybe narrowly.
            let off = -8 * (1 + rng.below(8) as i16);
            let src = rng.pick(&[0u8, 6, 7, 10]);
            out.push(ins(BPF_STX | BPF_MEM | BPF_DW, 10, src, off, 0));
            let size = if rng.chance(80) { BPF_DW } else { rng.pick(SIZES) };
            out.push(ins(BPF_LDX | BPF_MEM | size, reg(rng), 10, off, 0));
        }
        _ => {
            // Pointer arithmetic on the frame pointer.
            let r = reg(rng);
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, r, 10, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, r, 0, 0, stack_off(rng) as i32));
        }
    }
}

fn lookup_block(rng: &mut Rng, out: &mut Vec<Insn>) {
    let fd = rng.pick(&[1, 3, 3, 7, 6]);
    out.push(ins(BPF_ST | BPF_MEM | BPF_DW, 10, 0, -8, rng.below(3) as i32));
    out.extend(lddw(1, BPF_PSEUDO_MAP_FD, fd, 0));
    out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0));
    out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -8));
    out.push(ins(CALL, 0, 0, 0, 1));
    let checked = rng.chance(90);
    let body: Vec<Insn> = {
        let mut b = Vec::new();
        let value_size = fuzz_map(fd).map_or(8, |d| d.value_size) as i16;
        for _ in 0..1 + rng.below(3) {
            let size = rng.pick(SIZES);
            let off = if rng.chance(80) { (rng.below((value_size / 8).max(1) as u64) * 8) as i16 } else { rng.below(80) as i16 - 8 };
            match rng.below(5) {
                0 => b.push(ins(BPF_LDX | BPF_MEM | size, 7, 0, off, 0)),
                1 => b.push(ins(BPF_STX | BPF_MEM | size, 0, reg(rng), off, 0)),
                2 => b.push(ins(BPF_STX | BPF_ATOMIC | rng.pick(&[BPF_W, BPF_DW]), 0, 8, off, rng.pick(&[0, 1, 0x40, 0xe1]))),
                3 => {
                    // Indexed access with a masked index.
                    b.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 8, 7, 0, 0));
                    b.push(ins(BPF_ALU64 | BPF_AND | BPF_K, 8, 0, 0, rng.pick(&[7, 15, 31, 56, 63])));
                    b.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 9, 0, 0, 0));
                    b.push(ins(BPF_ALU64 | BPF_ADD | BPF_X, 9, 8, 0, 0));
                    b.push(ins(BPF_LDX | BPF_MEM | size, 7, 9, 0, 0));
                }
                _ => b.push(ins(BPF_ST | BPF_MEM | size, 0, 0, off, imm(rng))),
            }
        }
        b
    };
    if checked {
        out.push(ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, body.len() as i16, 0));
    }
    out.extend(body);
}

fn helper_block(rng: &mut Rng, out: &mut Vec<Insn>) {
    match rng.below(6) {
        0 => {
            // probe_read_user(stack buf, size, src)
            let off = stack_off(rng);
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 1, 10, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 1, 0, 0, off as i32));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, rng.pick(&[0, 1, 8, 16, 24, 100])));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, 0));
            out.push(ins(CALL, 0, 0, 0, rng.pick(&[4, 45, 112, 113, 114, 115])));
        }
        1 => {
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0));
            out.extend(lddw(2, BPF_PSEUDO_MAP_FD, 2, 0));
            out.extend(lddw(3, 0, -1, 0));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 4, 10, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 4, 0, 0, stack_off(rng) as i32));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 5, 0, 0, rng.pick(&[8, 16, 32])));
            out.push(ins(CALL, 0, 0, 0, 25));
        }
        2 => out.push(ins(CALL, 0, 0, 0, rng.pick(&[5, 7, 8, 14, 15, 35, 80, 125]))),
        3 => {
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 1, 10, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 1, 0, 0, -16));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, 16));
            out.push(ins(CALL, 0, 0, 0, 16));
        }
        4 => {
            // map_update_elem(map 1, key at -8, value at -16)
            out.push(ins(BPF_ST | BPF_MEM | BPF_DW, 10, 0, -8, 1));
            out.push(ins(BPF_ST | BPF_MEM | BPF_DW, 10, 0, -16, 1));
            out.extend(lddw(1, BPF_PSEUDO_MAP_FD, 1, 0));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -8));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -16));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0));
            out.push(ins(CALL, 0, 0, 0, 2));
        }
        _ => {
            // get_stack(ctx, buf, size, flags)
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0));
            out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -64));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, rng.pick(&[32, 64, 72])));
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 256));
            out.push(ins(CALL, 0, 0, 0, 67));
        }
    }
}

fn ringbuf_block(rng: &mut Rng, out: &mut Vec<Insn>) {
    let size = rng.pick(&[8, 16, 64]);
    out.extend(lddw(1, BPF_PSEUDO_MAP_FD, 4, 0));
    out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, size));
    out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, 0));
    out.push(ins(CALL, 0, 0, 0, 131));
    let off = if rng.chance(85) { (rng.below(size as u64 / 8) * 8) as i16 } else { size as i16 };
    let submit = rng.chance(90);
    out.push(ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, if submit { 4 } else { 1 }, 0));
    out.push(ins(BPF_ST | BPF_MEM | rng.pick(SIZES), 0, 0, off, imm(rng)));
    if submit {
        out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 1, 0, 0, 0));
        out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, 0));
        out.push(ins(CALL, 0, 0, 0, rng.pick(&[132, 133])));
    }
}

/// A fresh random program.
pub fn generate(rng: &mut Rng) -> Vec<Insn> {
    let mut out = vec![ins(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0)];
    // Initialise some registers most of the time, so more programs verify.
    for r in [0u8, 7, 8, 9] {
        if rng.chance(80) {
            out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, r, 0, 0, rng.below(16) as i32));
        }
    }
    let blocks = 2 + rng.below(14);
    for _ in 0..blocks {
        block(rng, &mut out);
    }
    // Sometimes call a local function, passing it a stack buffer.
    let call_at = if rng.chance(25) { Some(out.len()) } else { None };
    if call_at.is_some() {
        out.push(ins(BPF_ST | BPF_MEM | BPF_DW, 10, 0, -8, 0));
        out.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 1, 10, 0, 0));
        out.push(ins(BPF_ALU64 | BPF_ADD | BPF_K, 1, 0, 0, -8));
        out.push(ins(CALL, 0, BPF_PSEUDO_CALL, 0, 0)); // patched below
    }
    out.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, rng.below(3) as i32));
    out.push(ins(EXIT, 0, 0, 0, 0));
    patch_jumps(rng, &mut out);
    if let Some(at) = call_at {
        let call_pc = at + 3;
        let func = out.len();
        out[call_pc].imm = (func - call_pc - 1) as i32;
        let mut body = vec![ins(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0)];
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 => body.push(ins(BPF_LDX | BPF_MEM | rng.pick(SIZES), 0, 6, -(rng.below(3) as i16) * 8 + if rng.chance(90) { 0 } else { 8 }, 0)),
                1 => body.push(ins(BPF_ST | BPF_MEM | rng.pick(SIZES), 6, 0, if rng.chance(90) { 0 } else { 8 }, imm(rng))),
                2 => body.push(ins(BPF_STX | BPF_MEM | BPF_DW, 10, 6, -8, 0)),
                _ => body.push(ins(BPF_ALU64 | BPF_MOV | BPF_X, 0, 10, 0, 0)),
            }
        }
        body.push(ins(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0));
        body.push(ins(EXIT, 0, 0, 0, 0));
        out.extend(body);
    }
    out
}

fn patch_jumps(rng: &mut Rng, insns: &mut [Insn]) {
    let n = insns.len();
    for pc in 0..n {
        if insns[pc].off == JUMP_PLACEHOLDER && matches!(insns[pc].class(), BPF_JMP | BPF_JMP32) {
            let room = n.saturating_sub(pc + 2) as u64;
            insns[pc].off = rng.below(room.min(12) + 1) as i16;
        }
    }
}

/// A variation of `prog`.
pub fn mutate(rng: &mut Rng, prog: &[Insn]) -> Vec<Insn> {
    let mut p = prog.to_vec();
    for _ in 0..1 + rng.below(3) {
        if p.is_empty() {
            break;
        }
        let i = rng.below(p.len() as u64) as usize;
        match rng.below(9) {
            0 => p[i].imm = imm(rng),
            1 => p[i].imm = p[i].imm.wrapping_add(rng.below(17) as i32 - 8),
            2 => p[i].off = p[i].off.wrapping_add(rng.below(17) as i16 - 8),
            3 => p[i].dst = rng.below(11) as u8,
            4 => p[i].src = rng.below(11) as u8,
            5 => {
                // Another operation of the same class.
                let c = p[i].opc & 0x0f;
                p[i].opc = match p[i].class() {
                    BPF_ALU | BPF_ALU64 => c | rng.pick(ALU_OPS),
                    BPF_JMP | BPF_JMP32 if p[i].opc & 0xf0 != BPF_CALL && p[i].opc & 0xf0 != BPF_EXIT => c | rng.pick(JMP_OPS),
                    BPF_LDX | BPF_STX | BPF_ST => (p[i].opc & !0x18) | rng.pick(SIZES),
                    _ => p[i].opc,
                };
            }
            6 => {
                let mut extra = Vec::new();
                block(rng, &mut extra);
                patch_jumps(rng, &mut extra);
                let at = i.min(p.len() - 1);
                p.splice(at..at, extra);
            }
            7 if p.len() > 3 => {
                p.remove(i);
            }
            _ => p[i].opc ^= 1 << rng.below(8),
        }
    }
    p
}

// ---------------------------------------------------------------- the check

/// Outcome counts of a fuzzing session.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub programs: u64,
    pub accepted: u64,
    pub runs: u64,
    /// Accepted programs with a BPF-to-BPF call, a backward jump, an atomic.
    pub accepted_with_call: u64,
    pub accepted_with_loop: u64,
    pub accepted_with_atomic: u64,
    pub findings: Vec<String>,
}

fn hex(prog: &[Insn]) -> String {
    prog.iter().map(|i| format!("{:016x}", i.to_u64())).collect::<Vec<_>>().join(" ")
}

/// Verify `prog`; if accepted, run it `runs` times in the checked interpreter.
/// Returns whether it was accepted; findings go to `stats`.
pub fn check(prog: &[Insn], helpers: &Helpers, rng: &mut Rng, runs: u32, stats: &mut Stats) -> bool {
    stats.programs += 1;
    let opts = VerifyOptions { log_level: 0, unprivileged: rng.chance(20), max_insns_processed: 200_000 };
    let processed = match verify_with_maps(prog, ProgType::Kprobe, &FuzzMaps, &opts) {
        Ok(v) => v.insns_processed,
        Err(_) => return false,
    };
    stats.accepted += 1;
    let has = |f: &dyn Fn(&Insn) -> bool| prog.iter().any(f);
    stats.accepted_with_call += has(&|i| i.opc == CALL && i.src == BPF_PSEUDO_CALL) as u64;
    stats.accepted_with_loop += has(&|i| matches!(i.class(), BPF_JMP | BPF_JMP32) && i.off < 0) as u64;
    stats.accepted_with_atomic += has(&|i| i.opc & 0xe7 == (BPF_STX | BPF_ATOMIC)) as u64;
    let mut env = Env::new(rng.next());
    let env_ptr: *mut Env = &mut *env;
    let value_addrs: Vec<u64> = env.values.iter().map(|v| v.as_ptr() as u64).collect();
    let loaded = Program::load(prog, &mut |p: PseudoLoad| match p.src {
        BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_IDX => Ok(0x4d41_5000_0000_0000 | p.imm as u64),
        BPF_PSEUDO_MAP_VALUE | BPF_PSEUDO_MAP_IDX_VALUE => Ok(value_addrs[p.imm as usize] + p.next_imm as u64),
        BPF_PSEUDO_FUNC => Ok(p.pc as u64),
        other => Err(format!("pseudo source {other}")),
    });
    let program = match loaded {
        Ok(p) => p,
        Err(e) => {
            stats.findings.push(format!("verifier accepted but the VM refused to load it ({e}): {}", hex(prog)));
            return true;
        }
    };
    env.values[6].copy_from_slice(&[u64::from_le_bytes(FROZEN)]);
    for _ in 0..runs {
        for w in env.ctx.iter_mut() {
            *w = match rng.below(4) {
                0 => 0,
                1 => rng.below(64),
                _ => rng.next(),
            };
        }
        env.ringbuf_live = [false; RINGBUF_SLOTS];
        let regions = env.regions();
        let opts = RunOptions {
            memory_regions: Some(&regions),
            tail_call_resolver: None,
            // Generous against the verifier's own bound on any path.
            instruction_limit: Some(processed.max(1000) * 64),
        };
        let ctx = env.ctx.as_mut_ptr() as *mut u8;
        // SAFETY: checked mode (every access is tested against `regions` and
        // the run's stack); the helpers are the fakes above, which check
        // their arguments before touching memory; `env` is live.
        let result = unsafe { run(&program, helpers, ctx, env_ptr as *mut c_void, &opts) };
        stats.runs += 1;
        if let Err(e) = result {
            stats.findings.push(format!("{e}: {}", hex(prog)));
            return true;
        }
        if let Some(f) = env.finding.take() {
            stats.findings.push(format!("{f}: {}", hex(prog)));
            return true;
        }
    }
    true
}

/// One fuzzing session: `programs` programs from `seed`, half generated and
/// half mutated from earlier accepted ones.
pub fn session(seed: u64, programs: u64, stats: &mut Stats) {
    let mut rng = Rng::new(seed);
    let helpers = fake_helpers();
    let mut pool: Vec<Vec<Insn>> = Vec::new();
    for _ in 0..programs {
        let prog = if pool.is_empty() || rng.chance(50) {
            generate(&mut rng)
        } else {
            let base = pool[rng.below(pool.len() as u64) as usize].clone();
            mutate(&mut rng, &base)
        };
        if check(&prog, &helpers, &mut rng, 4, stats) {
            if pool.len() < 2000 {
                pool.push(prog);
            } else {
                let i = rng.below(pool.len() as u64) as usize;
                pool[i] = prog;
            }
        }
    }
}
