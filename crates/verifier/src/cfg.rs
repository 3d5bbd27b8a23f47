//! Structural checks that need no abstract state (the kernel's
//! `check_subprogs` and `check_cfg`): opcodes and reserved fields, `lddw`
//! pairs, jump targets (in range, not into the middle of a `lddw`, not across
//! functions), function boundaries, reachability, back-edges (refused for
//! unprivileged loads), plus the per-instruction facts the abstract
//! interpreter uses: where to keep states for pruning, and register liveness.

use vm::insn::*;

use crate::error::Reject;

/// Longest program a privileged loader may load (the kernel's `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;
/// Longest program an unprivileged loader may load (`BPF_MAXINSNS`).
pub const MAX_INSNS_UNPRIVILEGED: usize = 4096;

/// Static facts about a program that passed the structural checks.
pub struct Cfg {
    /// Start of each function (`0` first), sorted.
    pub func_starts: Vec<usize>,
    /// Instructions where the interpreter stores states (jump targets and
    /// the instruction after a conditional jump, function starts).
    pub prune_point: Vec<bool>,
    /// Targets of back-edges: the only places a path can come back to.
    pub loop_header: Vec<bool>,
    /// Bit r set: register r may be read before written from this instruction on
    /// (within its function).
    pub live_in: Vec<u16>,
}

/// Successors of a non-exit instruction within its function (a pseudo call
/// continues at the next instruction; the callee is a separate function).
fn successors(insns: &[Insn], pc: usize) -> ([Option<i64>; 2], bool) {
    let i = insns[pc];
    let next = pc as i64 + 1;
    let class = i.class();
    if i.opc == LDDW {
        return ([Some(next + 1), None], false);
    }
    if class == BPF_JMP || class == BPF_JMP32 {
        let op = i.opc & 0xf0;
        return match op {
            BPF_EXIT => ([None, None], false),
            BPF_CALL => ([Some(next), None], false),
            BPF_JA => {
                let off = if class == BPF_JMP32 { i.imm as i64 } else { i.off as i64 };
                ([Some(next + off), None], false)
            }
            _ => ([Some(next), Some(next + i.off as i64)], true),
        };
    }
    ([Some(next), None], false)
}

fn rej(pc: usize, msg: String) -> Reject {
    Reject::inval(Some(pc), msg)
}

/// Validate the encoding of every instruction (the kernel rejects these with EINVAL).
fn check_encoding(insns: &[Insn]) -> Result<(), Reject> {
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        if i.dst > 10 || i.src > 10 {
            return Err(rej(pc, format!("R{} is invalid", if i.dst > 10 { i.dst } else { i.src })));
        }
        let class = i.class();
        let op = i.opc & 0xf0;
        let src_x = i.opc & BPF_X != 0;
        // Checked on every instruction, reachable by the analysis or not (the
        // VM refuses such programs outright).
        if i.dst == 10 && matches!(class, BPF_ALU | BPF_ALU64 | BPF_LDX | BPF_LD) {
            return Err(Reject::acces(pc, "frame pointer is read only".into()));
        }
        let bad = |what: &str| Err(rej(pc, format!("{what} uses reserved fields")));
        match class {
            BPF_ALU | BPF_ALU64 => {
                let name = "BPF_ALU";
                match op {
                    BPF_NEG => {
                        if src_x || i.src != 0 || i.imm != 0 || i.off != 0 {
                            return Err(rej(pc, "BPF_NEG uses reserved fields".into()));
                        }
                    }
                    BPF_END => {
                        if i.src != 0 || i.off != 0 || !matches!(i.imm, 16 | 32 | 64) || (class == BPF_ALU64 && src_x) {
                            return Err(rej(pc, "BPF_END uses reserved fields".into()));
                        }
                    }
                    BPF_ADD | BPF_SUB | BPF_MUL | BPF_DIV | BPF_OR | BPF_AND | BPF_LSH | BPF_RSH | BPF_MOD
                    | BPF_XOR | BPF_MOV | BPF_ARSH => {
                        let off_ok = match op {
                            BPF_DIV | BPF_MOD => i.off == 0 || i.off == 1,
                            BPF_MOV => {
                                i.off == 0
                                    || (src_x && matches!(i.off, 8 | 16) )
                                    || (src_x && class == BPF_ALU64 && i.off == 32)
                            }
                            _ => i.off == 0,
                        };
                        if (src_x && i.imm != 0) || (!src_x && i.src != 0) || !off_ok {
                            return bad(name);
                        }
                        if !src_x {
                            if matches!(op, BPF_DIV | BPF_MOD) && i.imm == 0 {
                                return Err(rej(pc, "div by zero".into()));
                            }
                            let bits = if class == BPF_ALU64 { 64 } else { 32 };
                            if matches!(op, BPF_LSH | BPF_RSH | BPF_ARSH) && (i.imm < 0 || i.imm >= bits) {
                                return Err(rej(pc, format!("invalid shift {}", i.imm)));
                            }
                        }
                    }
                    _ => return Err(rej(pc, format!("invalid BPF_ALU opcode {:x}", op))),
                }
            }
            BPF_LDX => {
                let mode = i.opc & 0xe0;
                if (mode != BPF_MEM && mode != BPF_MEMSX) || i.imm != 0 || (mode == BPF_MEMSX && i.opc & 0x18 == BPF_DW) {
                    return if mode == BPF_MEM || mode == BPF_MEMSX { bad("BPF_LDX") } else { Err(unknown(pc, i)) };
                }
            }
            BPF_ST => {
                if i.opc & 0xe0 != BPF_MEM || i.src != 0 {
                    return if i.opc & 0xe0 == BPF_MEM { bad("BPF_ST") } else { Err(unknown(pc, i)) };
                }
            }
            BPF_STX => {
                let mode = i.opc & 0xe0;
                if mode == BPF_MEM {
                    if i.imm != 0 {
                        return bad("BPF_STX");
                    }
                } else if mode == BPF_ATOMIC {
                    let size = i.opc & 0x18;
                    if size != BPF_W && size != BPF_DW {
                        return Err(rej(pc, "invalid atomic operand size".into()));
                    }
                    let ok = matches!(i.imm & !BPF_FETCH, 0x00 | 0x40 | 0x50 | 0xa0) || i.imm == BPF_XCHG || i.imm == BPF_CMPXCHG;
                    if !ok {
                        return Err(rej(pc, format!("BPF_ATOMIC uses invalid atomic opcode {:02x}", i.imm)));
                    }
                } else {
                    return Err(unknown(pc, i));
                }
            }
            BPF_LD => {
                let mode = i.opc & 0xe0;
                if i.opc == LDDW {
                    if pc + 1 >= insns.len() {
                        return Err(rej(pc, "invalid bpf_ld_imm64 insn".into()));
                    }
                    let n = insns[pc + 1];
                    if n.opc != 0 || n.dst != 0 || n.src != 0 || n.off != 0 || i.off != 0 {
                        return Err(rej(pc, "invalid bpf_ld_imm64 insn".into()));
                    }
                    if i.src > BPF_PSEUDO_MAP_IDX_VALUE {
                        return Err(rej(pc, "invalid bpf_ld_imm64 insn".into()));
                    }
                    if matches!(i.src, 0 | BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_IDX | BPF_PSEUDO_FUNC) && n.imm != 0 && i.src != 0 {
                        return Err(rej(pc, "invalid bpf_ld_imm64 insn".into()));
                    }
                    pc += 2;
                    continue;
                }
                if mode == BPF_ABS || mode == BPF_IND {
                    return Err(rej(pc, "BPF_LD_[ABS|IND] instructions not allowed for this program type".into()));
                }
                return Err(unknown(pc, i));
            }
            BPF_JMP | BPF_JMP32 => match op {
                BPF_EXIT => {
                    if i.src != 0 || i.dst != 0 || i.imm != 0 || i.off != 0 || class == BPF_JMP32 || src_x {
                        return Err(rej(pc, "BPF_EXIT uses reserved fields".into()));
                    }
                }
                BPF_CALL => {
                    if class == BPF_JMP32 || src_x || i.off != 0 || i.dst != 0 {
                        return Err(rej(pc, "BPF_CALL uses reserved fields".into()));
                    }
                    if i.src == BPF_PSEUDO_KFUNC_CALL {
                        return Err(rej(pc, "calling kernel functions (kfuncs) is not supported by userbpf".into()));
                    }
                    if i.src != 0 && i.src != BPF_PSEUDO_CALL {
                        return Err(rej(pc, "BPF_CALL uses reserved fields".into()));
                    }
                }
                BPF_JA => {
                    if src_x || i.src != 0 || i.dst != 0 || (class == BPF_JMP && i.imm != 0) || (class == BPF_JMP32 && i.off != 0) {
                        return Err(rej(pc, "BPF_JA uses reserved fields".into()));
                    }
                }
                BPF_JEQ | BPF_JGT | BPF_JGE | BPF_JSET | BPF_JNE | BPF_JSGT | BPF_JSGE | BPF_JLT | BPF_JLE | BPF_JSLT
                | BPF_JSLE => {
                    if (src_x && i.imm != 0) || (!src_x && i.src != 0) {
                        return Err(rej(pc, "BPF_JMP/JMP32 uses reserved fields".into()));
                    }
                }
                _ => return Err(unknown(pc, i)),
            },
            _ => return Err(unknown(pc, i)),
        }
        pc += 1;
    }
    Ok(())
}

fn unknown(pc: usize, i: Insn) -> Reject {
    rej(pc, format!("unknown opcode {:02x}", i.opc))
}

/// Run all structural checks. `allow_loops` is the kernel's `bpf_capable`:
/// without it any back-edge is refused.
pub fn analyze(insns: &[Insn], allow_loops: bool) -> Result<Cfg, Reject> {
    let n = insns.len();
    if n == 0 {
        return Err(Reject::inval(None, "empty program".into()));
    }
    let max = if allow_loops { MAX_INSNS } else { MAX_INSNS_UNPRIVILEGED };
    if n > max {
        return Err(Reject { errno: crate::error::E2BIG, pc: None, message: format!("BPF program of {n} instructions is too large (limit {max})") });
    }
    check_encoding(insns)?;
    // Second slots of lddw: never a jump target nor an instruction of its own.
    let mut is_lddw_tail = vec![false; n];
    let mut pc = 0;
    while pc < n {
        if insns[pc].opc == LDDW {
            is_lddw_tail[pc + 1] = true;
            pc += 2;
        } else {
            pc += 1;
        }
    }
    let target_ok = |from: usize, to: i64| -> Result<usize, Reject> {
        if to < 0 || to >= n as i64 {
            return Err(rej(from, format!("jump out of range from insn {from} to {to}")));
        }
        if is_lddw_tail[to as usize] {
            return Err(rej(from, format!("jump into the middle of ldimm64 insn {}", to - 1)));
        }
        Ok(to as usize)
    };
    // Functions: entry plus every target of a pseudo call or pseudo-func lddw.
    let mut func_starts = vec![0usize];
    for (pc, i) in insns.iter().enumerate() {
        if is_lddw_tail[pc] {
            continue;
        }
        let is_call = i.opc == CALL && i.src == BPF_PSEUDO_CALL;
        let is_func_ref = i.opc == LDDW && i.src == BPF_PSEUDO_FUNC;
        if is_call || is_func_ref {
            let to = pc as i64 + 1 + i.imm as i64;
            func_starts.push(target_ok(pc, to)?);
        }
    }
    func_starts.sort_unstable();
    func_starts.dedup();
    let func_of = |pc: usize| func_starts.partition_point(|&s| s <= pc) - 1;
    // Each function must end in exit or an unconditional jump, and jumps stay inside it.
    for (f, &start) in func_starts.iter().enumerate() {
        let end = func_starts.get(f + 1).copied().unwrap_or(n);
        let last = insns[end - 1];
        let last_ok = !is_lddw_tail[end - 1] && (last.opc == EXIT || last.opc == JA || last.opc == JA32);
        if !last_ok {
            return Err(rej(end - 1, "last insn is not an exit or jmp".into()));
        }
        for pc in start..end {
            if is_lddw_tail[pc] {
                continue;
            }
            let (succ, _) = successors(insns, pc);
            for to in succ.into_iter().flatten() {
                let to = target_ok(pc, to)?;
                if func_of(to) != f {
                    return Err(rej(pc, format!("jump out of range from insn {pc} to {to}")));
                }
            }
        }
    }
    // BPF-to-BPF calls may not recurse (directly or not): the VM refuses it.
    let mut calls: Vec<Vec<(usize, usize)>> = vec![Vec::new(); func_starts.len()];
    for (pc, i) in insns.iter().enumerate() {
        if !is_lddw_tail[pc] && i.opc == CALL && i.src == BPF_PSEUDO_CALL {
            let to = (pc as i64 + 1 + i.imm as i64) as usize;
            calls[func_of(pc)].push((pc, func_of(to)));
        }
    }
    // Iterative depth-first search over the call graph (no host recursion:
    // the number of functions is up to the program's length).
    let mut color = vec![0u8; func_starts.len()]; // 0 new, 1 on the DFS path, 2 done
    for root in 0..func_starts.len() {
        if color[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        while let Some(&mut (f, ref mut k)) = stack.last_mut() {
            if let Some(&(pc, g)) = calls[f].get(*k) {
                *k += 1;
                match color[g] {
                    1 => return Err(rej(pc, format!("recursive call from insn {pc} to {}", func_starts[g]))),
                    0 => {
                        color[g] = 1;
                        stack.push((g, 0));
                    }
                    _ => {}
                }
            } else {
                color[f] = 2;
                stack.pop();
            }
        }
    }
    // Depth-first search from every function entry: reachability and back-edges.
    let mut prune_point = vec![false; n];
    let mut loop_header = vec![false; n];
    let mut reached = vec![false; n];
    let mut on_stack = vec![false; n];
    for &start in &func_starts {
        prune_point[start] = true;
        if reached[start] {
            continue;
        }
        // Explicit stack of (pc, next successor index).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        reached[start] = true;
        on_stack[start] = true;
        while let Some(&mut (pc, ref mut k)) = stack.last_mut() {
            let (succ, conditional) = successors(insns, pc);
            let next = succ.get(*k).copied().flatten();
            *k += 1;
            match next {
                Some(to) => {
                    let to = to as usize;
                    if conditional || insns[pc].opc == JA || insns[pc].opc == JA32 {
                        prune_point[to] = true;
                    }
                    if on_stack[to] {
                        if !allow_loops {
                            return Err(rej(pc, format!("back-edge from insn {pc} to {to}")));
                        }
                        prune_point[to] = true;
                        loop_header[to] = true;
                    } else if !reached[to] {
                        reached[to] = true;
                        on_stack[to] = true;
                        stack.push((to, 0));
                    }
                }
                None if *k > 2 => {
                    on_stack[pc] = false;
                    stack.pop();
                }
                None => {}
            }
        }
    }
    if let Some(pc) = (0..n).find(|&pc| !reached[pc] && !is_lddw_tail[pc]) {
        return Err(rej(pc, format!("unreachable insn {pc}")));
    }
    let live_in = liveness(insns, &is_lddw_tail);
    Ok(Cfg { func_starts, prune_point, loop_header, live_in })
}

/// Registers read and written by one instruction: (uses, defs) bit sets.
fn uses_defs(i: &Insn) -> (u16, u16) {
    let d = 1u16 << i.dst;
    let s = 1u16 << i.src;
    let class = i.class();
    let src_x = i.opc & BPF_X != 0;
    match class {
        BPF_ALU | BPF_ALU64 => {
            let op = i.opc & 0xf0;
            let src_use = if src_x && op != BPF_END { s } else { 0 };
            if op == BPF_MOV {
                (src_use, d)
            } else {
                (d | src_use, d)
            }
        }
        BPF_LDX => (s, d),
        BPF_ST => (d, 0),
        BPF_STX => {
            if i.opc & 0xe0 == BPF_ATOMIC {
                let fetch_def = if i.imm == BPF_CMPXCHG { 1 } else if i.imm & BPF_FETCH != 0 { s } else { 0 };
                let cmp_use = if i.imm == BPF_CMPXCHG { 1 } else { 0 };
                (d | s | cmp_use, fetch_def)
            } else {
                (d | s, 0)
            }
        }
        BPF_LD => (0, if i.opc == LDDW { d } else { 0 }),
        _ => match i.opc & 0xf0 {
            // A call reads its arguments (conservatively all five) and
            // clobbers r0-r5; exit reads r0.
            BPF_CALL => (0b11_1110, 0b11_1111),
            BPF_EXIT => (1, 0),
            BPF_JA => (0, 0),
            _ => (d | if src_x { s } else { 0 }, 0),
        },
    }
}

/// Backward liveness over each function's control flow graph, with a
/// worklist (each instruction's set only grows, so the work is linear).
fn liveness(insns: &[Insn], is_lddw_tail: &[bool]) -> Vec<u16> {
    let n = insns.len();
    let always = 1u16 << 10;
    let mut preds: Vec<Vec<u32>> = vec![Vec::new(); n];
    for pc in 0..n {
        if is_lddw_tail[pc] {
            continue;
        }
        for to in successors(insns, pc).0.into_iter().flatten() {
            if let Some(p) = preds.get_mut(to as usize) {
                p.push(pc as u32);
            }
        }
    }
    let mut live = vec![0u16; n];
    let mut queued = vec![true; n];
    let mut work: Vec<usize> = (0..n).filter(|&pc| !is_lddw_tail[pc]).collect();
    while let Some(pc) = work.pop() {
        queued[pc] = false;
        let mut out = 0u16;
        for to in successors(insns, pc).0.into_iter().flatten() {
            if let Some(l) = live.get(to as usize) {
                out |= *l;
            }
        }
        let (uses, defs) = uses_defs(&insns[pc]);
        let inn = uses | (out & !defs) | always;
        if inn != live[pc] {
            live[pc] = inn;
            for &p in &preds[pc] {
                if !queued[p as usize] {
                    queued[p as usize] = true;
                    work.push(p as usize);
                }
            }
        }
    }
    live
}
