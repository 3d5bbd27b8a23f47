//! Program types the verifier knows, and the context each one receives in r1
//! (its size and which byte ranges a program may read).

/// Kernel program type numbers (`enum bpf_prog_type`) userbpf accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgType {
    /// `BPF_PROG_TYPE_SOCKET_FILTER` (1): loaded by feature probes only; no
    /// context access is supported.
    SocketFilter,
    /// `BPF_PROG_TYPE_KPROBE` (2): kprobes and uprobes; ctx is `struct pt_regs`.
    Kprobe,
    /// `BPF_PROG_TYPE_TRACEPOINT` (5): ctx is the raw trace record.
    Tracepoint,
    /// `BPF_PROG_TYPE_PERF_EVENT` (7): ctx is `struct bpf_perf_event_data`.
    PerfEvent,
    /// `BPF_PROG_TYPE_RAW_TRACEPOINT` (17): ctx is `u64 args[]`.
    RawTracepoint,
}

/// Size of x86-64 `struct pt_regs` (21 u64 registers).
pub const PT_REGS_SIZE: u32 = 21 * 8;
/// `struct bpf_perf_event_data { pt_regs regs; u64 sample_period; u64 addr; }`.
pub const PERF_EVENT_DATA_SIZE: u32 = PT_REGS_SIZE + 16;
/// `struct bpf_raw_tracepoint_args`: up to 12 u64 arguments (`MAX_BPF_FUNC_ARGS`).
pub const RAW_TRACEPOINT_ARGS_SIZE: u32 = 12 * 8;
/// Largest tracepoint record a program may read (`PERF_MAX_TRACE_SIZE`).
pub const TRACEPOINT_MAX_SIZE: u32 = 2048;

impl ProgType {
    /// Map the kernel's program type number; `None` for types userbpf cannot run.
    pub fn from_kernel(prog_type: u32) -> Option<ProgType> {
        Some(match prog_type {
            1 => ProgType::SocketFilter,
            2 => ProgType::Kprobe,
            5 => ProgType::Tracepoint,
            7 => ProgType::PerfEvent,
            17 => ProgType::RawTracepoint,
            _ => return None,
        })
    }

    /// The kernel's number for this type.
    pub fn to_kernel(self) -> u32 {
        match self {
            ProgType::SocketFilter => 1,
            ProgType::Kprobe => 2,
            ProgType::Tracepoint => 5,
            ProgType::PerfEvent => 7,
            ProgType::RawTracepoint => 17,
        }
    }

    /// Bytes of context the program may read through r1. A runtime that runs
    /// a program must hand it at least this many readable bytes (zeroed if it
    /// has nothing better, e.g. BEGIN/END run with no context).
    pub fn ctx_size(self) -> u32 {
        match self {
            ProgType::SocketFilter => 0,
            ProgType::Kprobe => PT_REGS_SIZE,
            ProgType::Tracepoint => TRACEPOINT_MAX_SIZE,
            ProgType::PerfEvent => PERF_EVENT_DATA_SIZE,
            ProgType::RawTracepoint => RAW_TRACEPOINT_ARGS_SIZE,
        }
    }

    /// Whether a read of `size` bytes at `off` within the context is allowed
    /// (the kernel's `is_valid_access` for the type: in bounds and naturally
    /// aligned).
    pub fn ctx_read_ok(self, off: i64, size: u32) -> bool {
        let size_i = size as i64;
        off >= 0 && off + size_i <= self.ctx_size() as i64 && off % size_i == 0
    }

    /// Whether the legacy `BPF_LD_[ABS|IND]` packet loads are allowed.
    pub fn allows_ld_abs(self) -> bool {
        false
    }
}
