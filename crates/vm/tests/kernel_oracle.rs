//! The interpreter against the real kernel (opt-in: needs root and kernel
//! eBPF; set `USERBPF_KERNEL_ORACLE=1`, optionally
//! `USERBPF_KERNEL_ORACLE_SEED=<n>` and `USERBPF_KERNEL_ORACLE_PROGRAMS=<n>`).
//!
//! Random programs over r0..r5 and one stack slot — every ALU
//! and ALU64 operation (immediate and register forms, signed division and
//! modulo, movsx, byte swaps, shifts), conditional jumps over one
//! instruction, loads/stores of every size including sign-extending loads,
//! and every atomic, a third of them inside a BPF-to-BPF subprogram that
//! clobbers r8/r9 and its own stack slot (checking frames and callee-saved
//! registers) — end with a fold of the live registers and the slot into r0.
//! Each program is loaded into the kernel as a socket filter and run with
//! `BPF_PROG_TEST_RUN` twice (returning the fold's low and high halves, since
//! the kernel reports a 32-bit return value), and compared with the
//! interpreter's result. Without the opt-in the test prints why it did nothing.

use std::ffi::c_void;

use vm::insn::*;
use vm::interp::{self, RunOptions};
use vm::program::{Helpers, Program};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    /// Values that exercise edge cases more often than uniform ones.
    fn interesting(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => 0x8000_0000_0000_0000,
            4 => 0x8000_0000,
            5 => 0xffff_ffff,
            6 => self.below(64),
            _ => self.next(),
        }
    }
}

fn lddw(dst: u8, value: u64) -> [Insn; 2] {
    [Insn::new(LDDW, dst, 0, 0, value as u32 as i32), Insn::new(0, 0, 0, 0, (value >> 32) as u32 as i32)]
}

/// One random instruction (or two, for jumps) acting on r0..r5 and [r10-8].
fn random_step(rng: &mut Rng, out: &mut Vec<Insn>) {
    let dst = rng.below(6) as u8;
    let src = rng.below(6) as u8;
    match rng.below(10) {
        // ALU / ALU64 with register source.
        0..=2 => {
            let class = rng.pick(&[BPF_ALU, BPF_ALU64]);
            let (op, off) = rng.pick(&[
                (BPF_ADD, 0), (BPF_SUB, 0), (BPF_MUL, 0), (BPF_DIV, 0), (BPF_DIV, 1), (BPF_OR, 0),
                (BPF_AND, 0), (BPF_LSH, 0), (BPF_RSH, 0), (BPF_MOD, 0), (BPF_MOD, 1), (BPF_XOR, 0),
                (BPF_MOV, 0), (BPF_MOV, 8), (BPF_MOV, 16), (BPF_MOV, 32), (BPF_ARSH, 0),
            ]);
            let off = if class == BPF_ALU && off == 32 { 0 } else { off };
            out.push(Insn::new(class | op | BPF_X, dst, src, off, 0));
        }
        // ALU / ALU64 with immediate.
        3..=4 => {
            let class = rng.pick(&[BPF_ALU, BPF_ALU64]);
            let (op, off) = rng.pick(&[
                (BPF_ADD, 0), (BPF_SUB, 0), (BPF_MUL, 0), (BPF_DIV, 0), (BPF_DIV, 1), (BPF_OR, 0),
                (BPF_AND, 0), (BPF_LSH, 0), (BPF_RSH, 0), (BPF_MOD, 0), (BPF_MOD, 1), (BPF_XOR, 0),
                (BPF_MOV, 0), (BPF_ARSH, 0), (BPF_NEG, 0),
            ]);
            let width = if class == BPF_ALU { 32 } else { 64 };
            let imm = match op {
                // The verifier refuses constant shifts >= width.
                BPF_LSH | BPF_RSH | BPF_ARSH => rng.below(width) as i32,
                // ... and division by a zero constant.
                BPF_DIV | BPF_MOD => match rng.interesting() as i32 {
                    0 => -1,
                    v => v,
                },
                BPF_NEG => 0,
                _ => rng.interesting() as i32,
            };
            out.push(Insn::new(class | op | BPF_K, dst, 0, off, imm));
        }
        // Byte swaps.
        5 => {
            let opc = rng.pick(&[BPF_ALU | BPF_END | BPF_TO_LE, BPF_ALU | BPF_END | BPF_TO_BE, BPF_ALU64 | BPF_END]);
            out.push(Insn::new(opc, dst, 0, 0, rng.pick(&[16, 32, 64])));
        }
        // Conditional jump over one instruction.
        6 => {
            let class = rng.pick(&[BPF_JMP, BPF_JMP32]);
            let op = rng.pick(&[
                BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT,
                BPF_JSLE,
            ]);
            if rng.below(2) == 0 {
                out.push(Insn::new(class | op | BPF_X, dst, src, 1, 0));
            } else {
                out.push(Insn::new(class | op | BPF_K, dst, 0, 1, rng.interesting() as i32));
            }
            out.push(Insn::new(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, rng.interesting() as i32));
        }
        // Stores to and loads from the slot [r10-8].
        7 => {
            let size = rng.pick(&[BPF_B, BPF_H, BPF_W, BPF_DW]);
            let bytes = match size {
                BPF_B => 1,
                BPF_H => 2,
                BPF_W => 4,
                _ => 8,
            };
            let off = -8 + (rng.below(8 / bytes) * bytes) as i16;
            out.push(Insn::new(BPF_STX | BPF_MEM | size, 10, src, off, 0));
        }
        8 => {
            let (mode, size, bytes) =
                rng.pick(&[(BPF_MEM, BPF_B, 1u64), (BPF_MEM, BPF_H, 2), (BPF_MEM, BPF_W, 4), (BPF_MEM, BPF_DW, 8),
                    (BPF_MEMSX, BPF_B, 1), (BPF_MEMSX, BPF_H, 2), (BPF_MEMSX, BPF_W, 4)]);
            let off = -8 + (rng.below(8 / bytes) * bytes) as i16;
            out.push(Insn::new(BPF_LDX | mode | size, dst, 10, off, 0));
        }
        // Atomics on the slot.
        _ => {
            let (size, off) = rng.pick(&[(BPF_DW, -8i16), (BPF_W, -8), (BPF_W, -4)]);
            let imm = rng.pick(&[0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, BPF_XCHG, BPF_CMPXCHG]);
            out.push(Insn::new(BPF_STX | BPF_ATOMIC | size, 10, src, off, imm));
        }
    }
}

/// A random program body (everything but the final fold): either
/// straight-line code, or (one time in three) a main function that calls a
/// subprogram doing the random work, to check frames and callee-saved
/// registers. Returns the body and the registers the fold may read.
fn random_body(rng: &mut Rng) -> (Vec<Insn>, Vec<u8>) {
    let mut body = Vec::new();
    for r in 0..6u8 {
        body.extend(lddw(r, rng.interesting()));
    }
    body.extend(lddw(6, rng.interesting()));
    body.push(Insn::new(BPF_STX | BPF_MEM | BPF_DW, 10, 6, -8, 0));
    if rng.below(3) != 0 {
        for _ in 0..24 {
            random_step(rng, &mut body);
        }
        return (body, vec![1, 2, 3, 4, 5, 7]);
    }
    // main: r8, r9 must survive the call; r1..r5 are dead after it.
    body.extend(lddw(8, rng.interesting()));
    body.extend(lddw(9, rng.interesting()));
    let mut callee = vec![Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, rng.interesting() as i32)];
    callee.extend(lddw(6, rng.interesting()));
    callee.push(Insn::new(BPF_STX | BPF_MEM | BPF_DW, 10, 6, -8, 0));
    callee.extend(lddw(8, rng.interesting()));
    callee.extend(lddw(9, rng.interesting()));
    for _ in 0..24 {
        random_step(rng, &mut callee);
    }
    callee.push(Insn::new(EXIT, 0, 0, 0, 0));
    // The fold (replacing FOLD_MARKER) follows the call; the callee comes after.
    let fold_len = fold(&[8, 9, 7], false).len() as i32;
    body.push(Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, fold_len));
    body.push(FOLD_MARKER);
    body.extend(callee);
    (body, vec![8, 9, 7])
}

/// Fold r0 and `regs` (r7 = the stack slot) into r0, then return its low or
/// high half (multiplying by an odd constant and xoring are bijections: any
/// single difference changes the result).
fn fold(regs: &[u8], high: bool) -> Vec<Insn> {
    let mut out = vec![
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 6, 0, 0, 0),
        Insn::new(BPF_LDX | BPF_MEM | BPF_DW, 7, 10, -8, 0),
    ];
    for &r in regs {
        out.push(Insn::new(BPF_ALU64 | BPF_MUL | BPF_K, 6, 0, 0, 0x1f3));
        out.push(Insn::new(BPF_ALU64 | BPF_XOR | BPF_X, 6, r, 0, 0));
    }
    out.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 0, 6, 0, 0));
    out.push(Insn::new(BPF_ALU64 | BPF_RSH | BPF_K, 0, 0, 0, if high { 32 } else { 0 }));
    out.push(Insn::new(EXIT, 0, 0, 0, 0));
    out
}

/// Where `random_body` wants the fold when it is not at the end.
const FOLD_MARKER: Insn = Insn::new(0xff, 0, 0, 0, 0);

/// The complete program for `body`, with the fold at `FOLD_MARKER` or at the end.
fn with_fold(body: &[Insn], regs: &[u8], high: bool) -> Vec<Insn> {
    let fold = fold(regs, high);
    match body.iter().position(|&i| i == FOLD_MARKER) {
        Some(marker) => {
            let mut prog = body[..marker].to_vec();
            prog.extend(&fold);
            prog.extend(&body[marker + 1..]);
            prog
        }
        None => body.iter().copied().chain(fold).collect(),
    }
}

fn bpf(cmd: u32, attr: &mut [u64; 16]) -> i64 {
    // SAFETY: `attr` is a zero-initialised 128-byte `union bpf_attr` image
    // whose pointer fields point to live buffers for the duration of the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr.as_mut_ptr(), 128usize) }
}

const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_TYPE_SOCKET_FILTER: u64 = 1;

/// Load into the kernel and run once; returns the 32-bit r0.
fn kernel_run(insns: &[Insn]) -> Result<u32, String> {
    let words: Vec<u64> = insns.iter().map(|i| i.to_u64()).collect();
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    let mut attr = [0u64; 16];
    attr[0] = BPF_PROG_TYPE_SOCKET_FILTER | ((words.len() as u64) << 32);
    attr[1] = words.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    attr[3] = 1 | ((log.len() as u64) << 32); // log_level 1, log_size
    attr[4] = log.as_mut_ptr() as u64;
    let fd = bpf(BPF_PROG_LOAD, &mut attr);
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        return Err(format!("kernel refused the program: {err}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    let packet = [0u8; 64];
    let mut attr = [0u64; 16];
    attr[0] = fd as u64; // prog_fd; retval at byte 4 is output
    attr[1] = packet.len() as u64; // data_size_in (data_size_out = 0)
    attr[2] = packet.as_ptr() as u64; // data_in
    attr[4] = 1; // repeat
    let rc = bpf(BPF_PROG_TEST_RUN, &mut attr);
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the fd we own.
    unsafe { libc::close(fd as i32) };
    if rc < 0 {
        return Err(format!("BPF_PROG_TEST_RUN failed: {err}"));
    }
    Ok((attr[0] >> 32) as u32)
}

fn interpreter_run(insns: &[Insn]) -> u64 {
    let prog = Program::load_plain(insns).expect("generated program loads");
    let opts = RunOptions { memory_regions: Some(&[]), instruction_limit: Some(10_000), ..Default::default() };
    // SAFETY: checked mode, stack only.
    unsafe { interp::run(&prog, &Helpers::new(), std::ptr::null_mut(), std::ptr::null_mut::<c_void>(), &opts) }
        .expect("generated program runs")
}

#[test]
#[ignore = "needs root and kernel eBPF: USERBPF_KERNEL_ORACLE=1 cargo test -p vm --test kernel_oracle -- --ignored"]
fn interpreter_matches_kernel_on_random_programs() {
    assert!(
        std::env::var_os("USERBPF_KERNEL_ORACLE").is_some(),
        "set USERBPF_KERNEL_ORACLE=1 to compare with the kernel (needs root and kernel eBPF)"
    );
    let seed = std::env::var("USERBPF_KERNEL_ORACLE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234u64);
    let count = std::env::var("USERBPF_KERNEL_ORACLE_PROGRAMS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut rng = Rng(seed | 1);
    let mut mismatches = Vec::new();
    for n in 0..count {
        let (body, regs) = random_body(&mut rng);
        let low_prog = with_fold(&body, &regs, false);
        let high_prog = with_fold(&body, &regs, true);
        let ours = interpreter_run(&low_prog);
        assert_eq!(interpreter_run(&high_prog), ours >> 32);
        let low = kernel_run(&low_prog).unwrap_or_else(|e| panic!("program {n}: {e}\n{}", vm::disasm::listing(&low_prog)));
        let high = kernel_run(&high_prog).unwrap_or_else(|e| panic!("program {n}: {e}"));
        let kernel = (high as u64) << 32 | low as u64;
        if kernel != ours {
            mismatches.push(format!(
                "program {n}: kernel {kernel:#x}, interpreter {ours:#x}\n{}",
                vm::disasm::listing(&low_prog)
            ));
        }
    }
    println!("{count} random programs compared with the kernel (seed {seed:#x})");
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
