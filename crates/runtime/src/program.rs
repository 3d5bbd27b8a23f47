//! `LoadedProgram`: a program record from the registry made runnable in this
//! process — instructions decoded, maps bound to process-local handles,
//! `lddw` pseudo sources resolved, JIT-compiled (or interpreted where the JIT
//! refuses, with a message saying why).
//!
//! Pseudo `lddw` resolution (the registry convention: map references carry
//! the *registry map id*):
//! - `BPF_PSEUDO_MAP_FD` (imm = map id) → address of the process-local
//!   [`MapHandle`], which is what map helpers receive as `r1`;
//! - `BPF_PSEUDO_MAP_VALUE` (imm = map id, next imm = offset) → address of
//!   that byte of the array map's value at index 0 (global data);
//! - `BPF_PSEUDO_MAP_IDX` / `_IDX_VALUE` → same, the map named by index
//!   into the record's `map_ids` (the kernel's `fd_array`);
//! - `BPF_PSEUDO_FUNC` → the callee's instruction index (callbacks);
//! - `BPF_PSEUDO_BTF_ID` → refused: there are no kernel variables here.

use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

use shm_maps::{map_type, ProgRecord, Registry};
use vm::insn::{self, Insn};
use vm::interp::{self, RunOptions};
use vm::jit::{JitOptions, JitProgram};
use vm::program::{Helpers, Program, PseudoLoad};

use crate::env::RunEnv;
use crate::helpers::{self, MissingHelpers};
use crate::maps::{self, DirectValue, MapHandle};
use crate::tail::{self, ProgArray};

/// Why a program could not be made runnable.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read program {id} from the registry: {source}")]
    Registry { id: u32, source: shm_maps::Error },
    #[error("program {id}: instruction bytes are not a whole number of instructions ({len} bytes)")]
    BadLength { id: u32, len: usize },
    #[error("program {id}: {source}")]
    Invalid { id: u32, source: vm::program::LoadError },
    #[error(transparent)]
    MissingHelpers(#[from] MissingHelpers),
}

/// How the program runs.
enum Engine {
    Jit(JitProgram),
    Interpreter,
}

/// A program ready to run in this process. Immutable, shareable between
/// threads; keeps its maps bound for as long as it lives.
pub struct LoadedProgram {
    id: u32,
    name: String,
    program: Program,
    engine: Engine,
    /// Why the JIT refused, when it did.
    jit_refusal: Option<String>,
    /// Maps referenced by the program: their handles' addresses are baked
    /// into the instructions, so they must live as long as the program.
    maps: Vec<Arc<MapHandle>>,
    /// Tail-call views of the PROG_ARRAY maps among them (same reason).
    _prog_arrays: Vec<Arc<ProgArray>>,
    /// Whether a run claims a CPU slot (see [`needs_cpu_slot`]).
    claims_cpu_slot: bool,
}

/// `bpf_get_smp_processor_id`'s helper number.
const HELPER_GET_SMP_PROCESSOR_ID: i32 = 8;

/// Whether runs of a program must hold a CPU slot ("preemption disabled"):
/// it references a per-CPU map (bpftrace's `sum()`/`avg()`/`hist()` do a
/// non-atomic lookup → add → update of the CPU's value), asks for its CPU
/// id (which it may use as an exclusive index), or tail-calls (its targets
/// run inside this run and may do either). Other programs skip the claim.
fn needs_cpu_slot(insns: &[Insn], maps: &[Arc<MapHandle>]) -> bool {
    let asks_cpu = insns
        .iter()
        .any(|i| i.opc == insn::BPF_JMP | insn::BPF_CALL && i.src == 0 && i.imm == HELPER_GET_SMP_PROCESSOR_ID);
    asks_cpu || maps.iter().any(|m| m.is_percpu() || m.map_type() == map_type::PROG_ARRAY)
}

impl std::fmt::Debug for LoadedProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProgram")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("jit", &self.is_jitted())
            .finish()
    }
}

/// Interpreter runs: unchecked (the program is verified), tail calls
/// through the runtime's resolver.
fn interpreter_options() -> RunOptions<'static> {
    RunOptions { tail_call_resolver: Some(tail::resolve), ..RunOptions::default() }
}

/// The process-wide helper table, built once from `verifier::HELPERS`.
fn helper_table() -> Result<&'static Helpers, MissingHelpers> {
    static TABLE: OnceLock<Result<Helpers, MissingHelpers>> = OnceLock::new();
    TABLE.get_or_init(helpers::registry).as_ref().map_err(Clone::clone)
}

impl LoadedProgram {
    /// Load program `id` from the registry and bind its maps.
    pub fn from_registry(registry: &Registry, id: u32) -> Result<LoadedProgram, LoadError> {
        let record = registry.prog(id).map_err(|source| LoadError::Registry { id, source })?;
        LoadedProgram::from_record(registry, &record)
    }

    /// Make a program record runnable (maps are opened through `registry`).
    pub fn from_record(registry: &Registry, record: &ProgRecord) -> Result<LoadedProgram, LoadError> {
        let id = record.id;
        if !record.insns.len().is_multiple_of(8) || record.insns.is_empty() {
            return Err(LoadError::BadLength { id, len: record.insns.len() });
        }
        let insns = insn::decode_all(&record.insns);
        LoadedProgram::from_insns(id, &record.name, &insns, &record.map_ids, &mut |map_id| {
            maps::bind(registry, map_id)
        })
    }

    /// Make `insns` runnable; `bind_map` turns a registry map id into its
    /// process-local handle. `map_ids` is the `fd_array` for the `*_IDX`
    /// pseudo sources.
    pub fn from_insns(
        id: u32,
        name: &str,
        insns: &[Insn],
        map_ids: &[u32],
        bind_map: &mut dyn FnMut(u32) -> Result<Arc<MapHandle>, String>,
    ) -> Result<LoadedProgram, LoadError> {
        let helpers = helper_table()?;
        let mut bound: Vec<Arc<MapHandle>> = Vec::new();
        let mut prog_arrays: Vec<Arc<ProgArray>> = Vec::new();
        let mut resolve = |load: PseudoLoad| -> Result<u64, String> {
            let map_id = match load.src {
                insn::BPF_PSEUDO_MAP_FD | insn::BPF_PSEUDO_MAP_VALUE => load.imm as u32,
                insn::BPF_PSEUDO_MAP_IDX | insn::BPF_PSEUDO_MAP_IDX_VALUE => {
                    *map_ids.get(load.imm as u32 as usize).ok_or_else(|| {
                        format!("map index {} out of range ({} maps)", load.imm, map_ids.len())
                    })?
                }
                insn::BPF_PSEUDO_FUNC => {
                    let target = load.pc as i64 + load.imm as i64 + 1;
                    return u64::try_from(target).map_err(|_| format!("callback target {target} out of range"));
                }
                insn::BPF_PSEUDO_BTF_ID => {
                    return Err("kernel variables (BTF ids) do not exist in user space".into())
                }
                other => return Err(format!("unknown pseudo source {other}")),
            };
            let handle = match bound.iter().find(|m| m.id() == map_id) {
                Some(m) => m.clone(),
                None => {
                    let m = bind_map(map_id)?;
                    bound.push(m.clone());
                    m
                }
            };
            match load.src {
                insn::BPF_PSEUDO_MAP_VALUE | insn::BPF_PSEUDO_MAP_IDX_VALUE => {
                    handle.direct_value_address(load.next_imm as u32)
                }
                // The only helper taking a PROG_ARRAY is bpf_tail_call, whose
                // resolver expects the tail-call view of the array.
                _ if handle.map_type() == map_type::PROG_ARRAY => {
                    let array = match prog_arrays.iter().find(|a| a.id() == map_id) {
                        Some(a) => a.clone(),
                        None => {
                            let a = tail::bind(handle);
                            prog_arrays.push(a.clone());
                            a
                        }
                    };
                    Ok(Arc::as_ptr(&array) as u64)
                }
                _ => Ok(Arc::as_ptr(&handle) as u64),
            }
        };
        let program = Program::load(insns, &mut resolve).map_err(|source| LoadError::Invalid { id, source })?;
        let jit_options = JitOptions { tail_call_resolver: Some(tail::resolve), ..JitOptions::default() };
        let (engine, jit_refusal) = match JitProgram::compile(&program, helpers, &jit_options) {
            Ok(jit) => (Engine::Jit(jit), None),
            Err(e) => (Engine::Interpreter, Some(e.to_string())),
        };
        let claims_cpu_slot = needs_cpu_slot(insns, &bound);
        Ok(LoadedProgram {
            id,
            name: name.to_string(),
            program,
            engine,
            jit_refusal,
            maps: bound,
            _prog_arrays: prog_arrays,
            claims_cpu_slot,
        })
    }

    /// Whether `[addr, addr + len)` is memory of one of the program's maps
    /// (what `bpf_probe_read_kernel` may read, see `helpers::probe`).
    pub fn holds_map_memory(&self, addr: u64, len: u64) -> bool {
        self.maps.iter().any(|m| m.holds(addr, len))
    }

    /// How many bytes from `addr` on are memory of one of the program's
    /// maps (0: none); see [`shm_maps::Map::bytes_from`].
    pub fn map_memory_from(&self, addr: u64) -> u64 {
        self.maps.iter().map(|m| m.bytes_from(addr)).max().unwrap_or(0)
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The VM program (what a tail-call target points to).
    pub fn vm_program(&self) -> *const Program {
        &self.program
    }

    /// Start of the JIT code, if the program was compiled.
    pub fn jit_entry(&self) -> Option<*const u8> {
        match &self.engine {
            Engine::Jit(jit) => Some(jit.entry()),
            Engine::Interpreter => None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether runs claim a CPU slot (the program touches per-CPU state).
    pub fn claims_cpu_slot(&self) -> bool {
        self.claims_cpu_slot
    }

    /// Whether the program runs as native code.
    pub fn is_jitted(&self) -> bool {
        matches!(self.engine, Engine::Jit(_))
    }

    /// Why the JIT refused the program (it then runs interpreted).
    pub fn jit_refusal(&self) -> Option<&str> {
        self.jit_refusal.as_deref()
    }

    /// Run with `r1 = ctx`; `env` is what helpers see (this sets
    /// `env.cpu` and `env.ctx`, and wakes the ring buffer consumers the
    /// program's records are for once it has finished). Returns r0.
    ///
    /// # Safety
    /// The program must have been verified for a context like `ctx` (for
    /// uprobes a `struct pt_regs`; null for BEGIN/END), and `env.program`,
    /// if set, must be this program.
    #[inline]
    pub unsafe fn run(&self, ctx: *mut u8, env: &mut RunEnv) -> u64 {
        // Hash elements this run can reach are not reused by any process
        // until the run ends (shm-maps' epoch reclamation): a program may
        // keep a value pointer for the whole run. A program touching
        // per-CPU state also holds a CPU slot exclusively, as a kernel
        // program holds its CPU: its index is the run's CPU.
        let run = self.maps.first().map(|m| m.enter_run(self.claims_cpu_slot));
        env.cpu = run.as_ref().map_or(shm_maps::cpu::CURRENT, |r| r.cpu());
        env.ctx = ctx as u64;
        env.ringbuf_wake = std::ptr::null();
        env.pending_signal = 0;
        let env_ptr = env as *mut RunEnv as *mut c_void;
        let r0 = match &self.engine {
            // SAFETY: forwarded from this function's contract.
            Engine::Jit(jit) => unsafe { jit.call(ctx, env_ptr) },
            Engine::Interpreter => match helper_table() {
                // SAFETY: forwarded from this function's contract. A
                // verified program cannot fail; on the impossible error the
                // run's r0 is 0, like a program that returned nothing.
                Ok(helpers) => unsafe { interp::run(&self.program, helpers, ctx, env_ptr, &interpreter_options()) }.unwrap_or(0),
                Err(_) => 0,
            },
        };
        // The run is over (its CPU slot and read section released) before a
        // ring buffer consumer is woken, as the kernel's irq_work runs after
        // the program.
        drop(run);
        env.finish_ringbuf_wake();
        env.finish_pending_signal();
        r0
    }

    /// Run the BPF function at instruction `entry_pc` with r1..r5 = `args`
    /// (callbacks of `bpf_loop` / `bpf_for_each_map_elem`), interpreted on
    /// a fresh stack. `None` if `entry_pc` is not a function of this program.
    ///
    /// # Safety
    /// Called from a helper during a run of this program, with its `env`.
    pub unsafe fn run_callback(&self, entry_pc: usize, args: [u64; 5], env: *mut c_void) -> Option<u64> {
        let helpers = helper_table().ok()?;
        // SAFETY: forwarded from this function's contract.
        unsafe { interp::run_function(&self.program, helpers, entry_pc, args, env, &interpreter_options()) }.ok()
    }

    /// Run outside any probe (the loader's BEGIN/END, PROG_TEST_RUN).
    ///
    /// # Safety
    /// As for [`LoadedProgram::run`].
    pub unsafe fn run_detached(&self, ctx: *mut u8) -> u64 {
        let mut env = RunEnv { program: self as *const LoadedProgram as *const c_void, ..RunEnv::detached(self.id) };
        // SAFETY: forwarded.
        unsafe { self.run(ctx, &mut env) }
    }
}
