//! The embedding API: how other crates (agent, syscall-server, tools, tests)
//! hand instructions to the VM, resolve `lddw` pseudo sources, register
//! helpers, and run a program interpreted or JIT-compiled.
//!
//! Contract (shared by interpreter and JIT, relied on by the agent):
//! - A helper is a plain C-ABI function taking r1..r5 plus the *environment*
//!   pointer the embedder passed to `run` (its per-call context: the agent
//!   puts the probe's cookie, function ip, map handles there). Plain function
//!   pointers keep a JIT helper call to one indirect `call`.
//! - `lddw` pseudo sources (map fd, map value, map index, function, ...) are
//!   resolved once at load time through a callback; afterwards the program only
//!   holds 64-bit immediates (for maps: whatever handle the embedder chose,
//!   typically a pointer to its process-local map object).
//! - Tail calls (helper 12) go through a resolver the embedder provides, which
//!   maps (prog-array handle, index) to another loaded program.

use std::ffi::c_void;

use crate::insn::*;

pub use crate::error::LoadError;

/// C ABI of a helper: `(r1, r2, r3, r4, r5, env) -> r0`.
pub type HelperFn = unsafe extern "C" fn(u64, u64, u64, u64, u64, *mut c_void) -> u64;

/// Helper table indexed by helper id (the `imm` of `call` with src 0).
#[derive(Clone, Default)]
pub struct Helpers {
    table: Vec<Option<HelperFn>>,
}

impl Helpers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register (or replace) the helper with kernel id `id`. The table is
    /// dense (the JIT indexes it by id), so ids must stay small: below
    /// [`Helpers::MAX_ID`].
    pub fn register(&mut self, id: u32, f: HelperFn) -> &mut Self {
        assert!(id < Self::MAX_ID, "helper id {id} beyond the dense table's limit");
        let id = id as usize;
        if self.table.len() <= id {
            self.table.resize(id + 1, None);
        }
        self.table[id] = Some(f);
        self
    }

    /// Bound on helper ids (kernel helpers are below 212; userbpf's kfuncs
    /// follow at `verifier::KFUNC_BASE`).
    pub const MAX_ID: u32 = 4096;

    #[inline]
    pub fn get(&self, id: u32) -> Option<HelperFn> {
        self.table.get(id as usize).copied().flatten()
    }

    /// Raw view for the JIT (index = helper id).
    pub fn as_slice(&self) -> &[Option<HelperFn>] {
        &self.table
    }
}

/// A `lddw` with a pseudo source, handed to the embedder's resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PseudoLoad {
    /// Index of the first slot of the `lddw`.
    pub pc: usize,
    /// `src` field: one of `insn::BPF_PSEUDO_*`.
    pub src: u8,
    /// First slot's imm (map fd, fd_array index, ...).
    pub imm: i32,
    /// Second slot's imm (value offset for the `*_VALUE` kinds).
    pub next_imm: i32,
}

/// Largest program accepted, in instruction slots (the kernel's limit for
/// privileged loaders, `BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;

/// What a tail call jumps to: a loaded program and, when it was JIT-compiled,
/// the entry point of its machine code (null when only interpreted).
///
/// The embedder owns these (typically one per slot of a prog-array map) and
/// must keep them alive and unchanged while any run can reach them.
#[repr(C)]
pub struct TailTarget {
    pub program: *const Program,
    pub jit_entry: *const u8,
}

/// Resolves a tail call `bpf_tail_call(ctx, prog_array, index)` (helper 12):
/// given the prog-array handle (whatever the embedder's `lddw` resolver
/// returned for the map) and the index, returns the target or null when the
/// slot is empty / the index is out of range; the tail call then falls
/// through, as in the kernel. `env` is the pointer passed to the run.
///
/// It runs on the program's hot path: it must not block or allocate.
pub type TailCallResolver =
    unsafe extern "C" fn(prog_array: u64, index: u64, env: *mut c_void) -> *const TailTarget;

/// A structurally valid program, with every `lddw` pseudo source resolved.
///
/// Guarantees relied on by the interpreter and the JIT (established by
/// [`Program::load`]):
/// - every opcode is known and every reserved field is zero; registers are
///   r0..r10 and r10 is never written;
/// - every jump and local call lands on an instruction start inside the
///   program (never the second slot of an `lddw`), jumps stay within their
///   function, and every function ends with `exit` or `ja`, so execution
///   cannot fall off the end;
/// - `lddw` has src 0 and its second slot follows (opcode 0, imm = upper
///   32 bits), so slot numbering is the kernel's;
/// - BPF-to-BPF calls are not recursive and nest at most
///   [`MAX_CALL_FRAMES`] frames deep (main included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Box<[Insn]>,
    function_entries: Box<[usize]>,
}

impl Program {
    /// Validate `insns` and resolve their `lddw` pseudo sources through
    /// `resolve` (called once per pseudo `lddw`, in program order, after all
    /// structural checks passed). Never panics on bad input: every problem is
    /// a [`LoadError`] naming the instruction index.
    pub fn load(
        insns: &[Insn],
        resolve: &mut dyn FnMut(PseudoLoad) -> Result<u64, String>,
    ) -> Result<Program, LoadError> {
        let layout = validate(insns)?;
        let mut resolved: Box<[Insn]> = insns.into();
        for &pc in &layout.pseudo_loads {
            let first = insns[pc];
            let request =
                PseudoLoad { pc, src: first.src, imm: first.imm, next_imm: insns[pc + 1].imm };
            let value = resolve(request).map_err(|message| LoadError::PseudoLoad {
                pc,
                src: first.src,
                message,
            })?;
            resolved[pc] = Insn { src: 0, imm: value as u32 as i32, ..first };
            resolved[pc + 1] = Insn { imm: (value >> 32) as u32 as i32, ..Insn::default() };
        }
        Ok(Program { insns: resolved, function_entries: layout.function_entries.into() })
    }

    /// [`Program::load`] for programs that use no pseudo `lddw` (tests,
    /// conformance vectors): any pseudo source is rejected.
    pub fn load_plain(insns: &[Insn]) -> Result<Program, LoadError> {
        Program::load(insns, &mut |p: PseudoLoad| {
            Err(format!("no resolver for pseudo source {} (map fd/index {})", p.src, p.imm))
        })
    }

    /// The resolved instructions (`lddw` keeps its two slots).
    #[inline]
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Number of instruction slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false: a loaded program has at least one instruction.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Entry slot of every function (sorted; `0` is the main function; the
    /// others are targets of local calls or of `lddw` `BPF_PSEUDO_FUNC`).
    pub fn function_entries(&self) -> &[usize] {
        &self.function_entries
    }
}

/// What validation learned about the program's layout.
struct Layout {
    function_entries: Vec<usize>,
    pseudo_loads: Vec<usize>,
}

fn reserved(pc: usize, field: &'static str, found: i64) -> Result<(), LoadError> {
    if found == 0 {
        Ok(())
    } else {
        Err(LoadError::ReservedField { pc, field, expected: "0", found })
    }
}

fn readable_reg(pc: usize, field: &'static str, reg: u8) -> Result<(), LoadError> {
    if (reg as usize) < NUM_REGS {
        Ok(())
    } else {
        Err(LoadError::BadRegister { pc, field, reg })
    }
}

fn writable_reg(pc: usize, reg: u8) -> Result<(), LoadError> {
    readable_reg(pc, "dst", reg)?;
    if reg == 10 {
        Err(LoadError::WriteToFramePointer { pc })
    } else {
        Ok(())
    }
}

fn unknown(pc: usize, insn: Insn) -> LoadError {
    LoadError::UnknownOpcode { pc, opcode: insn.opc }
}

/// Field checks of one instruction (not its targets). `next` is the
/// following slot, for `lddw`.
fn check_fields(pc: usize, insn: Insn, next: Option<Insn>) -> Result<(), LoadError> {
    let op = insn.opc & 0xf0;
    let is_reg_source = insn.opc & BPF_X != 0;
    match insn.class() {
        BPF_LD => {
            if insn.opc != LDDW {
                return match insn.opc & 0xe0 {
                    BPF_ABS | BPF_IND => Err(LoadError::Unsupported {
                        pc,
                        feature: "legacy packet access (BPF_LD|BPF_ABS/BPF_IND)",
                    }),
                    _ => Err(unknown(pc, insn)),
                };
            }
            writable_reg(pc, insn.dst)?;
            reserved(pc, "offset", insn.off as i64)?;
            match insn.src {
                0 | BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_VALUE | BPF_PSEUDO_BTF_ID
                | BPF_PSEUDO_FUNC | BPF_PSEUDO_MAP_IDX | BPF_PSEUDO_MAP_IDX_VALUE => {}
                src => {
                    return Err(LoadError::InvalidField {
                        pc,
                        field: "src",
                        found: src as i64,
                        reason: "not a known lddw pseudo source",
                    })
                }
            }
            let Some(second) = next else {
                return Err(LoadError::TruncatedLddw { pc });
            };
            if second.opc != 0 || second.dst != 0 || second.src != 0 || second.off != 0 {
                return Err(LoadError::BadLddwSecondSlot { pc: pc + 1 });
            }
            Ok(())
        }
        BPF_LDX => {
            let mode = insn.opc & 0xe0;
            let size = insn.opc & 0x18;
            if !(mode == BPF_MEM || (mode == BPF_MEMSX && size != BPF_DW)) {
                return Err(unknown(pc, insn));
            }
            writable_reg(pc, insn.dst)?;
            readable_reg(pc, "src", insn.src)?;
            reserved(pc, "imm", insn.imm as i64)
        }
        BPF_ST => {
            if insn.opc & 0xe0 != BPF_MEM {
                return Err(unknown(pc, insn));
            }
            readable_reg(pc, "dst", insn.dst)?;
            reserved(pc, "src", insn.src as i64)
        }
        BPF_STX => {
            let mode = insn.opc & 0xe0;
            let size = insn.opc & 0x18;
            readable_reg(pc, "dst", insn.dst)?;
            readable_reg(pc, "src", insn.src)?;
            match mode {
                BPF_MEM => reserved(pc, "imm", insn.imm as i64),
                // Linux 6.15's BPF_LOAD_ACQ / BPF_STORE_REL (not in RFC 9669).
                BPF_ATOMIC if matches!(insn.imm, 0x100 | 0x110) => Err(LoadError::Unsupported {
                    pc,
                    feature: "load-acquire/store-release atomics",
                }),
                BPF_ATOMIC if size == BPF_W || size == BPF_DW => {
                    let valid = matches!(
                        insn.imm,
                        0x00 | 0x01 | 0x40 | 0x41 | 0x50 | 0x51 | 0xa0 | 0xa1 | BPF_XCHG | BPF_CMPXCHG
                    );
                    if valid {
                        Ok(())
                    } else {
                        Err(LoadError::InvalidField {
                            pc,
                            field: "imm",
                            found: insn.imm as i64,
                            reason: "not an atomic operation",
                        })
                    }
                }
                _ => Err(unknown(pc, insn)),
            }
        }
        BPF_ALU | BPF_ALU64 => {
            let is64 = insn.class() == BPF_ALU64;
            writable_reg(pc, insn.dst)?;
            match op {
                BPF_NEG => {
                    if is_reg_source {
                        return Err(unknown(pc, insn));
                    }
                    reserved(pc, "src", insn.src as i64)?;
                    reserved(pc, "offset", insn.off as i64)?;
                    return reserved(pc, "imm", insn.imm as i64);
                }
                BPF_END => {
                    if is64 && is_reg_source {
                        return Err(unknown(pc, insn));
                    }
                    reserved(pc, "src", insn.src as i64)?;
                    reserved(pc, "offset", insn.off as i64)?;
                    return match insn.imm {
                        16 | 32 | 64 => Ok(()),
                        imm => Err(LoadError::InvalidField {
                            pc,
                            field: "imm",
                            found: imm as i64,
                            reason: "byte swap width must be 16, 32 or 64",
                        }),
                    };
                }
                0xe0 | 0xf0 => return Err(unknown(pc, insn)),
                _ => {}
            }
            if is_reg_source {
                readable_reg(pc, "src", insn.src)?;
                reserved(pc, "imm", insn.imm as i64)?;
            } else {
                reserved(pc, "src", insn.src as i64)?;
            }
            let offset_ok = match op {
                BPF_DIV | BPF_MOD => insn.off == 0 || insn.off == 1,
                BPF_MOV if is_reg_source => match insn.off {
                    0 | 8 | 16 => true,
                    32 => is64,
                    _ => false,
                },
                _ => insn.off == 0,
            };
            if offset_ok {
                Ok(())
            } else if matches!(op, BPF_DIV | BPF_MOD) || (op == BPF_MOV && is_reg_source) {
                Err(LoadError::InvalidField {
                    pc,
                    field: "offset",
                    found: insn.off as i64,
                    reason: if op == BPF_MOV {
                        "movsx width must be 8, 16 (or 32 in alu64)"
                    } else {
                        "signed division flag must be 0 or 1"
                    },
                })
            } else {
                reserved(pc, "offset", insn.off as i64)
            }
        }
        BPF_JMP | BPF_JMP32 => {
            let is32 = insn.class() == BPF_JMP32;
            match op {
                BPF_JA => {
                    if is_reg_source {
                        return Err(unknown(pc, insn));
                    }
                    reserved(pc, "dst", insn.dst as i64)?;
                    reserved(pc, "src", insn.src as i64)?;
                    if is32 {
                        reserved(pc, "offset", insn.off as i64)
                    } else {
                        reserved(pc, "imm", insn.imm as i64)
                    }
                }
                BPF_CALL => {
                    if is32 {
                        return Err(unknown(pc, insn));
                    }
                    reserved(pc, "offset", insn.off as i64)?;
                    if is_reg_source {
                        // callx: the helper id is in the dst register.
                        readable_reg(pc, "dst", insn.dst)?;
                        reserved(pc, "src", insn.src as i64)?;
                        return reserved(pc, "imm", insn.imm as i64);
                    }
                    reserved(pc, "dst", insn.dst as i64)?;
                    match insn.src {
                        0 | BPF_PSEUDO_CALL => Ok(()),
                        BPF_PSEUDO_KFUNC_CALL => Err(LoadError::Unsupported {
                            pc,
                            feature: "kernel function call (kfunc)",
                        }),
                        src => Err(LoadError::InvalidField {
                            pc,
                            field: "src",
                            found: src as i64,
                            reason: "call source must be 0 (helper) or 1 (local function)",
                        }),
                    }
                }
                BPF_EXIT => {
                    if is32 || is_reg_source {
                        return Err(unknown(pc, insn));
                    }
                    reserved(pc, "dst", insn.dst as i64)?;
                    reserved(pc, "src", insn.src as i64)?;
                    reserved(pc, "offset", insn.off as i64)?;
                    reserved(pc, "imm", insn.imm as i64)
                }
                0xe0 | 0xf0 => Err(unknown(pc, insn)),
                _ => {
                    readable_reg(pc, "dst", insn.dst)?;
                    if is_reg_source {
                        readable_reg(pc, "src", insn.src)?;
                        reserved(pc, "imm", insn.imm as i64)
                    } else {
                        reserved(pc, "src", insn.src as i64)
                    }
                }
            }
        }
        _ => unreachable!("class is 3 bits"),
    }
}

/// True when control never continues to the next slot after `insn`.
fn ends_block(insn: Insn) -> bool {
    insn.opc == EXIT || insn.opc == JA || insn.opc == JA32
}

fn validate(insns: &[Insn]) -> Result<Layout, LoadError> {
    let len = insns.len();
    if len == 0 {
        return Err(LoadError::Empty);
    }
    if len > MAX_INSNS {
        return Err(LoadError::TooLong { len, max: MAX_INSNS });
    }

    // Pass 1: fields of every instruction; mark lddw second slots.
    let mut is_second_slot = vec![false; len];
    let mut pseudo_loads = Vec::new();
    let mut has_exit = false;
    let mut pc = 0;
    while pc < len {
        let insn = insns[pc];
        check_fields(pc, insn, insns.get(pc + 1).copied())?;
        has_exit |= insn.opc == EXIT;
        if insn.is_lddw() {
            if insn.src != 0 {
                pseudo_loads.push(pc);
            }
            is_second_slot[pc + 1] = true;
            pc += 2;
        } else {
            pc += 1;
        }
    }
    if !has_exit {
        return Err(LoadError::NoExit);
    }

    let check_target = |pc: usize, target: i64| -> Result<usize, LoadError> {
        if target < 0 || target >= len as i64 {
            return Err(LoadError::JumpOutOfRange { pc, target, len });
        }
        let target = target as usize;
        if is_second_slot[target] {
            return Err(LoadError::JumpIntoLddw { pc, target });
        }
        Ok(target)
    };

    // Pass 2: jump and call targets; collect function entries.
    let mut function_entries = vec![0usize];
    for (pc, &insn) in insns.iter().enumerate() {
        if is_second_slot[pc] {
            continue;
        }
        if let Some(target) = insn.jump_target(pc) {
            check_target(pc, target)?;
        } else if let Some(target) = insn.local_call_target(pc) {
            let target = check_target(pc, target)
                .map_err(|_| LoadError::BadCallTarget { pc, target })?;
            function_entries.push(target);
        } else if insn.is_lddw() && insn.src == BPF_PSEUDO_FUNC {
            let target = pc as i64 + 1 + insn.imm as i64;
            let target = check_target(pc, target)
                .map_err(|_| LoadError::BadCallTarget { pc, target })?;
            function_entries.push(target);
        }
    }
    function_entries.sort_unstable();
    function_entries.dedup();

    // Pass 3: every function ends with exit/ja and jumps stay inside it.
    let function_of = |pc: usize| -> usize {
        let i = function_entries.partition_point(|&entry| entry <= pc);
        function_entries[i - 1]
    };
    for (i, &entry) in function_entries.iter().enumerate() {
        let end = function_entries.get(i + 1).copied().unwrap_or(len);
        let mut last = end - 1;
        if is_second_slot[last] {
            last -= 1;
        }
        if !ends_block(insns[last]) || is_second_slot[end - 1] {
            let what = match (entry, end == len) {
                (0, true) => "the program",
                (0, false) => "the main function",
                _ => "a function",
            };
            return Err(LoadError::FallsOffEnd { pc: end - 1, what });
        }
        for pc in entry..end {
            if is_second_slot[pc] {
                continue;
            }
            if let Some(target) = insns[pc].jump_target(pc) {
                let target = target as usize;
                if !(entry..end).contains(&target) {
                    return Err(LoadError::JumpAcrossFunction {
                        pc,
                        target,
                        function: function_of(target),
                    });
                }
            }
        }
    }

    // Pass 4: the call graph is acyclic and at most MAX_CALL_FRAMES deep.
    check_call_depth(insns, &function_entries, &is_second_slot)?;

    Ok(Layout { function_entries, pseudo_loads })
}

fn check_call_depth(
    insns: &[Insn],
    function_entries: &[usize],
    is_second_slot: &[bool],
) -> Result<(), LoadError> {
    let len = insns.len();
    let index_of = |entry: usize| function_entries.binary_search(&entry).expect("entry is a function");
    // Callees of each function, as (call pc, callee index).
    let callees: Vec<Vec<(usize, usize)>> = function_entries
        .iter()
        .enumerate()
        .map(|(i, &entry)| {
            let end = function_entries.get(i + 1).copied().unwrap_or(len);
            (entry..end)
                .filter(|&pc| !is_second_slot[pc])
                .filter_map(|pc| insns[pc].local_call_target(pc).map(|t| (pc, index_of(t as usize))))
                .collect()
        })
        .collect();

    // Depth-first search bounded by MAX_CALL_FRAMES, memoising the depth of
    // finished functions; recursion depth is therefore at most 9.
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        OnPath,
        Done(usize),
    }
    fn depth(
        f: usize,
        frames: usize,
        callees: &[Vec<(usize, usize)>],
        function_entries: &[usize],
        state: &mut [State],
    ) -> Result<usize, LoadError> {
        if let State::Done(d) = state[f] {
            return Ok(d);
        }
        state[f] = State::OnPath;
        let mut deepest = 1;
        for &(pc, callee) in &callees[f] {
            match state[callee] {
                State::OnPath => {
                    return Err(LoadError::Recursion { pc, function: function_entries[callee] })
                }
                _ if frames + 1 > MAX_CALL_FRAMES => {
                    return Err(LoadError::CallChainTooDeep {
                        pc,
                        depth: frames + 1,
                        max: MAX_CALL_FRAMES,
                    })
                }
                _ => {}
            }
            let d = depth(callee, frames + 1, callees, function_entries, state)?;
            if frames + d > MAX_CALL_FRAMES {
                return Err(LoadError::CallChainTooDeep {
                    pc,
                    depth: frames + d,
                    max: MAX_CALL_FRAMES,
                });
            }
            deepest = deepest.max(1 + d);
        }
        state[f] = State::Done(deepest);
        Ok(deepest)
    }
    let mut state = vec![State::New; function_entries.len()];
    for f in 0..function_entries.len() {
        depth(f, 1, &callees, function_entries, &mut state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(insns: &[Insn]) -> Result<Program, LoadError> {
        Program::load_plain(insns)
    }
    const EXIT_INSN: Insn = Insn::new(EXIT, 0, 0, 0, 0);
    const MOV0: Insn = Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0);

    #[test]
    fn accepts_minimal_program() {
        let p = load(&[MOV0, EXIT_INSN]).unwrap();
        assert_eq!(p.insns(), &[MOV0, EXIT_INSN]);
        assert_eq!(p.function_entries(), &[0]);
    }

    #[test]
    fn rejects_empty_program() {
        assert_eq!(load(&[]), Err(LoadError::Empty));
    }

    #[test]
    fn rejects_unknown_opcode_naming_index() {
        let err = load(&[MOV0, Insn::new(0xff, 0, 0, 0, 0), EXIT_INSN]).unwrap_err();
        assert_eq!(err, LoadError::UnknownOpcode { pc: 1, opcode: 0xff });
        assert!(err.to_string().contains("insn 1"), "{err}");
    }

    #[test]
    fn rejects_register_out_of_range() {
        let bad_dst = Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 11, 0, 0, 1);
        assert_eq!(
            load(&[bad_dst, EXIT_INSN]),
            Err(LoadError::BadRegister { pc: 0, field: "dst", reg: 11 })
        );
        let bad_src = Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 0, 15, 0, 0);
        assert_eq!(
            load(&[bad_src, EXIT_INSN]),
            Err(LoadError::BadRegister { pc: 0, field: "src", reg: 15 })
        );
    }

    #[test]
    fn rejects_write_to_r10() {
        let w = Insn::new(BPF_ALU64 | BPF_ADD | BPF_K, 10, 0, 0, 8);
        assert_eq!(load(&[w, EXIT_INSN]), Err(LoadError::WriteToFramePointer { pc: 0 }));
        let ld = Insn::new(BPF_LDX | BPF_MEM | BPF_DW, 10, 1, 0, 0);
        assert_eq!(load(&[ld, EXIT_INSN]), Err(LoadError::WriteToFramePointer { pc: 0 }));
    }

    #[test]
    fn rejects_nonzero_reserved_fields() {
        let exit_with_imm = Insn::new(EXIT, 0, 0, 0, 1);
        assert!(matches!(
            load(&[MOV0, exit_with_imm]),
            Err(LoadError::ReservedField { pc: 1, field: "imm", .. })
        ));
    }

    #[test]
    fn rejects_invalid_operations_naming_them() {
        let table: &[(Insn, &str)] = &[
            (Insn::new(BPF_ALU64 | BPF_DIV | BPF_K, 0, 0, 2, 1), "signed division flag"),
            (Insn::new(BPF_ALU | BPF_MOV | BPF_X, 0, 1, 32, 0), "movsx width"),
            (Insn::new(BPF_ALU | BPF_END | BPF_TO_LE, 0, 0, 0, 8), "byte swap width"),
            (Insn::new(BPF_ALU64 | BPF_END | BPF_X, 0, 0, 0, 16), "unknown opcode 0xdf"),
            (Insn::new(BPF_STX | BPF_ATOMIC | BPF_DW, 1, 2, 0, 0x02), "not an atomic operation"),
            (Insn::new(BPF_STX | BPF_ATOMIC | BPF_W, 1, 2, 0, 0x100), "load-acquire"),
            (Insn::new(BPF_STX | BPF_ATOMIC | BPF_B, 1, 2, 0, 0x00), "unknown opcode 0xd3"),
            (Insn::new(BPF_LD | BPF_ABS | BPF_W, 0, 0, 0, 0), "legacy packet access"),
            (Insn::new(BPF_LDX | BPF_MEMSX | BPF_DW, 0, 1, 0, 0), "unknown opcode 0x99"),
            (Insn::new(CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, 7), "kernel function call"),
            (Insn::new(CALL, 0, 3, 0, 7), "call source"),
            (Insn::new(BPF_JMP32 | BPF_CALL, 0, 0, 0, 1), "unknown opcode 0x86"),
            (Insn::new(BPF_JMP32 | BPF_EXIT, 0, 0, 0, 0), "unknown opcode 0x96"),
            (Insn::new(JA32, 0, 0, 1, 0), "reserved field offset"),
            (Insn::new(BPF_ALU64 | BPF_NEG | BPF_X, 0, 1, 0, 0), "unknown opcode 0x8f"),
            (Insn::new(LDDW, 0, 7, 0, 0), "not a known lddw pseudo source"),
        ];
        for (insn, expected) in table {
            let err = load(&[MOV0, *insn, Insn::default(), EXIT_INSN]).unwrap_err();
            assert_eq!(err.pc(), Some(1), "{insn:?}: {err}");
            let text = err.to_string();
            assert!(text.starts_with("insn 1:") && text.contains(expected), "{insn:?}: {text}");
        }
    }

    #[test]
    fn rejects_malformed_lddw_second_slot_and_jump_across_functions() {
        let lddw = Insn::new(LDDW, 0, 0, 0, 1);
        let bad_second = Insn::new(0, 1, 0, 0, 0);
        assert_eq!(load(&[lddw, bad_second, EXIT_INSN]), Err(LoadError::BadLddwSecondSlot { pc: 1 }));
        // main: call f; ja into f (slot 3) — crosses into another function.
        let call_f = Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 2);
        let jump_into_f = Insn::new(JA, 0, 0, 1, 0);
        assert_eq!(
            load(&[call_f, jump_into_f, EXIT_INSN, MOV0, EXIT_INSN]),
            Err(LoadError::JumpAcrossFunction { pc: 1, target: 3, function: 3 })
        );
        // Main falls off into the function it calls.
        let call_next = Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 0);
        assert_eq!(
            load(&[call_next, MOV0, EXIT_INSN]),
            Err(LoadError::FallsOffEnd { pc: 0, what: "the main function" })
        );
        // A subprogram (slot 3) falls off its end into the next one (slot 4).
        let call_g = Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 2);
        let call_h = Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 2);
        assert_eq!(
            load(&[call_g, call_h, EXIT_INSN, MOV0, MOV0, EXIT_INSN]),
            Err(LoadError::FallsOffEnd { pc: 3, what: "a function" })
        );
    }

    #[test]
    fn rejects_jumps_out_of_range() {
        let fwd = Insn::new(JA, 0, 0, 5, 0);
        assert_eq!(
            load(&[fwd, EXIT_INSN]),
            Err(LoadError::JumpOutOfRange { pc: 0, target: 6, len: 2 })
        );
        let back = Insn::new(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, -3, 0);
        assert_eq!(
            load(&[MOV0, back, EXIT_INSN]),
            Err(LoadError::JumpOutOfRange { pc: 1, target: -1, len: 3 })
        );
    }

    #[test]
    fn rejects_jump_into_lddw() {
        let jump = Insn::new(JA, 0, 0, 1, 0);
        let lddw = [Insn::new(LDDW, 0, 0, 0, 1), Insn::new(0, 0, 0, 0, 2)];
        assert_eq!(
            load(&[jump, lddw[0], lddw[1], EXIT_INSN]),
            Err(LoadError::JumpIntoLddw { pc: 0, target: 2 })
        );
    }

    #[test]
    fn rejects_truncated_lddw() {
        assert_eq!(
            load(&[EXIT_INSN, Insn::new(LDDW, 0, 0, 0, 1)]),
            Err(LoadError::TruncatedLddw { pc: 1 })
        );
    }

    #[test]
    fn rejects_program_without_exit_and_falling_off() {
        assert_eq!(load(&[MOV0]), Err(LoadError::NoExit));
        let falls = load(&[MOV0, EXIT_INSN, MOV0]).unwrap_err();
        assert_eq!(falls, LoadError::FallsOffEnd { pc: 2, what: "the program" });
    }

    #[test]
    fn rejects_call_to_unknown_local_function() {
        let call = Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 10);
        assert_eq!(
            load(&[call, EXIT_INSN]),
            Err(LoadError::BadCallTarget { pc: 0, target: 11 })
        );
    }

    #[test]
    fn rejects_recursion_and_deep_chains() {
        // main calls f (pc 2), f calls itself.
        let call_f = Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 1);
        let call_self = Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, -1);
        assert_eq!(
            load(&[call_f, EXIT_INSN, call_self, EXIT_INSN]),
            Err(LoadError::Recursion { pc: 2, function: 2 })
        );
        // A chain of 9 frames: main -> f1 -> ... -> f8.
        let mut chain = Vec::new();
        for _ in 0..8 {
            chain.push(Insn::new(CALL, 0, BPF_PSEUDO_CALL, 0, 1));
            chain.push(EXIT_INSN);
        }
        chain.push(MOV0);
        chain.push(EXIT_INSN);
        assert!(matches!(load(&chain), Err(LoadError::CallChainTooDeep { depth: 9, .. })));
        // 8 frames are fine.
        assert!(load(&chain[2..]).is_ok());
    }

    #[test]
    fn resolves_pseudo_loads_keeping_two_slots() {
        let insns = [
            Insn::new(LDDW, 1, BPF_PSEUDO_MAP_VALUE, 0, 7),
            Insn::new(0, 0, 0, 0, 16),
            EXIT_INSN,
        ];
        let mut seen = Vec::new();
        let p = Program::load(&insns, &mut |req| {
            seen.push(req);
            Ok(0x1122_3344_5566_7788)
        })
        .unwrap();
        assert_eq!(seen, vec![PseudoLoad { pc: 0, src: 2, imm: 7, next_imm: 16 }]);
        assert_eq!(p.insns()[0], Insn::new(LDDW, 1, 0, 0, 0x5566_7788));
        assert_eq!(p.insns()[1], Insn::new(0, 0, 0, 0, 0x1122_3344));
        let refused = Program::load_plain(&insns).unwrap_err();
        assert!(matches!(refused, LoadError::PseudoLoad { pc: 0, src: 2, .. }));
    }

    #[test]
    fn never_panics_on_arbitrary_words() {
        // A deterministic sweep over many opcodes with assorted fields.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let words = [state, state.rotate_left(17), EXIT_INSN.to_u64()];
            let insns: Vec<Insn> = words.iter().map(|&w| Insn::from_u64(w)).collect();
            let _ = load(&insns);
        }
    }
}
