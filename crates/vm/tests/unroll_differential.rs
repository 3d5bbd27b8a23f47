//! Differential test of the JIT's loop unrolling: many generated programs
//! built around one simple innermost loop (the shapes `jit::unroll`
//! accepts), each run by the interpreter (checked mode, the oracle) and by
//! the JIT with unrolling on and off; r0, every register (stored to memory
//! before `exit`) and the whole buffer must agree.
//!
//! The generator varies what matters to unrolling: trip counts 0 to 9 (odd
//! and even, so the loop ends in either copy), conditional bottom-tested
//! back edges and unconditional `ja` back edges with a top test, early
//! exits on a chosen iteration (so from either copy), forward jumps inside
//! the body, an extra entry jump from before the loop to its head, 32- and
//! 64-bit ALU ops, loads and stores through a pointer that walks the buffer.
//!
//! `USERBPF_UNROLL_CASES` / `USERBPF_UNROLL_SEED` override the defaults.

use std::fmt::Write;

use vm::interp::{self, MemoryRegion, RunOptions};
use vm::jit::{JitOptions, JitProgram};
use vm::program::{Helpers, Program};

const WORDS: usize = 64;
/// Where the walking pointer (r7) starts, in words; it advances one word
/// per iteration and the body accesses at most two words around it.
const WALK_START: usize = 8;
/// Where the final register dump goes, in words (r0..r9).
const DUMP_AT: usize = 40;
const MAX_TRIPS: u64 = 9;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Registers the body computes with (r1 holds ctx only until r6 copies it;
/// r6 = buffer base, r7 = walking pointer, r9 = trip counter).
const DATA_REGS: [&str; 6] = ["%r0", "%r1", "%r2", "%r3", "%r4", "%r5"];

fn data_reg(rng: &mut Rng) -> &'static str {
    DATA_REGS[rng.below(DATA_REGS.len() as u64) as usize]
}

/// One body instruction that neither jumps nor touches r6, r7 or r9
/// (except r8, a data register too, which it may use freely).
fn straight_insn(rng: &mut Rng, out: &mut String) {
    let dst = if rng.below(6) == 0 {
        "%r8"
    } else {
        data_reg(rng)
    };
    match rng.below(10) {
        0..=4 => {
            let op = rng.pick(&[
                "add", "sub", "xor", "or", "and", "mul", "lsh", "rsh", "arsh",
            ]);
            let width = rng.pick(&["", "32"]);
            if rng.below(2) == 0 {
                let src = data_reg(rng);
                writeln!(out, "    {op}{width} {dst}, {src}").unwrap();
            } else {
                let imm = match op {
                    "lsh" | "rsh" | "arsh" => rng.below(32) as i64,
                    _ => rng.below(2000) as i64 - 1000,
                };
                writeln!(out, "    {op}{width} {dst}, {imm}").unwrap();
            }
        }
        5 => writeln!(out, "    mov {dst}, %r9").unwrap(),
        6 | 7 => {
            let size = rng.pick(&["b", "h", "w", "dw"]);
            let off = rng.below(3) as i64 * 8 - 8;
            writeln!(out, "    ldx{size} {dst}, [%r7{off:+}]").unwrap();
        }
        _ => {
            let size = rng.pick(&["b", "h", "w", "dw"]);
            let off = rng.below(3) as i64 * 8 - 8;
            let src = data_reg(rng);
            writeln!(out, "    stx{size} [%r7{off:+}], {src}").unwrap();
        }
    }
}

/// The loop's body up to (not including) the counter update: straight
/// instructions, forward skips inside the body and early exits.
fn body(rng: &mut Rng, trips: u64, out: &mut String) {
    let len = 1 + rng.below(4);
    for i in 0..len {
        match rng.below(6) {
            0 => {
                // Early exit on a chosen iteration (the counter counts down).
                let at = rng.below(trips + 2);
                let op = rng.pick(&["jeq", "jeq32"]);
                writeln!(out, "    {op} %r9, {at}, early{}", rng.below(2)).unwrap();
            }
            1 if i + 1 < len => {
                // Skip the next instruction, depending on the data.
                let op = rng.pick(&["jset", "jgt", "jslt", "jne32"]);
                let reg = data_reg(rng);
                let imm = rng.below(7) as i64 - 2;
                writeln!(out, "    {op} {reg}, {imm}, +1").unwrap();
                straight_insn(rng, out);
            }
            _ => straight_insn(rng, out),
        }
    }
}

/// The walking pointer's step. Usually just `add %r7, 8` (r7 is then only
/// a load/store base: its increment is deferred across copies); sometimes
/// with r7 also read as a value, or with a jump skipping the add, which
/// both rule the deferral out.
fn pointer_step(rng: &mut Rng, out: &mut String) {
    match rng.below(8) {
        0 => writeln!(out, "    mov %r8, %r7\n    sub %r8, %r6").unwrap(),
        1 => writeln!(out, "    jset %r9, 1, +1").unwrap(),
        2 => writeln!(out, "    ldxw %r3, [%r7+4]").unwrap(),
        _ => {}
    }
    writeln!(out, "    add %r7, 8").unwrap();
    if rng.below(2) == 0 {
        // Loads and stores after the add, before the back edge.
        straight_insn(rng, out);
    }
}

/// A whole program around one unrollable loop running `trips` times.
fn program(rng: &mut Rng) -> String {
    let trips = rng.below(MAX_TRIPS + 1);
    let mut out = String::new();
    writeln!(out, "    mov %r6, %r1").unwrap();
    writeln!(out, "    mov %r7, %r1").unwrap();
    writeln!(out, "    add %r7, {}", WALK_START * 8).unwrap();
    for (i, reg) in ["%r0", "%r2", "%r3", "%r4", "%r5", "%r8"]
        .iter()
        .enumerate()
    {
        writeln!(out, "    ldxdw {reg}, [%r6+{}]", 8 * (i + 1)).unwrap();
    }
    writeln!(out, "    ldxdw %r1, [%r6]").unwrap();
    writeln!(out, "    mov %r9, {trips}").unwrap();
    if rng.below(3) == 0 {
        // A second way in, from before the loop, to the head.
        writeln!(out, "    jeq %r2, {}, head", rng.below(4)).unwrap();
        writeln!(out, "    add %r3, 7").unwrap();
    }
    let conditional = rng.below(2) == 0;
    writeln!(out, "head:").unwrap();
    if conditional {
        // Bottom-tested: at least one iteration, `trips` when trips > 0.
        body(rng, trips, &mut out);
        pointer_step(rng, &mut out);
        writeln!(out, "    add %r9, -1").unwrap();
        let back = rng.pick(&[
            "jsgt %r9, 0, head",
            "jgt %r9, 0, head",
            "jne32 %r9, 0, head",
        ]);
        // From zero, the counter goes to -1: only the signed test stops.
        let back = if trips == 0 {
            "jsgt %r9, 0, head"
        } else {
            back
        };
        writeln!(out, "    {back}").unwrap();
    } else {
        // Top-tested with an unconditional back edge: exactly `trips`.
        writeln!(out, "    jeq %r9, 0, done").unwrap();
        body(rng, trips, &mut out);
        pointer_step(rng, &mut out);
        writeln!(out, "    add %r9, -1").unwrap();
        writeln!(out, "    ja head").unwrap();
    }
    writeln!(out, "done:").unwrap();
    writeln!(out, "    mov %r8, 100").unwrap();
    for tag in ["early0", "early1", "dump"] {
        if tag == "early0" {
            writeln!(out, "    ja dump").unwrap();
        }
        writeln!(out, "{tag}:").unwrap();
        match tag {
            "early0" => writeln!(out, "    mov %r8, 200\n    ja dump").unwrap(),
            "early1" => writeln!(out, "    xor %r8, 300").unwrap(),
            _ => {
                writeln!(out, "    sub %r7, %r6").unwrap();
                for (i, reg) in [
                    "%r0", "%r1", "%r2", "%r3", "%r4", "%r5", "%r7", "%r8", "%r9",
                ]
                .iter()
                .enumerate()
                {
                    writeln!(out, "    stxdw [%r6+{}], {reg}", 8 * (DUMP_AT + i)).unwrap();
                }
                writeln!(out, "    exit").unwrap();
            }
        }
    }
    out
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

#[test]
fn unrolled_loops_match_the_interpreter_and_the_plain_jit() {
    let cases = env_u64("USERBPF_UNROLL_CASES", 3000);
    let seed = env_u64("USERBPF_UNROLL_SEED", 0x5eed_1007);
    let helpers = Helpers::new();
    let unrolled = JitOptions::default();
    assert!(unrolled.unroll_loops, "unrolling is on by default");
    assert!(unrolled.defer_loop_increments, "deferral is on by default");
    let not_deferred = JitOptions {
        defer_loop_increments: false,
        ..JitOptions::default()
    };
    let plain = JitOptions {
        unroll_loops: false,
        ..JitOptions::default()
    };
    let mut grew = 0;
    for case in 0..cases {
        let mut rng = Rng(seed ^ (case + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let text = program(&mut rng);
        let insns = vm::asm::assemble(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let prog = Program::load_plain(&insns)
            .unwrap_or_else(|e| panic!("generator produced an invalid program: {e}\n{text}"));
        let initial: Vec<u64> = (0..WORDS).map(|_| rng.next() >> rng.below(64)).collect();
        let describe = || format!("seed {seed:#x} case {case}:\n{text}");

        let mut interp_words = initial.clone();
        let interp_r0 = {
            let regions = [MemoryRegion::from_mut_slice(bytes_of(&mut interp_words))];
            let opts = RunOptions {
                memory_regions: Some(&regions),
                instruction_limit: Some(100_000),
                ..RunOptions::default()
            };
            let ctx = interp_words.as_mut_ptr() as *mut u8;
            // SAFETY: checked mode: every access is bounds-checked.
            unsafe { interp::run(&prog, &helpers, ctx, std::ptr::null_mut(), &opts) }
                .unwrap_or_else(|e| {
                    panic!("interpreter failed ({e}): generator bug\n{}", describe())
                })
        };

        let mut sizes = [0; 3];
        for (i, opts) in [&unrolled, &not_deferred, &plain].into_iter().enumerate() {
            let jit = JitProgram::compile(&prog, &helpers, opts)
                .unwrap_or_else(|e| panic!("JIT refused: {e}\n{}", describe()));
            sizes[i] = jit.code_size();
            let mut words = initial.clone();
            // SAFETY: the interpreter's checked run proved every access of
            // this program stays inside the buffer.
            let r0 = unsafe { jit.call(words.as_mut_ptr() as *mut u8, std::ptr::null_mut()) };
            let which = ["unrolled", "unrolled without deferral", "plain"][i];
            assert_eq!(r0, interp_r0, "{which} JIT r0\n{}", describe());
            assert_eq!(
                words,
                interp_words,
                "{which} JIT memory and registers\n{}",
                describe()
            );
        }
        if sizes[1] > sizes[2] {
            grew += 1;
        }
    }
    // Every generated loop is of an accepted shape, so unrolling must have
    // applied to each (the unrolled code is longer).
    assert_eq!(grew, cases, "unrolling applied to every generated loop");
}

fn bytes_of(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) }
}
