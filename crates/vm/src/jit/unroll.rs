//! Recognition of simple innermost loops, which the JIT emits unrolled.
//!
//! Owns the decision *which* loops may be unrolled; `codegen` emits them.
//! A loop qualifies when its body is the contiguous range `[head, back_edge]`
//! and:
//!
//! - `back_edge` is the only jump (conditional or `ja`) from inside the
//!   range to `head`, and no jump inside the range goes backwards to
//!   another instruction of the range (no nested loop);
//! - the range holds no call of any kind (helper, `callx`, BPF-to-BPF,
//!   tail call), no `exit` and no `lddw` — and no divide (not a matter of
//!   correctness: a loop bound by a divide's latency does not get faster);
//! - no jump and no BPF-to-BPF call from outside the range lands inside
//!   it, except on `head` (so a function start cannot be in the middle);
//! - it is at most [`MAX_BODY`] instructions long, and a conditional back
//!   edge has a fall-through instruction after it.
//!
//! Such a loop is emitted as [`FACTOR`] copies of its body in a row. Every
//! jump inside the body targets the same copy's instruction, jumps leaving
//! the body keep their targets, and the back edge of copy `i` becomes a
//! fall-through into copy `i + 1` (a conditional one: "if the condition
//! holds continue into the next copy, else leave to the instruction after
//! the loop"); the last copy's back edge returns to the first copy's head,
//! which is where every jump from outside enters. Each copy runs exactly
//! the operations of one iteration, in order, so the result — registers,
//! memory, the order of memory accesses — is the loop's by construction;
//! what changes is that only every `FACTOR`-th back edge is a taken branch.

use crate::insn::*;

/// Copies of the body emitted for an unrolled loop.
pub(super) const FACTOR: usize = 2;

/// Longest body (in instruction slots) that is unrolled; bounds code growth
/// to `(FACTOR - 1) · MAX_BODY` instructions per loop.
pub(super) const MAX_BODY: usize = 16;

/// A loop that may be unrolled: its body is `head..=back_edge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SimpleLoop {
    pub head: usize,
    pub back_edge: usize,
}

impl SimpleLoop {
    /// Whether slot `pc` is part of the body.
    pub fn contains(&self, pc: usize) -> bool {
        (self.head..=self.back_edge).contains(&pc)
    }
}

/// Every jump and BPF-to-BPF call of the program as (target, source),
/// sorted, so that each loop is checked in time proportional to its body
/// and the jumps into it, not to the program (and with memory proportional
/// to the number of jumps: fresh pages are expensive to fault in).
pub(super) struct JumpSources {
    edges: Vec<(u32, u32)>,
}

impl JumpSources {
    pub fn new(insns: &[Insn]) -> JumpSources {
        let mut edges = Vec::new();
        for (pc, insn) in insns.iter().enumerate() {
            for target in [insn.jump_target(pc), insn.local_call_target(pc)]
                .into_iter()
                .flatten()
            {
                // `Program::load` refuses targets outside the program;
                // codegen reports them.
                if target >= 0 && (target as usize) < insns.len() {
                    edges.push((target as u32, pc as u32));
                }
            }
        }
        edges.sort_unstable();
        JumpSources { edges }
    }

    /// The (target, source) pairs with `first <= target <= last`.
    fn landing_in(&self, first: usize, last: usize) -> &[(u32, u32)] {
        let from = self.edges.partition_point(|&(t, _)| (t as usize) < first);
        let to = self.edges.partition_point(|&(t, _)| (t as usize) <= last);
        &self.edges[from..to]
    }
}

/// The loop headed at `head`, if it satisfies every condition of the module
/// documentation.
pub(super) fn recognize(insns: &[Insn], sources: &JumpSources, head: usize) -> Option<SimpleLoop> {
    // Exactly one jump from `head` onwards to `head`: the back edge. (A
    // BPF-to-BPF call to `head` is an entry from outside, allowed.)
    let mut backward = sources.landing_in(head, head).iter().filter(|&&(_, from)| {
        from as usize >= head && insns[from as usize].jump_target(from as usize).is_some()
    });
    let back_edge = backward.next()?.1 as usize;
    if backward.next().is_some() {
        return None;
    }
    let body = SimpleLoop { head, back_edge };
    if back_edge - head + 1 > MAX_BODY {
        return None;
    }
    let is_conditional = insns[back_edge].opc & 0xf0 != BPF_JA;
    if is_conditional && back_edge + 1 >= insns.len() {
        return None;
    }
    for (pc, &insn) in insns.iter().enumerate().take(back_edge + 1).skip(head) {
        let op = insn.opc & 0xf0;
        let class = insn.class();
        if class == BPF_LD {
            return None;
        }
        if (class == BPF_JMP || class == BPF_JMP32) && (op == BPF_CALL || op == BPF_EXIT) {
            return None;
        }
        // A divide's latency (tens of cycles) dwarfs what a taken back
        // edge costs: such loops only grow (measured 0.2-0.9% slower on
        // the prime benchmark), so they stay rolled.
        if (class == BPF_ALU || class == BPF_ALU64) && (op == BPF_DIV || op == BPF_MOD) {
            return None;
        }
        if pc != back_edge {
            if let Some(target) = insn.jump_target(pc) {
                // Inside the body only forward jumps; anything else is a
                // nested loop.
                if target >= head as i64 && target <= back_edge as i64 && target <= pc as i64 {
                    return None;
                }
            }
        }
    }
    // Nothing from outside the body may land past its head.
    if back_edge > head
        && sources
            .landing_in(head + 1, back_edge)
            .iter()
            .any(|&(_, from)| !body.contains(from as usize))
    {
        return None;
    }
    Some(body)
}

/// A pointer increment of an unrolled loop whose update can be deferred
/// across copies: `add reg, imm` (64-bit) at `add_pc` is the only write to
/// `reg` in the body, and every other use of `reg` there is as the base
/// address of a load or store.
///
/// The JIT then skips the add in every copy but the last, which adds
/// `FACTOR · imm` at once; in between, loads and stores based on `reg` use
/// their displacement plus the pending increment, so they address exactly
/// the bytes they would have (x86 address arithmetic wraps modulo 2⁶⁴ as
/// the eBPF addition does), and every jump that leaves the loop while an
/// increment is pending goes through a stub that performs it first. Every
/// register and memory access is therefore the loop's; what changes is
/// that the increments no longer form a one-cycle-per-iteration dependency
/// chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DeferredIncrement {
    pub reg: u8,
    pub add_pc: usize,
    pub imm: i32,
}

/// Largest increment deferred (keeps every adjusted displacement and the
/// combined add well inside an i32).
const MAX_DEFERRED_IMM: i64 = 1 << 20;

/// The first register of `body` whose increment may be deferred (see
/// [`DeferredIncrement`]): also requires that no jump inside the body
/// crosses the add (the pending increment must be the same on every path
/// through a copy) and that the body has no atomic operation.
pub(super) fn deferred_increment(insns: &[Insn], body: &SimpleLoop) -> Option<DeferredIncrement> {
    let range = body.head..=body.back_edge;
    if insns[range.clone()]
        .iter()
        .any(|i| i.class() == BPF_STX && i.opc & 0xe0 == BPF_ATOMIC)
    {
        return None;
    }
    'candidates: for add_pc in range.clone() {
        let add = insns[add_pc];
        if add.opc != BPF_ALU64 | BPF_ADD | BPF_K
            || add.dst >= 10
            || (add.imm as i64).abs() > MAX_DEFERRED_IMM
        {
            continue;
        }
        let reg = add.dst;
        for pc in range.clone() {
            if pc == add_pc {
                continue;
            }
            if !uses_only_as_base(insns[pc], reg) {
                continue 'candidates;
            }
            if let Some(target) = insns[pc].jump_target(pc) {
                let inside = target >= body.head as i64 && target <= body.back_edge as i64;
                if inside && pc < add_pc && target > add_pc as i64 {
                    continue 'candidates;
                }
            }
        }
        return Some(DeferredIncrement {
            reg,
            add_pc,
            imm: add.imm,
        });
    }
    None
}

/// Whether `insn` leaves `reg` unwritten and reads it, if at all, only as
/// the base address of a load or store (`Program::load` has checked the
/// encodings; calls, `exit` and `lddw` are not in an unrollable body).
fn uses_only_as_base(insn: Insn, reg: u8) -> bool {
    let by_reg = insn.opc & BPF_X != 0;
    match insn.class() {
        BPF_ALU | BPF_ALU64 => insn.dst != reg && !(by_reg && insn.src == reg),
        BPF_JMP | BPF_JMP32 => {
            insn.opc & 0xf0 == BPF_JA || (insn.dst != reg && !(by_reg && insn.src == reg))
        }
        BPF_LDX => insn.dst != reg,
        BPF_ST => true,
        BPF_STX => insn.opc & 0xe0 == BPF_MEM && insn.src != reg,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::assemble;

    /// The loop headed at the first instruction named `head:` in `text`.
    fn recognize_text(text: &str, head: usize) -> Option<SimpleLoop> {
        let insns = assemble(text).unwrap();
        recognize(&insns, &JumpSources::new(&insns), head)
    }

    const STRCMP: &str = "
        mov %r2, %r1
    loop:
        ldxb %r4, [%r2]
        ldxb %r5, [%r2+16]
        jne %r4, %r5, differ
        add %r2, 1
        jne %r4, 0, loop
        mov %r0, 0
        exit
    differ:
        mov %r0, 1
        exit
    ";

    fn increment_of(text: &str, head: usize) -> Option<DeferredIncrement> {
        let insns = assemble(text).unwrap();
        let body = recognize(&insns, &JumpSources::new(&insns), head).expect("an unrollable loop");
        deferred_increment(&insns, &body)
    }

    #[test]
    fn defers_a_pointer_used_only_as_a_base() {
        assert_eq!(
            increment_of(STRCMP, 1),
            Some(DeferredIncrement {
                reg: 2,
                add_pc: 4,
                imm: 1
            })
        );
    }

    #[test]
    fn does_not_defer_a_register_read_as_a_value_or_crossed_by_a_jump() {
        let compared = "
            mov %r2, %r1
        loop:
            ldxb %r4, [%r2]
            add %r2, 1
            jlt %r2, %r3, loop
            exit
        ";
        assert_eq!(increment_of(compared, 1), None);
        for use_ in [
            "mov %r5, %r2",
            "stxdw [%r1], %r2",
            "add %r2, 3",
            "ldxdw %r2, [%r1]",
            "lock add [%r1], %r5",
        ] {
            let text = format!(
                "
                mov %r2, %r1
            loop:
                ldxb %r4, [%r2]
                {use_}
                add %r2, 1
                jne %r4, 0, loop
                exit
            "
            );
            assert_eq!(increment_of(&text, 1), None, "{use_}");
        }
        let crossed = "
            mov %r2, %r1
        loop:
            ldxb %r4, [%r2]
            jeq %r4, 7, skip
            add %r2, 1
        skip:
            jne %r4, 0, loop
            exit
        ";
        assert_eq!(increment_of(crossed, 1), None);
        let second_register = "
            mov %r2, %r1
        loop:
            add %r3, 1
            ldxb %r4, [%r2]
            add %r2, 1
            jne %r4, %r3, loop
            exit
        ";
        assert_eq!(
            increment_of(second_register, 1),
            Some(DeferredIncrement {
                reg: 2,
                add_pc: 3,
                imm: 1
            })
        );
    }

    #[test]
    fn accepts_a_conditional_back_edge_with_an_early_exit() {
        assert_eq!(
            recognize_text(STRCMP, 1),
            Some(SimpleLoop {
                head: 1,
                back_edge: 5
            })
        );
    }

    #[test]
    fn accepts_an_unconditional_back_edge_and_inner_forward_jumps() {
        let text = "
            mov %r0, 0
        loop:
            jge %r0, 10, out
            jset %r0, 1, odd
            add %r1, 2
            ja next
        odd:
            add %r1, 3
        next:
            add %r0, 1
            ja loop
        out:
            mov %r0, %r1
            exit
        ";
        assert_eq!(
            recognize_text(text, 1),
            Some(SimpleLoop {
                head: 1,
                back_edge: 7
            })
        );
    }

    #[test]
    fn accepts_a_single_instruction_loop_and_an_outside_jump_to_the_head() {
        let text = "
            jeq %r1, 0, loop
            mov %r2, 5
        loop:
            add %r2, -1
            jne %r2, 0, loop
            mov %r0, %r2
            exit
        ";
        assert_eq!(
            recognize_text(text, 2),
            Some(SimpleLoop {
                head: 2,
                back_edge: 3
            })
        );
        let self_loop = "
            mov %r2, 5
        loop:
            jlt %r2, 3, loop
            mov %r0, %r2
            exit
        ";
        assert_eq!(
            recognize_text(self_loop, 1),
            Some(SimpleLoop {
                head: 1,
                back_edge: 1
            })
        );
    }

    #[test]
    fn refuses_a_jump_from_outside_into_the_middle() {
        let text = "
            jeq %r1, 0, middle
        loop:
            add %r2, 1
        middle:
            add %r3, 1
            jlt %r3, 10, loop
            mov %r0, %r2
            exit
        ";
        assert_eq!(recognize_text(text, 1), None);
        let from_after = "
        loop:
            add %r2, 1
        middle:
            add %r3, 1
            jlt %r3, 10, loop
            jgt %r3, 20, out
            ja middle
        out:
            mov %r0, %r2
            exit
        ";
        assert_eq!(recognize_text(from_after, 0), None);
        let called_into = "
            call local middle
        loop:
            add %r2, 1
        middle:
            add %r3, 1
            jlt %r3, 10, loop
            mov %r0, %r2
            exit
        ";
        assert_eq!(recognize_text(called_into, 1), None);
        let head_is_a_function = "
            call local loop
            exit
        loop:
            add %r2, 1
            jlt %r2, 10, loop
            call local loop
            exit
        ";
        assert_eq!(
            recognize_text(head_is_a_function, 2),
            Some(SimpleLoop {
                head: 2,
                back_edge: 3
            }),
            "calls to the head"
        );
    }

    #[test]
    fn refuses_calls_exits_lddw_and_divides_in_the_body() {
        for insn in [
            "div %r3, %r2",
            "mod32 %r3, 7",
            "sdiv %r3, 3",
            "call 1",
            "exit",
            "lddw %r3, 0x123456789",
            "call local fn",
            "call %r5",
        ] {
            let text = format!(
                "
                mov %r2, 0
            loop:
                add %r2, 1
                {insn}
                jlt %r2, 10, loop
                mov %r0, %r2
                exit
            fn:
                mov %r0, 0
                exit
            "
            );
            assert_eq!(recognize_text(&text, 1), None, "{insn}");
        }
    }

    #[test]
    fn refuses_nested_and_multiple_back_edges() {
        let nested = "
            mov %r2, 0
        outer:
            mov %r3, 0
        inner:
            add %r3, 1
            jlt %r3, 4, inner
            add %r2, 1
            jlt %r2, 4, outer
            mov %r0, %r2
            exit
        ";
        assert_eq!(recognize_text(nested, 1), None, "outer loop");
        assert_eq!(
            recognize_text(nested, 2),
            Some(SimpleLoop {
                head: 2,
                back_edge: 3
            }),
            "inner loop"
        );
        let two_back_edges = "
            mov %r2, 0
        loop:
            add %r2, 1
            jeq %r2, 3, loop
            jlt %r2, 10, loop
            mov %r0, %r2
            exit
        ";
        assert_eq!(recognize_text(two_back_edges, 1), None);
    }

    #[test]
    fn refuses_a_body_longer_than_the_limit() {
        let adds = "add %r2, 1\n".repeat(MAX_BODY);
        let text = format!("mov %r2, 0\nloop:\n{adds}jlt %r2, 100, loop\nmov %r0, %r2\nexit\n");
        assert_eq!(recognize_text(&text, 1), None);
        let adds = "add %r2, 1\n".repeat(MAX_BODY - 1);
        let text = format!("mov %r2, 0\nloop:\n{adds}jlt %r2, 100, loop\nmov %r0, %r2\nexit\n");
        assert!(recognize_text(&text, 1).is_some());
    }
}
