//! Targeted JIT tests for what random differential programs do not reach:
//! tail calls (chains, the 33 limit, from inside a BPF-to-BPF call, empty
//! slots), run aborts, `callx`, `call_function`, compile errors and the
//! copy-loop lowering (overlap, thresholds, wrapping counts). Each
//! compares with the interpreter where both engines apply.

use std::ffi::c_void;

use super::*;
use crate::asm::assemble;
use crate::interp::{self, RunOptions};
use crate::program::{HelperFn, TailTarget};

/// A prog array for the tests: `lddw` immediates point at one of these.
struct ProgArray {
    slots: Vec<TailTarget>,
}

unsafe extern "C" fn resolve(prog_array: u64, index: u64, _env: *mut c_void) -> *const TailTarget {
    // SAFETY: the tests pass the address of a live `ProgArray` in r2.
    let array = unsafe { &*(prog_array as *const ProgArray) };
    match array.slots.get(index as usize) {
        Some(t) if !t.program.is_null() => t,
        _ => std::ptr::null(),
    }
}

unsafe extern "C" fn args_and_env(
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    r5: u64,
    env: *mut c_void,
) -> u64 {
    r1 + 10 * r2 + 100 * r3 + 1000 * r4 + 10000 * r5 + env as u64
}

fn load(text: &str) -> Program {
    Program::load_plain(&assemble(text).unwrap()).unwrap()
}

fn tail_opts() -> JitOptions {
    JitOptions {
        tail_call_resolver: Some(resolve),
        ..JitOptions::default()
    }
}

fn interp_opts() -> RunOptions<'static> {
    RunOptions {
        tail_call_resolver: Some(resolve),
        ..RunOptions::default()
    }
}

/// An engine's result and the memory after the run.
type Outcome = (Result<u64, RunError>, Vec<u64>);

/// Run with both engines on a copy of `mem`; returns (jit, interp) results
/// and memories.
fn both(prog: &Program, jit: &JitProgram, helpers: &Helpers, mem: &[u64]) -> (Outcome, Outcome) {
    let mut jit_mem = mem.to_vec();
    let mut interp_mem = mem.to_vec();
    // SAFETY: the test programs only touch their 8-byte-aligned memory.
    let j = unsafe { jit.try_call(jit_mem.as_mut_ptr() as *mut u8, std::ptr::null_mut()) };
    // SAFETY: as above.
    let i = unsafe {
        interp::run(
            prog,
            helpers,
            interp_mem.as_mut_ptr() as *mut u8,
            std::ptr::null_mut(),
            &interp_opts(),
        )
    };
    ((j, jit_mem), (i, interp_mem))
}

#[test]
fn helpers_get_r1_to_r5_and_env() {
    let prog = load("mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\ncall 7\nexit");
    let mut helpers = Helpers::new();
    helpers.register(7, args_and_env);
    let jit = JitProgram::compile(&prog, &helpers, &JitOptions::default()).unwrap();
    // SAFETY: the program touches no memory; the helper only adds.
    let r0 = unsafe { jit.call(std::ptr::null_mut(), 0x100000 as *mut c_void) };
    assert_eq!(r0, 54321 + 0x100000);
}

#[test]
fn unknown_helper_is_a_compile_error_naming_the_instruction() {
    let prog = load("mov %r0, 0\ncall 99\nexit");
    let err = JitProgram::compile(&prog, &Helpers::new(), &JitOptions::default()).unwrap_err();
    assert!(
        matches!(err, JitError::UnknownHelper { pc: 1, id: 99 }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "insn 1: call to unknown helper 99");
}

#[test]
fn self_tail_call_stops_after_33() {
    // Counts its runs in mem[0], then tail-calls slot 0 (itself).
    let array = Box::new(ProgArray { slots: Vec::new() });
    let text = format!(
        "ldxdw %r0, [%r1]\nadd %r0, 1\nstxdw [%r1], %r0\nlddw %r2, {:#x}\nmov %r3, 0\nmov %r0, 5\n\
         call 12\nadd %r0, 2\nexit",
        &*array as *const ProgArray as u64
    );
    let prog = load(&text);
    let jit = JitProgram::compile(&prog, &Helpers::new(), &tail_opts()).unwrap();
    let array_ptr = Box::into_raw(array);
    // SAFETY: nothing runs yet; we own the box.
    unsafe {
        (*array_ptr).slots.push(TailTarget {
            program: &prog,
            jit_entry: jit.entry(),
        })
    };
    let ((j, jm), (i, im)) = both(&prog, &jit, &Helpers::new(), &[0]);
    // SAFETY: reclaiming the box leaked above; no run is in progress.
    drop(unsafe { Box::from_raw(array_ptr) });
    assert_eq!(im[0], 34, "interpreter: 1 run + 33 tail calls");
    assert_eq!(jm, im);
    assert_eq!(j, Ok(7), "failed tail call leaves r0, then +2");
    assert_eq!(j, i);
}

#[test]
fn tail_call_from_a_subprogram_returns_to_the_caller() {
    let mut array = Box::new(ProgArray { slots: Vec::new() });
    let target = load("mov %r0, 100\nstxdw [%r1+8], %r10\nexit");
    let target_jit = JitProgram::compile(&target, &Helpers::new(), &tail_opts()).unwrap();
    array.slots.push(TailTarget {
        program: &target,
        jit_entry: target_jit.entry(),
    });
    let text = format!(
        "mov %r6, 1\ncall local sub\nadd %r0, %r6\nexit\n\
         sub:\nmov %r6, 50\nlddw %r2, {:#x}\nmov %r3, 0\ncall 12\nmov %r0, -1\nexit",
        &*array as *const ProgArray as u64
    );
    let prog = load(&text);
    let jit = JitProgram::compile(&prog, &Helpers::new(), &tail_opts()).unwrap();
    let ((j, jm), (i, im)) = both(&prog, &jit, &Helpers::new(), &[0, 0]);
    assert_eq!(j, Ok(101), "target's r0 + the caller's preserved r6");
    assert_eq!(i, j);
    // The target ran in the subprogram's frame: r10 one frame below the
    // top. Stack addresses differ between engines (and the JIT's frames are
    // `FRAME_STRIDE` apart, the interpreter's 512); compare the distance
    // from each engine's frame 0 instead, by running a frame-0 probe.
    let probe = load("stxdw [%r1+8], %r10\nexit");
    let probe_jit = JitProgram::compile(&probe, &Helpers::new(), &JitOptions::default()).unwrap();
    let ((_, jp), (_, ip)) = both(&probe, &probe_jit, &Helpers::new(), &[0, 0]);
    assert_eq!(jp[1] - jm[1], codegen::FRAME_STRIDE as u64);
    assert_eq!(ip[1] - im[1], 512);
}

#[test]
fn failed_tail_calls_fall_through_with_registers_intact() {
    let array = Box::new(ProgArray {
        slots: vec![TailTarget {
            program: std::ptr::null(),
            jit_entry: std::ptr::null(),
        }],
    });
    let text = format!(
        "mov %r0, 5\nmov %r1, 0\nlddw %r2, {:#x}\nmov %r3, 0\ncall 12\nmov %r3, 7\ncall 12\nadd %r0, %r1\nexit",
        &*array as *const ProgArray as u64
    );
    let prog = load(&text);
    let jit = JitProgram::compile(&prog, &Helpers::new(), &tail_opts()).unwrap();
    let ((j, _), (i, _)) = both(&prog, &jit, &Helpers::new(), &[0]);
    assert_eq!(j, Ok(5));
    assert_eq!(i, j);
    // Without a resolver the call is a no-op in both engines.
    let jit = JitProgram::compile(&prog, &Helpers::new(), &JitOptions::default()).unwrap();
    // SAFETY: the program touches no memory.
    assert_eq!(
        unsafe { jit.call(std::ptr::null_mut(), std::ptr::null_mut()) },
        5
    );
}

#[test]
fn call_depth_beyond_eight_frames_through_a_tail_call_aborts() {
    // `deep` nests 3 more frames; the caller tail-calls it from frame 6.
    let mut array = Box::new(ProgArray { slots: Vec::new() });
    let deep = load(
        "call local a\nexit\na:\ncall local b\nexit\nb:\ncall local c\nexit\nc:\nmov %r0, 1\nexit",
    );
    let deep_jit = JitProgram::compile(&deep, &Helpers::new(), &tail_opts()).unwrap();
    array.slots.push(TailTarget {
        program: &deep,
        jit_entry: deep_jit.entry(),
    });
    let mut text = String::new();
    for f in 0..6 {
        text.push_str(&format!("f{f}:\ncall local f{}\nexit\n", f + 1));
    }
    text.push_str(&format!(
        "f6:\nlddw %r2, {:#x}\nmov %r3, 0\ncall 12\nexit\n",
        &*array as *const ProgArray as u64
    ));
    let prog = load(&text);
    let jit = JitProgram::compile(&prog, &Helpers::new(), &tail_opts()).unwrap();
    let ((j, _), (i, _)) = both(&prog, &jit, &Helpers::new(), &[0]);
    assert!(
        matches!(j, Err(RunError::CallDepthExceeded { max: 8, .. })),
        "{j:?}"
    );
    assert_eq!(j, i);
    // The JIT still works afterwards (the abort unwound cleanly).
    let ((j, _), _) = both(&deep, &deep_jit, &Helpers::new(), &[0]);
    assert_eq!(j, Ok(1));
}

#[test]
fn callx_calls_by_register_and_aborts_on_unknown_ids() {
    let prog = load("mov %r1, 1\nmov %r2, 7\nmov %r3, 0\nmov %r4, 0\nmov %r5, 0\nmov %r6, 7\ncall %r6\nmov %r6, 8\ncall %r6\nexit");
    let mut helpers = Helpers::new();
    helpers.register(7, args_and_env);
    let jit = JitProgram::compile(&prog, &helpers, &JitOptions::default()).unwrap();
    let ((j, _), (i, _)) = both(&prog, &jit, &helpers, &[0]);
    assert_eq!(j, Err(RunError::UnknownHelper { pc: 8, id: 8 }));
    assert_eq!(i, j);
    let ok = load("mov %r1, 1\nmov %r2, 7\nmov %r3, 0\nmov %r4, 0\nmov %r5, 0\ncall %r2\nexit");
    let jit = JitProgram::compile(&ok, &helpers, &JitOptions::default()).unwrap();
    let ((j, _), (i, _)) = both(&ok, &jit, &helpers, &[0]);
    assert_eq!(j, Ok(71));
    assert_eq!(i, j);
}

#[test]
fn call_function_runs_a_callback_on_a_fresh_frame() {
    let insns = assemble(
        "lddw %r1, func(cb)\nexit\ncb:\nmov %r0, %r2\nadd %r0, 1\nstxdw [%r10-8], %r0\nexit",
    )
    .unwrap();
    let prog = Program::load(&insns, &mut |p| Ok((p.pc as i64 + 1 + p.imm as i64) as u64)).unwrap();
    let jit = JitProgram::compile(&prog, &Helpers::new(), &JitOptions::default()).unwrap();
    // SAFETY: the callback only touches its own stack.
    let r = unsafe { jit.call_function(3, [0, 41, 0, 0, 0], std::ptr::null_mut()) };
    assert_eq!(r, Ok(42));
    // SAFETY: as above.
    let bad = unsafe { jit.call_function(1, [0; 5], std::ptr::null_mut()) };
    assert_eq!(bad, Err(RunError::NotAFunction { pc: 1 }));
}

#[test]
fn code_is_mapped_read_execute_and_reports_its_size() {
    let prog = load("mov %r0, 1\nexit");
    let jit = JitProgram::compile(&prog, &Helpers::new(), &JitOptions::default()).unwrap();
    assert_eq!(jit.code().len(), jit.code_size());
    assert!(jit.code_size() > TAIL_CALL_ENTRY_OFFSET);
    assert_eq!(jit.entry(), jit.code().as_ptr());
}

#[test]
fn helper_calls_become_direct_when_the_code_is_within_reach() {
    let prog = load("mov %r1, 2\nmov %r2, 0\nmov %r3, 0\nmov %r4, 0\nmov %r5, 0\ncall 7\nexit");
    let mut helpers = Helpers::new();
    helpers.register(7, args_and_env);
    let jit = JitProgram::compile(&prog, &helpers, &JitOptions::default()).unwrap();
    let helper = args_and_env as HelperFn as usize as i64;
    let code = jit.code();
    let direct = code
        .windows(8)
        .position(|w| w[..7] == [0x0f, 0x1f, 0x80, 0, 0, 0, 0] && w[7] == 0xe8);
    let distance = (helper - jit.entry() as i64).abs();
    if distance < (1 << 31) - (1 << 20) {
        let at = direct.expect("a helper within rel32 reach is called directly");
        let rel = i32::from_le_bytes(code[at + 8..at + 12].try_into().unwrap());
        let after = jit.entry() as i64 + at as i64 + 12;
        assert_eq!(after + rel as i64, helper);
    } else {
        assert!(direct.is_none());
    }
    // SAFETY: the program touches no memory.
    assert_eq!(
        unsafe { jit.call(std::ptr::null_mut(), std::ptr::null_mut()) },
        2
    );
}

#[test]
fn callx_of_helper_12_is_a_tail_call() {
    let mut array = Box::new(ProgArray { slots: Vec::new() });
    let target = load("mov %r0, 77\nexit");
    let target_jit = JitProgram::compile(&target, &Helpers::new(), &tail_opts()).unwrap();
    array.slots.push(TailTarget {
        program: &target,
        jit_entry: target_jit.entry(),
    });
    let text = format!(
        "lddw %r2, {:#x}\nmov %r3, 0\nmov %r6, 12\ncall %r6\nmov %r0, 1\nexit",
        &*array as *const ProgArray as u64
    );
    let prog = load(&text);
    let jit = JitProgram::compile(&prog, &Helpers::new(), &tail_opts()).unwrap();
    let ((j, _), (i, _)) = both(&prog, &jit, &Helpers::new(), &[0]);
    assert_eq!(j, Ok(77));
    assert_eq!(i, j);
}

#[test]
fn atomics_are_atomic_across_threads() {
    // Each run adds 1 to mem[0] (64-bit) and mem[1] (32-bit, via fetch-add)
    // 500,000 times; four threads start together on the same memory.
    let prog = load(
        "mov %r2, 1\nmov %r6, 500000\nloop:\nlock add [%r1], %r2\nmov %r3, 1\n\
         lock fetch add32 [%r1+8], %r3\nsub %r6, 1\njne %r6, 0, loop\nexit",
    );
    let jit = JitProgram::compile(&prog, &Helpers::new(), &JitOptions::default()).unwrap();
    let mem = std::sync::Arc::new([
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    ]);
    let start = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let mem = mem.clone();
            let jit = &jit;
            let start = &start;
            s.spawn(move || {
                start.wait();
                // SAFETY: the program only touches the two shared words,
                // atomically.
                unsafe { jit.call(mem.as_ptr() as *mut u8, std::ptr::null_mut()) };
            });
        }
    });
    let ordering = std::sync::atomic::Ordering::SeqCst;
    assert_eq!(mem[0].load(ordering), 2_000_000);
    assert_eq!(mem[1].load(ordering), 2_000_000);
}

/// One copy-loop case: `width`-byte elements from `ctx + src` to
/// `ctx + dst` (with the instructions' own offsets `src_off`/`dst_off`),
/// the loop counting with `counter_is_src`'s pointer up to `bound_delta`
/// bytes past its start, `jne` when `exact`.
#[derive(Clone, Copy, Debug)]
struct CopyCase {
    width: i32,
    exact: bool,
    counter_is_src: bool,
    src: i32,
    dst: i32,
    src_off: i16,
    dst_off: i16,
    bound_delta: i32,
    /// Use r7/r8/r0/r9 (p, q, t, b) instead of r2/r3/r5/r4 (which include
    /// the registers `rep movsb` needs, saved around it).
    callee_saved_regs: bool,
}

/// Bytes of data memory in a copy-loop case; the registers are dumped
/// after it.
const COPY_MEM: usize = 8192;

impl CopyCase {
    /// The program: set up the pointers, run the loop (entered through a
    /// forward jump to its head), then store p, q (relative to ctx), t and
    /// b - ctx in the words after the data.
    fn program(&self) -> String {
        let (p, q, t, b) = if self.callee_saved_regs {
            ("%r7", "%r8", "%r0", "%r9")
        } else {
            ("%r2", "%r3", "%r5", "%r4")
        };
        let sfx = match self.width {
            1 => "b",
            2 => "h",
            4 => "w",
            _ => "dw",
        };
        let c = if self.counter_is_src { p } else { q };
        let jcc = if self.exact { "jne" } else { "jlt" };
        let (w, so, dof) = (self.width, self.src_off, self.dst_off);
        let (src, dst, delta) = (self.src, self.dst, self.bound_delta);
        let r = COPY_MEM;
        format!(
            "mov {p}, %r1\nadd {p}, {src}\nmov {q}, %r1\nadd {q}, {dst}\n\
             mov {b}, {c}\nadd {b}, {delta}\nmov {t}, 77\nja head\nmov {t}, 99\n\
             head:\nldx{sfx} {t}, [{p}{so:+}]\nstx{sfx} [{q}{dof:+}], {t}\nadd {p}, {w}\nadd {q}, {w}\n\
             {jcc} {c}, {b}, head\n\
             sub {p}, %r1\nsub {q}, %r1\nsub {b}, %r1\n\
             stxdw [%r1+{r}], {p}\nstxdw [%r1+{}], {q}\nstxdw [%r1+{}], {t}\nstxdw [%r1+{}], {b}\n\
             mov %r0, {t}\nexit",
            r + 8,
            r + 16,
            r + 24,
        )
    }
}

/// Runs `case` in the interpreter and in the JIT with and without the
/// copy-loop lowering; all three must leave the same memory and r0.
fn check_copy_case(case: &CopyCase) {
    let text = case.program();
    let prog = load(&text);
    let mem: Vec<u64> = (0..(COPY_MEM / 8 + 4) as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i << 3))
        .collect();
    let mut outcomes = Vec::new();
    for copy_loops in [true, false] {
        let opts = JitOptions {
            copy_loops,
            ..JitOptions::default()
        };
        let jit = JitProgram::compile(&prog, &Helpers::new(), &opts).unwrap();
        let has_rep_movsb = jit.code().windows(2).any(|w| w == [0xf3, 0xa4]);
        assert_eq!(has_rep_movsb, copy_loops, "lowering applied: {case:?}");
        let ((j, jm), (i, im)) = both(&prog, &jit, &Helpers::new(), &mem);
        outcomes.push((j, jm));
        if copy_loops {
            outcomes.push((i, im));
        }
    }
    let (first, rest) = outcomes.split_first().unwrap();
    for other in rest {
        if other != first {
            let diff = first
                .1
                .iter()
                .zip(&other.1)
                .position(|(a, b)| a != b)
                .map(|w| w * 8);
            panic!(
                "engines differ on {case:?} (first differing byte offset {diff:?}, r0 {:?} vs {:?})\n{text}",
                first.0, other.0
            );
        }
    }
}

#[test]
fn copy_loop_lowering_equals_the_loop() {
    let base = CopyCase {
        width: 8,
        exact: false,
        counter_is_src: true,
        src: 64,
        dst: 4160,
        src_off: 0,
        dst_off: 0,
        bound_delta: 2048,
        callee_saved_regs: false,
    };
    let mut cases = vec![
        base,
        // Overlap, destination ahead of the source: the loop forward-
        // propagates, the fast path must not run.
        CopyCase {
            dst: 64 + 8,
            ..base
        },
        CopyCase {
            width: 1,
            dst: 64 + 1,
            bound_delta: 1000,
            ..base
        },
        CopyCase {
            width: 1,
            dst: 64 + 3,
            bound_delta: 1000,
            exact: true,
            ..base
        },
        CopyCase {
            width: 4,
            dst: 64 + 6,
            bound_delta: 1000,
            ..base
        },
        // Overlap, destination behind; and the very same region.
        CopyCase { dst: 32, ..base },
        CopyCase { dst: 64, ..base },
        // Adjacent regions (disjoint, fast path).
        CopyCase {
            dst: 64 + 2048,
            ..base
        },
        CopyCase {
            src: 64 + 2048,
            dst: 64,
            ..base
        },
        // Overlap by one element at either end.
        CopyCase {
            dst: 64 + 2040,
            ..base
        },
        CopyCase {
            src: 64 + 2040,
            dst: 64,
            ..base
        },
        // Short copies (scalar), the threshold, a bound behind the start.
        CopyCase {
            bound_delta: 8,
            ..base
        },
        CopyCase {
            bound_delta: 255,
            width: 1,
            ..base
        },
        CopyCase {
            bound_delta: 256,
            width: 1,
            ..base
        },
        CopyCase {
            bound_delta: 0,
            ..base
        },
        CopyCase {
            bound_delta: -40,
            ..base
        },
        // jlt with a distance that is not a multiple of the width.
        CopyCase {
            bound_delta: 2045,
            ..base
        },
        CopyCase {
            width: 4,
            bound_delta: 1001,
            ..base
        },
        // Counting on the destination, instruction offsets, other registers.
        CopyCase {
            counter_is_src: false,
            src_off: -16,
            dst_off: 24,
            ..base
        },
        CopyCase {
            callee_saved_regs: true,
            width: 2,
            exact: true,
            bound_delta: 3000,
            ..base
        },
        CopyCase {
            callee_saved_regs: true,
            width: 1,
            src: 5000,
            dst: 4999,
            bound_delta: 3000,
            ..base
        },
    ];
    // Pseudo-random cases across the parameter space.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n) as i32
    };
    for _ in 0..400 {
        let width = 1 << next(4);
        let exact = next(2) == 0;
        let n = 1 + next(700);
        let bound_delta = if exact {
            n * width
        } else {
            n * width - next(width as u64)
        };
        let len = (n * width).max(width);
        let src_off = (next(64) - 32) as i16;
        let dst_off = (next(64) - 32) as i16;
        let src = 64 + next((COPY_MEM as u64 - 128) - len as u64);
        let dst = if next(2) == 0 {
            64 + next((COPY_MEM as u64 - 128) - len as u64)
        } else {
            // Near the source, often overlapping.
            (src + next(64) - 32).clamp(64, COPY_MEM as i32 - 64 - len)
        };
        cases.push(CopyCase {
            width,
            exact,
            counter_is_src: next(2) == 0,
            src,
            dst,
            src_off,
            dst_off,
            bound_delta,
            callee_saved_regs: next(2) == 0,
        });
    }
    for case in &cases {
        check_copy_case(case);
    }
}
