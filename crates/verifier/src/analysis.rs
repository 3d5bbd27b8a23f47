//! The abstract interpreter: explores every path of the program depth-first
//! (like the kernel's `do_check`), tracking a [`State`] per path, checking
//! each instruction against it, forking at conditional jumps whose outcome is
//! unknown, and pruning a path when an already fully explored state at the
//! same instruction covers it. Loops are unrolled; a path that comes back to
//! an instruction in exactly the state it had there is an infinite loop, and
//! the total number of processed instructions is bounded by a budget.

use std::collections::HashMap;

use vm::insn::*;
use vm::program::PseudoLoad;

use crate::cfg::Cfg;
use crate::error::{Reject, E2BIG, EBADF};
use crate::helpers::{self, helper, ArgKind, RetKind};

/// The kernel's `MAX_ERRNO`: helpers return -errno down to this.
const MAX_ERRNO: i64 = 4095;
use crate::log::{alu_op_name, Log};
use crate::maps::{MapDesc, Maps};
use crate::prog_type::ProgType;
use crate::scalar::{self, Scalar};
use crate::state::{Frame, Kind, Reference, Reg, Slot, State};

/// Largest size a helper memory argument may have (`BPF_MAX_VAR_SIZ`).
const MAX_VAR_SIZE: u64 = 1 << 29;
/// States remembered per instruction for pruning and loop detection.
const MAX_STATES_PER_INSN: usize = 64;
/// States remembered in all (bounds memory: a few KiB each at worst).
/// Past it exploration goes on without new pruning points, still bounded by
/// the instruction budget.
const MAX_TOTAL_STATES: usize = 65_536;
/// Branches waiting to be explored at once (`BPF_COMPLEXITY_LIMIT_JMP_SEQ`).
const MAX_PENDING_BRANCHES: usize = 8192;
/// Largest iteration count `bpf_loop` accepts (`BPF_MAX_LOOPS`).
const MAX_LOOPS: u64 = 1 << 23;

/// Parameters of one verification.
pub struct Params<'a> {
    pub insns: &'a [Insn],
    pub prog_type: ProgType,
    pub privileged: bool,
    pub max_insns_processed: u64,
    pub cfg: Cfg,
}

/// Statistics reported in the log's last line.
#[derive(Default, Clone, Copy, Debug)]
pub struct Stats {
    pub processed: u64,
    pub total_states: u64,
    pub peak_states: u64,
    pub max_states_per_insn: u64,
}

struct Checkpoint {
    state: State,
    parent: Option<u32>,
    /// Paths still being explored below this checkpoint; 0 = fully explored.
    branches: u32,
}

enum Step {
    Next,
    Fork(State),
    Done,
}

pub struct Analyzer<'a> {
    insns: &'a [Insn],
    prog_type: ProgType,
    privileged: bool,
    budget: u64,
    cfg: Cfg,
    maps: Vec<MapDesc>,
    /// Element 0 of frozen read-only arrays, by map index.
    frozen: Vec<Option<Vec<u8>>>,
    /// Maps programs may only read (`BPF_F_RDONLY_PROG`), by map index.
    readonly: Vec<bool>,
    /// For each `lddw` with a map source: index into `maps`.
    map_at: HashMap<usize, u16>,
    pub log: Log,
    pub stats: Stats,
    checkpoints: Vec<Checkpoint>,
    by_pc: Vec<Vec<u32>>,
    next_id: u32,
}

type R<T> = Result<T, Reject>;

fn acc(pc: usize, msg: String) -> Reject {
    Reject::acces(pc, msg)
}

impl<'a> Analyzer<'a> {
    pub fn new(p: Params<'a>, log: Log) -> Analyzer<'a> {
        let n = p.insns.len();
        Analyzer {
            insns: p.insns,
            prog_type: p.prog_type,
            privileged: p.privileged,
            budget: p.max_insns_processed,
            cfg: p.cfg,
            maps: Vec::new(),
            frozen: Vec::new(),
            readonly: Vec::new(),
            map_at: HashMap::new(),
            log,
            stats: Stats::default(),
            checkpoints: Vec::new(),
            by_pc: vec![Vec::new(); n],
            next_id: 0,
        }
    }

    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Resolve every map reference once, before exploring paths.
    pub fn resolve_maps(&mut self, resolve: &dyn Maps) -> R<()> {
        let mut seen: HashMap<(bool, i32), u16> = HashMap::new();
        let mut pc = 0;
        while pc < self.insns.len() {
            let i = self.insns[pc];
            if i.opc != LDDW {
                pc += 1;
                continue;
            }
            let next_imm = self.insns[pc + 1].imm;
            match i.src {
                BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_VALUE | BPF_PSEUDO_MAP_IDX | BPF_PSEUDO_MAP_IDX_VALUE => {
                    let by_idx = matches!(i.src, BPF_PSEUDO_MAP_IDX | BPF_PSEUDO_MAP_IDX_VALUE);
                    let idx = match seen.get(&(by_idx, i.imm)) {
                        Some(&idx) => idx,
                        None => {
                            let load = PseudoLoad { pc, src: i.src, imm: i.imm, next_imm };
                            let desc = resolve.describe(load).ok_or_else(|| Reject {
                                errno: EBADF,
                                pc: Some(pc),
                                message: if by_idx {
                                    format!("fd_array[{}] is not pointing to valid bpf_map", i.imm)
                                } else {
                                    format!("fd {} is not pointing to valid bpf_map", i.imm)
                                },
                            })?;
                            let idx = self.maps.len() as u16;
                            let frozen = resolve
                                .frozen_readonly_value(load)
                                .filter(|v| desc.map_type == crate::maps::map_type::ARRAY && v.len() == desc.value_size as usize);
                            self.readonly.push(frozen.is_some() || resolve.readonly_for_programs(load));
                            self.maps.push(desc);
                            self.frozen.push(frozen);
                            seen.insert((by_idx, i.imm), idx);
                            idx
                        }
                    };
                    if matches!(i.src, BPF_PSEUDO_MAP_VALUE | BPF_PSEUDO_MAP_IDX_VALUE) {
                        let desc = self.maps[idx as usize];
                        if !desc.supports_direct_value() {
                            return Err(Reject::inval(
                                Some(pc),
                                format!("map type {} does not support direct value access", desc.map_type),
                            ));
                        }
                        if next_imm < 0 || next_imm as u32 >= desc.value_size {
                            return Err(Reject::inval(
                                Some(pc),
                                format!(
                                    "invalid access to map value pointer, value_size={} off={}",
                                    desc.value_size, next_imm as u32
                                ),
                            ));
                        }
                    }
                    self.map_at.insert(pc, idx);
                }
                BPF_PSEUDO_BTF_ID => {
                    return Err(Reject::inval(
                        Some(pc),
                        "ldimm64 of a kernel variable (BPF_PSEUDO_BTF_ID) is not supported by userbpf".into(),
                    ))
                }
                _ => {}
            }
            pc += 2;
        }
        Ok(())
    }

    /// Explore every path from the entry. `Ok` means the program is safe.
    pub fn run(&mut self) -> R<()> {
        let mut entry = State { pc: 0, frames: vec![Frame::new(0, 0, 0)], refs: Vec::new() };
        entry.frames[0].regs[1] = Reg::pointer(Kind::Ctx, 0);
        // (state, its latest checkpoint, the instruction it branched off at)
        let mut work: Vec<(State, Option<u32>, Option<usize>)> = vec![(entry, None, None)];
        while let Some((mut st, mut cp, from)) = work.pop() {
            if let Some(from) = from {
                if self.log.level() >= 1 {
                    self.log.line(1, &format!("from {from} to {}: {}", st.pc, self.fmt_state(&st)));
                }
            }

            loop {
                let pc = st.pc;
                if self.cfg.prune_point[pc] {
                    match self.prune_check(&st, cp)? {
                        Prune::Pruned => {
                            self.log.line(1, &format!("{pc}: safe"));
                            self.finish_path(cp);
                            break;
                        }
                        Prune::Continue(new_cp) => cp = new_cp,
                    }
                }
                self.stats.processed += 1;
                if self.stats.processed > self.budget {
                    return Err(Reject {
                        errno: E2BIG,
                        pc: Some(pc),
                        message: format!("BPF program is too large. Processed {} insn", self.stats.processed),
                    });
                }
                self.log.insn(self.insns, pc);
                let stepped = self.step(&mut st);
                if self.log.level() >= 2 || (stepped.is_err() && self.log.level() >= 1) {
                    let line = format!("{pc}: {}", self.fmt_state(&st));
                    self.log.line(1, &line);
                }
                match stepped? {
                    Step::Next => {}
                    Step::Fork(other) => {
                        if let Some(c) = cp {
                            self.checkpoints[c as usize].branches += 1;
                        }
                        work.push((other, cp, Some(pc)));
                        if work.len() > MAX_PENDING_BRANCHES {
                            return Err(Reject {
                                errno: E2BIG,
                                pc: Some(pc),
                                message: format!("The sequence of {} jumps is too complex.", work.len()),
                            });
                        }
                    }
                    Step::Done => {
                        self.finish_path(cp);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish_path(&mut self, mut cp: Option<u32>) {
        while let Some(c) = cp {
            let ck = &mut self.checkpoints[c as usize];
            ck.branches -= 1;
            if ck.branches > 0 {
                break;
            }
            cp = ck.parent;
        }
    }

    fn is_ancestor(&self, anc: u32, mut cp: Option<u32>) -> bool {
        while let Some(c) = cp {
            if c == anc {
                return true;
            }
            cp = self.checkpoints[c as usize].parent;
        }
        false
    }

    fn prune_check(&mut self, st: &State, cp: Option<u32>) -> R<Prune> {
        let pc = st.pc;
        let live = self.cfg.live_in[pc];
        let in_callback_entry = st.cur().callback.is_some() && st.cur().func_start == pc;
        for &idx in &self.by_pc[pc] {
            let old = &self.checkpoints[idx as usize];
            if old.branches == 0 {
                if old.state.covers(st, live, false) {
                    return Ok(Prune::Pruned);
                }
            } else if in_callback_entry {
                // The helper bounds the number of callback invocations, so a
                // repeated callback state has converged.
                if old.state.covers(st, live, false) && self.is_ancestor(idx, cp) {
                    return Ok(Prune::Pruned);
                }
            } else if self.cfg.loop_header[pc] && old.state.covers(st, live, true) && self.is_ancestor(idx, cp) {
                return Err(Reject::inval(Some(pc), format!("infinite loop detected at insn {pc}")));
            }
        }
        if self.by_pc[pc].len() >= MAX_STATES_PER_INSN || self.checkpoints.len() >= MAX_TOTAL_STATES {
            return Ok(Prune::Continue(cp));
        }
        let idx = self.checkpoints.len() as u32;
        self.checkpoints.push(Checkpoint { state: st.clone(), parent: cp, branches: 1 });
        self.by_pc[pc].push(idx);
        self.stats.total_states += 1;
        self.stats.peak_states = self.stats.peak_states.max(self.checkpoints.len() as u64);
        self.stats.max_states_per_insn = self.stats.max_states_per_insn.max(self.by_pc[pc].len() as u64);
        Ok(Prune::Continue(Some(idx)))
    }

    // ---------------------------------------------------------------- log

    fn fmt_reg(&self, r: &Reg) -> String {
        let v = r.value;
        let off = match v.as_const() {
            Some(c) => format!("off={}", c as i64),
            None => format!("off=[{},{}]", v.smin, v.smax),
        };
        let id = if r.id != 0 { format!("id={},", r.id) } else { String::new() };
        match r.kind {
            Kind::NotInit => "?".into(),
            Kind::Scalar => match v.as_const() {
                Some(c) => format!("{}", c as i64),
                None if v == Scalar::UNKNOWN => format!("scalar({})", id.trim_end_matches(',')),
                None => format!("scalar({id}umin={},umax={},smin={},smax={})", v.umin, v.umax, v.smin, v.smax),
            },
            Kind::Stack { frame } => match v.as_const() {
                Some(c) if frame == 0 => format!("fp{}", c as i64),
                Some(c) => format!("fp[{frame}]{}", c as i64),
                None => format!("fp[{frame}]({off})"),
            },
            Kind::MapPtr { map } => format!("map_ptr(ks={},vs={})", self.maps[map as usize].key_size, self.maps[map as usize].value_size),
            Kind::MapValue { map } | Kind::MapValueOrNull { map } | Kind::MapKey { map } => {
                format!("{}({id}{off},ks={},vs={})", r.kind.name(), self.maps[map as usize].key_size, self.maps[map as usize].value_size)
            }
            Kind::Mem { size } | Kind::MemOrNull { size } => format!("{}({id}{off},size={size})", r.kind.name()),
            Kind::Ctx => format!("ctx({off})"),
            Kind::Func { pc } => format!("func(pc={pc})"),
        }
    }

    /// The innermost frame's registers and stack, in the kernel's style
    /// (`R1=ctx(off=0) R10=fp0 fp-8=mmmmmmmm`).
    fn fmt_state(&self, st: &State) -> String {
        let fr = st.cur();
        let mut parts = Vec::new();
        for (i, r) in fr.regs.iter().enumerate() {
            if r.kind != Kind::NotInit {
                parts.push(format!("R{i}={}", self.fmt_reg(r)));
            }
        }
        for (i, s) in fr.stack.iter().enumerate() {
            let off = -8 * (i as i64 + 1);
            match s {
                Slot::Spill(r) => parts.push(format!("fp{off}={}", self.fmt_reg(r))),
                Slot::Misc(0) => {}
                Slot::Misc(m) => {
                    let bytes: String = (0..8).rev().map(|b| if m & (1 << b) != 0 { 'm' } else { '?' }).collect();
                    parts.push(format!("fp{off}={bytes}"));
                }
            }
        }
        if st.frames.len() > 1 {
            parts.push(format!("(frame {})", st.frames.len() - 1));
        }
        parts.join(" ")
    }

    // ---------------------------------------------------------------- registers

    fn read(&self, st: &State, pc: usize, r: u8) -> R<Reg> {
        let reg = st.cur().regs[r as usize];
        if reg.kind == Kind::NotInit {
            return Err(acc(pc, format!("R{r} !read_ok")));
        }
        Ok(reg)
    }

    fn check_writable(pc: usize, r: u8) -> R<()> {
        if r == 10 {
            return Err(acc(pc, "frame pointer is read only".into()));
        }
        Ok(())
    }

    fn set(st: &mut State, r: u8, reg: Reg) {
        st.cur_mut().regs[r as usize] = reg;
    }

    /// Narrow the range of scalar register `r` and every copy of it.
    fn narrow(st: &mut State, r: u8, v: Scalar) {
        let reg = st.cur().regs[r as usize];
        if reg.kind != Kind::Scalar {
            return;
        }
        st.cur_mut().regs[r as usize].value = v;
        if reg.id != 0 {
            st.for_each_reg(|x| {
                if x.id == reg.id && x.kind == Kind::Scalar {
                    x.value = v;
                }
            });
        }
    }

    // ---------------------------------------------------------------- dispatch

    fn step(&mut self, st: &mut State) -> R<Step> {
        let pc = st.pc;
        let i = self.insns[pc];
        match i.class() {
            BPF_ALU | BPF_ALU64 => {
                self.alu(st, pc, i)?;
                st.pc += 1;
                Ok(Step::Next)
            }
            BPF_LDX => {
                Self::check_writable(pc, i.dst)?;
                let size = access_size(i.opc);
                let mut v = self.access(st, pc, i.src, i.off, size, None)?;
                if i.opc & 0xe0 == BPF_MEMSX && v.kind == Kind::Scalar {
                    v.value = match v.value.as_const() {
                        Some(c) => Scalar::constant(sign_extend(c, size * 8)),
                        None => Scalar::signed_bytes(size),
                    };
                }
                Self::set(st, i.dst, v);
                st.pc += 1;
                Ok(Step::Next)
            }
            BPF_ST => {
                let size = access_size(i.opc);
                let v = Reg::scalar(Scalar::constant(i.imm as i64 as u64));
                self.access(st, pc, i.dst, i.off, size, Some((v, None)))?;
                st.pc += 1;
                Ok(Step::Next)
            }
            BPF_STX if i.opc & 0xe0 == BPF_ATOMIC => {
                self.atomic(st, pc, i)?;
                st.pc += 1;
                Ok(Step::Next)
            }
            BPF_STX => {
                let size = access_size(i.opc);
                let v = self.read(st, pc, i.src)?;
                self.access(st, pc, i.dst, i.off, size, Some((v, Some(i.src))))?;
                st.pc += 1;
                Ok(Step::Next)
            }
            BPF_LD => {
                self.lddw(st, pc, i)?;
                st.pc += 2;
                Ok(Step::Next)
            }
            _ => self.jump(st, pc, i),
        }
    }

    fn lddw(&mut self, st: &mut State, pc: usize, i: Insn) -> R<()> {
        Self::check_writable(pc, i.dst)?;
        let next = self.insns[pc + 1];
        let reg = match i.src {
            0 => Reg::scalar(Scalar::constant(((next.imm as u32 as u64) << 32) | i.imm as u32 as u64)),
            BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_IDX => Reg::pointer(Kind::MapPtr { map: self.map_at[&pc] }, 0),
            BPF_PSEUDO_MAP_VALUE | BPF_PSEUDO_MAP_IDX_VALUE => {
                Reg::pointer(Kind::MapValue { map: self.map_at[&pc] }, next.imm as i64)
            }
            BPF_PSEUDO_FUNC => Reg::pointer(Kind::Func { pc: (pc as i64 + 1 + i.imm as i64) as u32 }, 0),
            other => return Err(Reject::inval(Some(pc), format!("unsupported ldimm64 src {other}"))),
        };
        Self::set(st, i.dst, reg);
        Ok(())
    }

    // ---------------------------------------------------------------- ALU

    fn alu(&mut self, st: &mut State, pc: usize, i: Insn) -> R<()> {
        let is64 = i.class() == BPF_ALU64;
        let op = i.opc & 0xf0;
        let x = i.opc & BPF_X != 0;
        Self::check_writable(pc, i.dst)?;
        let imm = if is64 { i.imm as i64 as u64 } else { i.imm as u32 as u64 };
        match op {
            BPF_MOV => {
                let v = if x {
                    let mut s = self.read(st, pc, i.src)?;
                    if i.off != 0 {
                        // Sign-extending move (v4).
                        if s.kind.is_pointer() {
                            return Err(acc(pc, format!("R{} sign-extension of pointer prohibited", i.src)));
                        }
                        let bits = i.off as u32;
                        let v = match s.value.as_const() {
                            Some(c) => Scalar::constant(sign_extend(c, bits)),
                            None => Scalar::signed_bytes(bits / 8),
                        };
                        Reg::scalar(if is64 { v } else { v.low32() })
                    } else if is64 {
                        // Link the copies so bounds learnt on one apply to both.
                        if s.kind == Kind::Scalar && s.value.as_const().is_none() && s.id == 0 {
                            s.id = self.new_id();
                            Self::set(st, i.src, s);
                        }
                        s
                    } else if s.kind.is_pointer() {
                        if !self.privileged {
                            return Err(acc(pc, format!("R{} partial copy of pointer", i.src)));
                        }
                        Reg::scalar(Scalar::unsigned_bytes(4))
                    } else {
                        Reg::scalar(s.value.low32())
                    }
                } else {
                    Reg::scalar(Scalar::constant(imm))
                };
                Self::set(st, i.dst, v);
            }
            BPF_NEG => {
                let d = self.read(st, pc, i.dst)?;
                if d.kind.is_pointer() {
                    return Err(acc(pc, format!("R{} pointer arithmetic with neg operator prohibited", i.dst)));
                }
                Self::set(st, i.dst, Reg::scalar(d.value.neg(is64)));
            }
            BPF_END => {
                let d = self.read(st, pc, i.dst)?;
                if d.kind.is_pointer() {
                    return Err(acc(pc, format!("R{} byte swap of pointer prohibited", i.dst)));
                }
                let bits = i.imm as u32;
                let to_le = i.opc & BPF_X == 0 && !is64;
                let v = match d.value.as_const() {
                    Some(c) => Scalar::constant(byte_swap(c, bits, to_le)),
                    None if to_le && bits == 64 => d.value,
                    None if to_le && d.value.umax < (1u64 << bits) => d.value,
                    None => Scalar::unsigned_bytes(bits / 8),
                };
                Self::set(st, i.dst, Reg::scalar(v));
            }
            _ => {
                let d = self.read(st, pc, i.dst)?;
                let s = if x { self.read(st, pc, i.src)? } else { Reg::scalar(Scalar::constant(imm)) };
                if d.kind.is_pointer() || s.kind.is_pointer() {
                    let r = self.pointer_alu(pc, i, is64, op, d, s)?;
                    Self::set(st, i.dst, r);
                } else {
                    let v = d.value.alu(op, s.value, is64, i.off == 1);
                    Self::set(st, i.dst, Reg::scalar(v));
                }
            }
        }
        Ok(())
    }

    fn pointer_alu(&self, pc: usize, i: Insn, is64: bool, op: u8, d: Reg, s: Reg) -> R<Reg> {
        let dst = i.dst;
        let name = alu_op_name(op);
        if !is64 {
            return Err(acc(pc, format!("R{dst} 32-bit pointer arithmetic prohibited")));
        }
        if d.kind.is_pointer() && s.kind.is_pointer() {
            if op == BPF_SUB && self.privileged && d.kind == s.kind {
                return Ok(Reg::unknown());
            }
            return Err(acc(pc, format!("R{dst} pointer {name} pointer prohibited")));
        }
        let (ptr, scalar) = if d.kind.is_pointer() { (d, s) } else { (s, d) };
        if !d.kind.is_pointer() && op == BPF_SUB {
            return Err(acc(pc, format!("R{dst} tried to subtract pointer from scalar")));
        }
        match op {
            BPF_ADD | BPF_SUB => {}
            BPF_AND | BPF_OR | BPF_XOR => {
                return Err(acc(pc, format!("R{dst} bitwise operator {name} on pointer prohibited")))
            }
            _ => return Err(acc(pc, format!("R{dst} pointer arithmetic with {name} operator prohibited"))),
        }
        match ptr.kind {
            Kind::MapPtr { .. } | Kind::Func { .. } => {
                return Err(acc(pc, format!("R{dst} pointer arithmetic on {} prohibited", ptr.kind.name())))
            }
            k if k.is_or_null() => {
                return Err(acc(pc, format!("R{dst} pointer arithmetic on {} prohibited, null-check it first", k.name())))
            }
            _ => {}
        }
        let off = if op == BPF_ADD { ptr.value.add(scalar.value) } else { ptr.value.sub(scalar.value) };
        Ok(Reg { kind: ptr.kind, value: off, id: ptr.id })
    }

    // ---------------------------------------------------------------- memory

    /// Check a load (`write == None`) or store of `size` bytes at
    /// `R[base] + off`. Returns the loaded value for loads.
    fn access(&mut self, st: &mut State, pc: usize, base: u8, off: i16, size: u32, write: Option<(Reg, Option<u8>)>) -> R<Reg> {
        let b = self.read(st, pc, base)?;
        let off_range = b.value.add(Scalar::constant(off as i64 as u64));
        if let Some((v, Some(vr))) = write {
            if v.kind.is_pointer() && !self.privileged && !matches!(b.kind, Kind::Stack { .. }) {
                let what = if matches!(b.kind, Kind::MapValue { .. }) { "map" } else { "mem" };
                return Err(acc(pc, format!("R{vr} leaks addr into {what}")));
            }
        }
        let unsized_result = Reg::scalar(Scalar::unsigned_bytes(size));
        match b.kind {
            Kind::Ctx => {
                if write.is_some() {
                    return Err(acc(pc, format!("invalid bpf_context access off={off} size={size}")));
                }
                match b.const_off() {
                    Some(0) => {}
                    Some(c) => return Err(acc(pc, format!("dereference of modified ctx ptr R{base} off={c} disallowed"))),
                    None => return Err(acc(pc, format!("variable ctx access var_off disallowed for R{base}"))),
                }
                if !self.prog_type.ctx_read_ok(off as i64, size) {
                    return Err(acc(pc, format!("invalid bpf_context access off={off} size={size}")));
                }
                Ok(unsized_result)
            }
            Kind::Stack { frame } => {
                let o = match off_range.as_const() {
                    Some(o) => o as i64,
                    None => return Err(acc(pc, format!("R{base} variable offset stack access prohibited"))),
                };
                if o < -(STACK_SIZE as i64) || o.saturating_add(size as i64) > 0 {
                    let dir = if write.is_some() { "write to" } else { "read from" };
                    return Err(acc(pc, format!("invalid {dir} stack R{base} off={o} size={size}")));
                }
                let fr = &mut st.frames[frame as usize];
                match write {
                    None => stack_read(fr, o, size).map_err(|m| acc(pc, m)),
                    Some((v, _)) => {
                        stack_write(fr, o, size, v, self.privileged).map_err(|m| acc(pc, m))?;
                        Ok(Reg::NOT_INIT)
                    }
                }
            }
            Kind::MapValue { map } => {
                let vs = self.maps[map as usize].value_size;
                self.check_region(pc, base, off_range, size as u64, Object::map_value(vs))?;
                if write.is_some() && self.readonly[map as usize] {
                    return Err(acc(pc, format!("write into map forbidden, value_size={vs} off={} size={size}", off_range.smin)));
                }
                if let Some(bytes) = &self.frozen[map as usize] {
                    if let Some(o) = off_range.as_const() {
                        let mut le = [0u8; 8];
                        le[..size as usize].copy_from_slice(&bytes[o as usize..o as usize + size as usize]);
                        return Ok(Reg::scalar(Scalar::constant(u64::from_le_bytes(le))));
                    }
                }
                Ok(unsized_result)
            }
            Kind::MapKey { map } => {
                if write.is_some() {
                    return Err(acc(pc, format!("R{base} cannot write into map_key")));
                }
                let ks = self.maps[map as usize].key_size;
                self.check_region(pc, base, off_range, size as u64, Object::map_key(ks))?;
                Ok(unsized_result)
            }
            Kind::Mem { size: ms } => {
                self.check_region(pc, base, off_range, size as u64, Object::mem(ms))?;
                Ok(unsized_result)
            }
            k => Err(acc(pc, format!("R{base} invalid mem access '{}'", k.name()))),
        }
    }

    /// Bounds of an access of `size` bytes at offsets `off` into an object of `limit` bytes.
    fn check_region(&self, pc: usize, regno: u8, off: Scalar, size: u64, object: Object) -> R<()> {
        let Object { limit, what, lim_name } = object;
        let (lo, hi) = (off.smin, off.smax);
        if lo < 0 && off.as_const().is_none() {
            return Err(acc(
                pc,
                format!("R{regno} min value is negative, either use unsigned index or do a if (index >=0) check."),
            ));
        }
        if hi >= MAX_VAR_SIZE as i64 {
            return Err(acc(pc, format!("R{regno} unbounded memory access, make sure to bounds check any such access")));
        }
        if lo < 0 || hi as u64 + size > limit as u64 {
            let shown = if lo < 0 { lo } else { hi };
            return Err(acc(pc, format!("invalid access to {what}, {lim_name}={limit} off={shown} size={size}")));
        }
        Ok(())
    }

    fn atomic(&mut self, st: &mut State, pc: usize, i: Insn) -> R<()> {
        let size = access_size(i.opc);
        let s = self.read(st, pc, i.src)?;
        if s.kind.is_pointer() {
            return Err(acc(pc, format!("R{} leaks addr into mem", i.src)));
        }
        if i.imm == BPF_CMPXCHG {
            let r0 = self.read(st, pc, 0)?;
            if r0.kind.is_pointer() {
                return Err(acc(pc, "R0 leaks addr into mem".into()));
            }
        }
        let b = self.read(st, pc, i.dst)?;
        if b.kind == Kind::Ctx {
            return Err(acc(pc, format!("BPF_ATOMIC stores into R{} ctx is not allowed", i.dst)));
        }
        // Atomics need natural alignment (the VM, like the CPU, requires it).
        let start = b.value.add(Scalar::constant(i.off as i64 as u64));
        // Every region starts 8-byte aligned, so the offset's alignment is the address's.
        let aligned = start.is_aligned(size as u64);
        if !aligned && b.kind.is_pointer() && !b.kind.is_or_null() && !matches!(b.kind, Kind::MapPtr { .. } | Kind::Func { .. }) {
            let what = match b.kind {
                Kind::Stack { .. } => "stack",
                Kind::MapValue { .. } => "value",
                _ => "mem",
            };
            return Err(match start.as_const() {
                Some(o) => acc(pc, format!("misaligned {what} access off {} size {size}", o as i64)),
                None => acc(pc, format!("misaligned {what} access: variable offset for an atomic on R{}", i.dst)),
            });
        }
        let old = self.access(st, pc, i.dst, i.off, size, None)?;
        if old.kind.is_pointer() {
            return Err(acc(pc, format!("R{} atomic operation on a spilled pointer prohibited", i.dst)));
        }
        self.access(st, pc, i.dst, i.off, size, Some((Reg::scalar(Scalar::unsigned_bytes(size)), None)))?;
        let fetched = Reg::scalar(Scalar::unsigned_bytes(size));
        if i.imm == BPF_CMPXCHG {
            Self::set(st, 0, fetched);
        } else if i.imm & BPF_FETCH != 0 {
            Self::check_writable(pc, i.src)?;
            Self::set(st, i.src, fetched);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- jumps

    fn jump(&mut self, st: &mut State, pc: usize, i: Insn) -> R<Step> {
        let op = i.opc & 0xf0;
        let is32 = i.class() == BPF_JMP32;
        match op {
            BPF_JA => {
                let off = if is32 { i.imm as i64 } else { i.off as i64 };
                st.pc = (pc as i64 + 1 + off) as usize;
                Ok(Step::Next)
            }
            BPF_EXIT => self.exit(st, pc),
            BPF_CALL if i.src == BPF_PSEUDO_CALL => {
                self.bpf_call(st, pc, (pc as i64 + 1 + i.imm as i64) as usize)?;
                Ok(Step::Next)
            }
            BPF_CALL => self.helper_call(st, pc, i.imm),
            _ => self.cond_jump(st, pc, i, op, is32),
        }
    }

    fn cond_jump(&mut self, st: &mut State, pc: usize, i: Insn, op: u8, is32: bool) -> R<Step> {
        let x = i.opc & BPF_X != 0;
        let target = (pc as i64 + 1 + i.off as i64) as usize;
        let d = self.read(st, pc, i.dst)?;
        let s = if x {
            self.read(st, pc, i.src)?
        } else {
            Reg::scalar(Scalar::constant(if is32 { i.imm as u32 as u64 } else { i.imm as i64 as u64 }))
        };
        if d.kind.is_pointer() || s.kind.is_pointer() {
            let (p, other) = if d.kind.is_pointer() { (d, s) } else { (s, d) };
            let null_test = !is32 && matches!(op, BPF_JEQ | BPF_JNE) && other.is_const(0);
            if null_test && p.kind.is_or_null() {
                let mut taken = st.clone();
                mark_ptr_or_null(&mut taken, p.id, op == BPF_JEQ);
                mark_ptr_or_null(st, p.id, op != BPF_JEQ);
                taken.pc = target;
                st.pc = pc + 1;
                return Ok(Step::Fork(taken));
            }
            if null_test {
                // A pointer that is known not to be NULL.
                st.pc = if op == BPF_JNE { target } else { pc + 1 };
                return Ok(Step::Next);
            }
            if !self.privileged {
                return Err(acc(pc, format!("R{} pointer comparison prohibited", i.dst)));
            }
            let mut taken = st.clone();
            taken.pc = target;
            st.pc = pc + 1;
            return Ok(Step::Fork(taken));
        }
        let refine = if is32 { scalar::refine32 } else { scalar::refine };
        let on_taken = refine(op, d.value, s.value, true);
        let on_fall = refine(op, d.value, s.value, false);
        let apply = |st: &mut State, (a, b): (Scalar, Scalar)| {
            Self::narrow(st, i.dst, a);
            if x {
                Self::narrow(st, i.src, b);
            }
        };
        match (on_taken, on_fall) {
            (Some(t), Some(f)) => {
                let mut taken = st.clone();
                apply(&mut taken, t);
                taken.pc = target;
                apply(st, f);
                st.pc = pc + 1;
                Ok(Step::Fork(taken))
            }
            (Some(t), None) => {
                apply(st, t);
                st.pc = target;
                Ok(Step::Next)
            }
            (None, Some(f)) => {
                apply(st, f);
                st.pc = pc + 1;
                Ok(Step::Next)
            }
            // Both outcomes impossible: this path cannot happen at all.
            (None, None) => Ok(Step::Done),
        }
    }

    fn exit(&mut self, st: &mut State, pc: usize) -> R<Step> {
        let r0 = st.cur().regs[0];
        if r0.kind == Kind::NotInit {
            return Err(acc(pc, "R0 !read_ok".into()));
        }
        if st.frames.len() == 1 {
            if r0.kind.is_pointer() && !self.privileged {
                return Err(acc(pc, "R0 leaks addr as return value".into()));
            }
            if let Some(r) = st.refs.first() {
                return Err(Reject::inval(Some(pc), format!("Unreleased reference id={} alloc_insn={}", r.id, r.pc)));
            }
            return Ok(Step::Done);
        }
        let callee_no = st.frame_no();
        if let Kind::Stack { frame } = r0.kind {
            if frame >= callee_no {
                return Err(Reject::inval(Some(pc), "cannot return stack pointer to the caller".into()));
            }
        }
        let callee = st.frames.pop().expect("more than one frame");
        // Pointers into the popped frame's stack now dangle.
        st.for_each_reg(|r| {
            if let Kind::Stack { frame } = r.kind {
                if frame >= callee_no {
                    *r = Reg::unknown();
                }
            }
        });
        if let Some(args) = callee.callback {
            if r0.kind != Kind::Scalar || r0.value.umax > 1 {
                return Err(acc(
                    pc,
                    format!(
                        "At callback return the register R0 has value ({:#x}; {:#x}) should have been in (0x0; 0x1)",
                        r0.value.umin, r0.value.umax
                    ),
                ));
            }
            // Either the helper calls the callback again, or it returns.
            let mut again = st.clone();
            let mut fr = Frame::new(callee.func_start, callee.return_pc, callee_no);
            fr.regs[1..6].copy_from_slice(&args);
            fr.callback = Some(args);
            again.frames.push(fr);
            again.pc = callee.func_start;
            self.return_to_caller(st, Reg::unknown(), callee.return_pc);
            return Ok(Step::Fork(again));
        }
        self.return_to_caller(st, r0, callee.return_pc);
        Ok(Step::Next)
    }

    fn return_to_caller(&self, st: &mut State, r0: Reg, return_pc: usize) {
        let fr = st.cur_mut();
        fr.regs[0] = r0;
        for r in 1..=5 {
            fr.regs[r] = Reg::NOT_INIT;
        }
        st.pc = return_pc;
    }

    fn check_depth(&self, st: &State, pc: usize) -> R<()> {
        if st.frames.len() >= MAX_CALL_FRAMES {
            return Err(Reject {
                errno: E2BIG,
                pc: Some(pc),
                message: format!("the call stack of {} frames is too deep !", st.frames.len() + 1),
            });
        }
        Ok(())
    }

    fn bpf_call(&mut self, st: &mut State, pc: usize, target: usize) -> R<()> {
        self.check_depth(st, pc)?;
        let frame_no = st.frames.len() as u8;
        let mut fr = Frame::new(target, pc + 1, frame_no);
        fr.regs[1..6].copy_from_slice(&st.cur().regs[1..6]);
        st.frames.push(fr);
        st.pc = target;
        Ok(())
    }

    // ---------------------------------------------------------------- helpers

    fn helper_call(&mut self, st: &mut State, pc: usize, id: i32) -> R<Step> {
        let proto = match u32::try_from(id).ok().and_then(helper) {
            Some(p) => p,
            None if !(0..212).contains(&id) => return Err(Reject::inval(Some(pc), format!("invalid func unknown#{id}"))),
            None => {
                return Err(Reject::inval(Some(pc), format!("unknown func helper#{id} (not provided by userbpf)")));
            }
        };
        let mut map: Option<(u16, MapDesc)> = None;
        let mut pending_mem: Option<(u8, Reg, bool)> = None;
        let mut release: Option<u32> = None;
        let mut callback: Option<u32> = None;
        let mut callback_ctx = Reg::scalar(Scalar::constant(0));
        let mut alloc_size = 0u32;
        // Largest value of the size argument (the kernel's msize_max_value).
        let mut msize_max = 0u64;
        for (k, kind) in proto.args.iter().copied().enumerate() {
            let regno = k as u8 + 1;
            if kind == ArgKind::DontCare {
                continue;
            }
            let reg = self.read(st, pc, regno)?;
            let type_err = |expected: &str| acc(pc, format!("R{regno} type={} expected={expected}", reg.kind.name()));
            match kind {
                ArgKind::DontCare => {}
                ArgKind::Anything => {
                    if reg.kind.is_pointer() && !self.privileged {
                        return Err(acc(pc, format!("R{regno} leaks addr into helper function")));
                    }
                }
                ArgKind::ConstMapPtr => {
                    let Kind::MapPtr { map: m } = reg.kind else { return Err(type_err("map_ptr")) };
                    let desc = self.maps[m as usize];
                    if !proto.map_types.contains(&desc.map_type) {
                        return Err(Reject::inval(
                            Some(pc),
                            format!("cannot pass map_type {} into func {}#{}", desc.map_type, proto.name, proto.id),
                        ));
                    }
                    map = Some((m, desc));
                }
                ArgKind::MapKey | ArgKind::MapValue | ArgKind::UninitMapValue => {
                    let (_, desc) = map.expect("helper table: map argument follows its map");
                    let size = if kind == ArgKind::MapKey { desc.key_size } else { desc.value_size };
                    self.helper_mem(st, pc, regno, reg, size as u64, kind == ArgKind::UninitMapValue)?;
                }
                ArgKind::Mem | ArgKind::MemOrNull | ArgKind::UninitMem => {
                    if kind == ArgKind::MemOrNull && reg.is_const(0) {
                        pending_mem = Some((regno, reg, false));
                    } else {
                        if !matches!(reg.kind, Kind::Stack { .. } | Kind::MapValue { .. } | Kind::Mem { .. } | Kind::MapKey { .. }) {
                            return Err(type_err("fp, map_key, map_value, mem"));
                        }
                        pending_mem = Some((regno, reg, kind == ArgKind::UninitMem));
                    }
                }
                ArgKind::ConstSize | ArgKind::ConstSizeOrZero => {
                    if reg.kind != Kind::Scalar {
                        return Err(type_err("scalar"));
                    }
                    let v = reg.value;
                    if v.smin < 0 {
                        return Err(acc(pc, format!("R{regno} min value is negative, either use unsigned or 'var &= const'")));
                    }
                    if v.umax >= MAX_VAR_SIZE {
                        return Err(acc(pc, format!("R{regno} unbounded memory access, use 'var &= const' or 'if (var < const)'")));
                    }
                    if kind == ArgKind::ConstSize && v.umin == 0 {
                        return Err(acc(pc, format!("R{regno} invalid zero-sized read")));
                    }
                    msize_max = v.umax;
                    let (mregno, mreg, write) = pending_mem.take().expect("helper table: size follows memory");
                    if mreg.is_const(0) && mreg.kind == Kind::Scalar {
                        if v.umax != 0 {
                            return Err(acc(pc, format!("R{regno} must be 0 when R{mregno} is NULL")));
                        }
                    } else {
                        self.helper_mem(st, pc, mregno, mreg, v.umax, write)?;
                    }
                }
                ArgKind::ConstAllocSizeOrZero => {
                    match (reg.kind, reg.value.as_const()) {
                        (Kind::Scalar, Some(c)) if c < MAX_VAR_SIZE => alloc_size = c as u32,
                        (Kind::Scalar, Some(_)) => return Err(acc(pc, format!("R{regno} unbounded memory access"))),
                        _ => return Err(acc(pc, format!("R{regno} is not a known constant'"))),
                    }
                }
                ArgKind::Ctx => {
                    if reg.kind != Kind::Ctx {
                        return Err(type_err("ctx"));
                    }
                    if reg.const_off() != Some(0) {
                        return Err(acc(pc, format!("dereference of modified ctx ptr R{regno} disallowed")));
                    }
                }
                ArgKind::ReleaseAllocMem => {
                    let Kind::Mem { .. } = reg.kind else { return Err(type_err("ringbuf_mem")) };
                    if reg.const_off() != Some(0) {
                        return Err(Reject::inval(Some(pc), format!("R{regno} must have zero offset when passed to release func")));
                    }
                    if !st.refs.iter().any(|r| r.id == reg.id) {
                        return Err(acc(pc, format!("R{regno} reference has not been acquired before")));
                    }
                    release = Some(reg.id);
                }
                ArgKind::ConstStr => {
                    let Kind::MapValue { map: m } = reg.kind else { return Err(type_err("map_value")) };
                    let vs = self.maps[m as usize].value_size as i64;
                    let off = match reg.const_off() {
                        Some(o) if (0..vs).contains(&o) => o as usize,
                        _ => return Err(acc(pc, format!("R{regno} the string must be at a constant offset inside the map value"))),
                    };
                    // The kernel's check_reg_const_str: the string lives in
                    // a frozen read-only array (so no program or loader can
                    // change it later) and ends inside the value; helpers
                    // then read it without bounds.
                    let Some(bytes) = &self.frozen[m as usize] else {
                        return Err(acc(pc, format!("R{regno} does not point to a readonly map'")));
                    };
                    if !bytes[off..].contains(&0) {
                        return Err(Reject::inval(Some(pc), "string is not zero-terminated".into()));
                    }
                }
                ArgKind::Callback => {
                    let Kind::Func { pc: f } = reg.kind else { return Err(type_err("func")) };
                    callback = Some(f);
                }
                ArgKind::CallbackCtx => {
                    if !(reg.is_const(0) || matches!(reg.kind, Kind::Stack { .. })) {
                        return Err(type_err("fp"));
                    }
                    callback_ctx = reg;
                }
            }
        }
        if let Some(id) = release {
            st.refs.retain(|r| r.id != id);
            st.for_each_reg(|r| {
                if r.id == id && matches!(r.kind, Kind::Mem { .. }) {
                    *r = Reg::unknown();
                }
            });
        }
        if let Some(cb) = callback {
            return self.enter_callback(st, pc, proto.id, cb as usize, map, callback_ctx);
        }
        let r0 = match proto.ret {
            RetKind::Integer if proto.ret_u32 => Reg::scalar(Scalar::unsigned_bytes(4)),
            // The kernel's do_refine_retval_range: these return the bytes
            // written (at most the size argument) or -errno. bpftrace
            // 0.20+ bounds its ustack hashing loop by bpf_get_stack's result.
            RetKind::Integer if helpers::RETURNS_SIZE_OR_ERRNO.contains(&proto.id) => {
                Reg::scalar(Scalar::srange(-MAX_ERRNO, msize_max.min(i64::MAX as u64) as i64))
            }
            RetKind::Integer => Reg::unknown(),
            RetKind::Void => Reg::NOT_INIT,
            RetKind::MapValueOrNull => {
                let (m, _) = map.expect("helper table: lookup has a map");
                let mut r = Reg::pointer(Kind::MapValueOrNull { map: m }, 0);
                r.id = self.new_id();
                r
            }
            RetKind::AllocMemOrNull => {
                let mut r = Reg::pointer(Kind::MemOrNull { size: alloc_size }, 0);
                r.id = self.new_id();
                st.refs.push(Reference { id: r.id, pc });
                r
            }
        };
        self.return_to_caller(st, r0, pc + 1);
        Ok(Step::Next)
    }

    /// `bpf_loop` / `bpf_for_each_map_elem`: the helper may return without
    /// calling the callback, or call it (again and again, see `exit`).
    fn enter_callback(&mut self, st: &mut State, pc: usize, helper_id: u32, cb: usize, map: Option<(u16, MapDesc)>, ctx: Reg) -> R<Step> {
        self.check_depth(st, pc)?;
        if !self.cfg.func_starts.contains(&cb) {
            return Err(acc(pc, format!("callback at insn {cb} is not a function")));
        }
        let args: [Reg; 5] = match (helper_id, map) {
            (164, Some((m, _))) => [
                Reg::pointer(Kind::MapPtr { map: m }, 0),
                Reg::pointer(Kind::MapKey { map: m }, 0),
                Reg::pointer(Kind::MapValue { map: m }, 0),
                ctx,
                Reg::NOT_INIT,
            ],
            _ => [Reg::scalar(Scalar::urange(0, MAX_LOOPS - 1)), ctx, Reg::NOT_INIT, Reg::NOT_INIT, Reg::NOT_INIT],
        };
        let mut call = st.clone();
        let frame_no = call.frames.len() as u8;
        let mut fr = Frame::new(cb, pc + 1, frame_no);
        fr.regs[1..6].copy_from_slice(&args);
        fr.callback = Some(args);
        call.frames.push(fr);
        call.pc = cb;
        // The path where the helper never calls back.
        self.return_to_caller(st, Reg::unknown(), pc + 1);
        Ok(Step::Fork(call))
    }

    /// A helper's access to `size` bytes at `reg` (read, or written when `write`).
    fn helper_mem(&mut self, st: &mut State, pc: usize, regno: u8, reg: Reg, size: u64, write: bool) -> R<()> {
        match reg.kind {
            Kind::Stack { frame } => {
                let o = reg.const_off().ok_or_else(|| acc(pc, format!("R{regno} variable offset stack access prohibited")))?;
                if size == 0 {
                    return Ok(());
                }
                if o < -(STACK_SIZE as i64) || o.saturating_add(size as i64) > 0 {
                    let dir = if write { "write to" } else { "read from" };
                    return Err(Reject::inval(Some(pc), format!("invalid {dir} stack R{regno} off={o} size={size}")));
                }
                let fr = &mut st.frames[frame as usize];
                for k in 0..size as i64 {
                    let a = o + k;
                    let (slot, bit) = slot_of(a);
                    if write {
                        let s = fr.slot_mut(slot);
                        *s = match *s {
                            Slot::Spill(_) => Slot::Misc(0xff),
                            Slot::Misc(m) => Slot::Misc(m | (1 << bit)),
                        };
                    } else {
                        let ok = match fr.slot(slot) {
                            Slot::Spill(r) => r.kind == Kind::Scalar || self.privileged,
                            Slot::Misc(m) => m & (1 << bit) != 0,
                        };
                        if !ok {
                            return Err(acc(pc, format!("invalid indirect read from stack R{regno} off {o}+{k} size {size}")));
                        }
                    }
                }
                Ok(())
            }
            Kind::MapValue { map } => {
                let vs = self.maps[map as usize].value_size;
                if write && self.readonly[map as usize] {
                    return Err(acc(pc, format!("write into map forbidden, value_size={vs} off={} size={size}", reg.value.smin)));
                }
                self.check_region(pc, regno, reg.value, size, Object::map_value(vs))
            }
            Kind::MapKey { map } if !write => {
                let ks = self.maps[map as usize].key_size;
                self.check_region(pc, regno, reg.value, size, Object::map_key(ks))
            }
            Kind::Mem { size: ms } => self.check_region(pc, regno, reg.value, size, Object::mem(ms)),
            k => Err(acc(pc, format!("R{regno} type={} expected=fp, map_key, map_value, mem", k.name()))),
        }
    }
}

/// An object a pointer points into, for bounds checks and their messages.
#[derive(Clone, Copy)]
struct Object {
    limit: u32,
    what: &'static str,
    lim_name: &'static str,
}

impl Object {
    fn map_value(value_size: u32) -> Object {
        Object { limit: value_size, what: "map value", lim_name: "value_size" }
    }
    fn map_key(key_size: u32) -> Object {
        Object { limit: key_size, what: "map key", lim_name: "key_size" }
    }
    fn mem(size: u32) -> Object {
        Object { limit: size, what: "memory", lim_name: "mem_size" }
    }
}

enum Prune {
    Pruned,
    Continue(Option<u32>),
}

fn access_size(opc: u8) -> u32 {
    match opc & 0x18 {
        BPF_W => 4,
        BPF_H => 2,
        BPF_B => 1,
        _ => 8,
    }
}

fn sign_extend(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        let shift = 64 - bits;
        (((v << shift) as i64) >> shift) as u64
    }
}

fn byte_swap(v: u64, bits: u32, to_le: bool) -> u64 {
    // The host is little-endian: `le` truncates, `be`/`bswap` swap.
    match (bits, to_le) {
        (16, true) => v as u16 as u64,
        (32, true) => v as u32 as u64,
        (64, true) => v,
        (16, false) => (v as u16).swap_bytes() as u64,
        (32, false) => (v as u32).swap_bytes() as u64,
        _ => v.swap_bytes(),
    }
}

/// Slot index and byte-within-slot of stack offset `a` (negative).
fn slot_of(a: i64) -> (usize, u32) {
    let slot = ((-a - 1) / 8) as usize;
    let bit = (a + 8 * (slot as i64 + 1)) as u32;
    (slot, bit)
}

fn stack_read(fr: &Frame, o: i64, size: u32) -> Result<Reg, String> {
    let (slot, bit) = slot_of(o);
    if size == 8 && bit == 0 {
        return match fr.slot(slot) {
            Slot::Spill(r) => Ok(r),
            Slot::Misc(0xff) => Ok(Reg::unknown()),
            Slot::Misc(m) => {
                let k = (0..8).find(|b| m & (1 << b) == 0).unwrap_or(0);
                Err(format!("invalid read from stack off {o}+{k} size {size}"))
            }
        };
    }
    for k in 0..size as i64 {
        let (s, b) = slot_of(o + k);
        match fr.slot(s) {
            Slot::Spill(r) if r.kind.is_pointer() => return Err("invalid size of register fill".into()),
            Slot::Spill(_) => {}
            Slot::Misc(m) => {
                if m & (1 << b) == 0 {
                    return Err(format!("invalid read from stack off {o}+{k} size {size}"));
                }
            }
        }
    }
    // A narrow read of the low bytes of a spilled constant keeps its value.
    let same_slot = slot_of(o + size as i64 - 1).0 == slot;
    if let (true, 0, Slot::Spill(r)) = (same_slot, bit, fr.slot(slot)) {
        if let Some(c) = r.value.as_const() {
            return Ok(Reg::scalar(Scalar::constant(c & ((1u64 << (size * 8)) - 1))));
        }
    }
    Ok(Reg::scalar(Scalar::unsigned_bytes(size)))
}

fn stack_write(fr: &mut Frame, o: i64, size: u32, v: Reg, privileged: bool) -> Result<(), String> {
    let (slot, bit) = slot_of(o);
    if size == 8 && bit == 0 {
        *fr.slot_mut(slot) = Slot::Spill(v);
        return Ok(());
    }
    if v.kind.is_pointer() && !privileged {
        return Err("invalid size of register spill".into());
    }
    for k in 0..size as i64 {
        let (s, b) = slot_of(o + k);
        let cur = fr.slot_mut(s);
        *cur = match *cur {
            Slot::Spill(r) => {
                if r.kind.is_pointer() && !privileged {
                    return Err("attempt to corrupt spilled pointer on stack".into());
                }
                Slot::Misc(0xff)
            }
            Slot::Misc(m) => Slot::Misc(m | (1 << b)),
        };
    }
    Ok(())
}

/// Resolve an or-null pointer (and its copies) after a NULL test.
fn mark_ptr_or_null(st: &mut State, id: u32, is_null: bool) {
    if is_null {
        st.refs.retain(|r| r.id != id);
    }
    st.for_each_reg(|r| {
        if r.id != id || !r.kind.is_or_null() {
            return;
        }
        *r = if is_null {
            Reg::scalar(Scalar::constant(0))
        } else {
            match r.kind {
                Kind::MapValueOrNull { map } => Reg { kind: Kind::MapValue { map }, value: r.value, id: 0 },
                Kind::MemOrNull { size } => Reg { kind: Kind::Mem { size }, value: r.value, id },
                _ => *r,
            }
        };
    });
}
