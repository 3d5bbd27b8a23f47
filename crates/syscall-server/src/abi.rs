//! Kernel ABI the server speaks: `bpf()` command numbers, `union bpf_attr`
//! field offsets (from `include/uapi/linux/bpf.h`), map/program types,
//! `perf_event_attr` offsets and the perf ioctls.
//!
//! `bpf_attr` is read as bytes: the caller says how many bytes it passed
//! (`size`), the rest reads as zero, exactly as the kernel's
//! `copy_from_bpfptr` + `memset` does. Fields written back (ids, `info_len`,
//! `retval`) are written at their offsets in the caller's memory.

use std::ffi::c_long;

pub const SYS_BPF: c_long = libc::SYS_bpf;
pub const SYS_PERF_EVENT_OPEN: c_long = libc::SYS_perf_event_open;

/// The kernel-internal `ENOTSUPP` (524) that `bpf()` returns for "this
/// program type cannot do that" (e.g. test runs of kprobe programs).
pub const ENOTSUPP: i32 = 524;

// bpf() commands.
pub const BPF_MAP_CREATE: u32 = 0;
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
pub const BPF_MAP_GET_NEXT_KEY: u32 = 4;
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_PROG_TEST_RUN: u32 = 10;
pub const BPF_PROG_GET_NEXT_ID: u32 = 11;
pub const BPF_MAP_GET_NEXT_ID: u32 = 12;
pub const BPF_PROG_GET_FD_BY_ID: u32 = 13;
pub const BPF_MAP_GET_FD_BY_ID: u32 = 14;
pub const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
pub const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
pub const BPF_BTF_LOAD: u32 = 18;
pub const BPF_BTF_GET_FD_BY_ID: u32 = 19;
pub const BPF_MAP_LOOKUP_AND_DELETE_ELEM: u32 = 21;
pub const BPF_MAP_FREEZE: u32 = 22;
pub const BPF_BTF_GET_NEXT_ID: u32 = 23;
pub const BPF_MAP_LOOKUP_BATCH: u32 = 24;
pub const BPF_MAP_DELETE_BATCH: u32 = 27;
pub const BPF_LINK_CREATE: u32 = 28;
pub const BPF_LINK_UPDATE: u32 = 29;
pub const BPF_LINK_GET_FD_BY_ID: u32 = 30;
pub const BPF_LINK_GET_NEXT_ID: u32 = 31;
pub const BPF_LINK_DETACH: u32 = 34;
pub const BPF_PROG_BIND_MAP: u32 = 35;
pub const BPF_TOKEN_CREATE: u32 = 36;

/// Name of a bpf() command for "not supported" messages.
pub fn bpf_cmd_name(cmd: u32) -> &'static str {
    const NAMES: [&str; 37] = [
        "BPF_MAP_CREATE",
        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",
        "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",
        "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",
        "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",
        "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",
        "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",
        "BPF_PROG_GET_FD_BY_ID",
        "BPF_MAP_GET_FD_BY_ID",
        "BPF_OBJ_GET_INFO_BY_FD",
        "BPF_PROG_QUERY",
        "BPF_RAW_TRACEPOINT_OPEN",
        "BPF_BTF_LOAD",
        "BPF_BTF_GET_FD_BY_ID",
        "BPF_TASK_FD_QUERY",
        "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        "BPF_MAP_FREEZE",
        "BPF_BTF_GET_NEXT_ID",
        "BPF_MAP_LOOKUP_BATCH",
        "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        "BPF_MAP_UPDATE_BATCH",
        "BPF_MAP_DELETE_BATCH",
        "BPF_LINK_CREATE",
        "BPF_LINK_UPDATE",
        "BPF_LINK_GET_FD_BY_ID",
        "BPF_LINK_GET_NEXT_ID",
        "BPF_ENABLE_STATS",
        "BPF_ITER_CREATE",
        "BPF_LINK_DETACH",
        "BPF_PROG_BIND_MAP",
        "BPF_TOKEN_CREATE",
    ];
    NAMES
        .get(cmd as usize)
        .copied()
        .unwrap_or("unknown bpf command")
}

// Map types.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_MAP_TYPE_STACK_TRACE: u32 = 7;
pub const BPF_MAP_TYPE_CGROUP_ARRAY: u32 = 8;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;

// Program types.
pub const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
pub const BPF_PROG_TYPE_KPROBE: u32 = 2;
pub const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
pub const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;
pub const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// Name of a program type for messages.
pub fn prog_type_name(t: u32) -> &'static str {
    match t {
        1 => "socket_filter",
        2 => "kprobe",
        3 => "sched_cls",
        4 => "sched_act",
        5 => "tracepoint",
        6 => "xdp",
        7 => "perf_event",
        17 => "raw_tracepoint",
        26 => "tracing (fentry/fexit)",
        _ => "this program type",
    }
}

/// What a program is, for refusals: `prog_type_name`, made precise by
/// `expected_attach_type` where one program type covers several kinds
/// (`BPF_PROG_TYPE_TRACING` is tp_btf, fentry, fexit, fmod_ret or iter).
pub fn program_kind_name(prog_type: u32, expected_attach_type: u32) -> &'static str {
    match (prog_type, expected_attach_type) {
        (26, 23) => "tracing (tp_btf, BTF-enabled raw tracepoint)",
        (26, 24) => "tracing (fentry)",
        (26, 25) => "tracing (fexit)",
        (26, 26) => "tracing (fmod_ret)",
        (26, 28) => "tracing (iter)",
        (27, _) => "struct_ops",
        (29, _) => "lsm",
        (28, _) => "ext (freplace)",
        _ => prog_type_name(prog_type),
    }
}

/// `bpf(CMD, {…})` for `USERBPF_TRACE`: the command and the attr fields
/// that tell calls apart (map and program type and name, fds).
///
/// # Safety
/// `attr_ptr` is the loader's attr of `size` bytes, already read by the
/// handler (and so readable).
pub unsafe fn describe_bpf_call(cmd: u32, attr_ptr: *const u8, size: u32) -> String {
    // SAFETY: caller contract.
    let Ok(a) = (unsafe { Attr::from_user(attr_ptr, size as usize) }) else {
        return format!("bpf({}, ?)", bpf_cmd_name(cmd));
    };
    let fields = match cmd {
        BPF_MAP_CREATE => format!(
            "map_type={}, key_size={}, value_size={}, max_entries={}, map_flags={:#x}, name={:?}",
            a.u32(attr::MAP_TYPE),
            a.u32(attr::KEY_SIZE),
            a.u32(attr::VALUE_SIZE),
            a.u32(attr::MAX_ENTRIES),
            a.u32(attr::MAP_FLAGS),
            a.name(attr::MAP_NAME)
        ),
        BPF_PROG_LOAD => {
            let n = a.u32(attr::INSN_CNT);
            let mut s = format!(
                "prog_type={}, insn_cnt={n}, expected_attach_type={}, name={:?}",
                a.u32(attr::PROG_TYPE),
                a.u32(attr::EXPECTED_ATTACH_TYPE),
                a.name(attr::PROG_NAME)
            );
            // Feature probes are a few instructions: show them.
            let insns = a.u64(attr::INSNS);
            if n <= 8 {
                // SAFETY: a checked copy (EFAULT for a bad pointer).
                if let Ok(bytes) = unsafe { crate::bpf::user_bytes(insns, n as usize * 8) } {
                    for w in bytes.chunks_exact(8) {
                        let w = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
                        s.push_str(&format!(" {w:016x}"));
                    }
                }
            }
            s
        }
        BPF_LINK_CREATE => format!(
            "prog_fd={}, target_fd={}, attach_type={}",
            a.u32(attr::LINK_PROG_FD),
            a.u32(attr::LINK_TARGET_FD),
            a.u32(attr::LINK_ATTACH_TYPE)
        ),
        _ => format!("fd={}", a.u32(0)),
    };
    format!("bpf({}, {{{fields}}})", bpf_cmd_name(cmd))
}

/// `BTF_MAX_SIZE`: the largest BTF blob the kernel loads.
pub const BTF_MAX_SIZE: usize = 16 * 1024 * 1024;
/// `BTF_MAGIC` at the start of every BTF blob.
pub const BTF_MAGIC: u16 = 0xeb9f;

// Attach types used with BPF_LINK_CREATE.
pub const BPF_PERF_EVENT: u32 = 41;
pub const BPF_TRACE_KPROBE_MULTI: u32 = 42;
pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `link_update.flags`: replace only if the old program is `old_prog_fd`.
pub const BPF_F_REPLACE: u32 = 1 << 2;
pub const BPF_TRACE_KPROBE_SESSION: u32 = 56;
/// `link_create.uprobe_multi.flags`: the probes are uretprobes.
pub const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
/// The kernel's `MAX_UPROBE_MULTI_CNT`.
pub const MAX_UPROBE_MULTI_CNT: u32 = 1 << 20;

// `enum bpf_link_type` (`bpf_link_info.type`).
pub const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
pub const BPF_LINK_TYPE_UPROBE_MULTI: u32 = 12;

// Pseudo sources of `lddw`.
/// `BPF_MAP_CREATE` flag: programs may only read the map (libbpf's `.rodata`).
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
pub const BPF_PSEUDO_MAP_VALUE: u8 = 2;
pub const BPF_PSEUDO_MAP_IDX: u8 = 5;
pub const BPF_PSEUDO_MAP_IDX_VALUE: u8 = 6;

/// Offsets inside `union bpf_attr`, per command.
pub mod attr {
    // BPF_MAP_CREATE
    pub const MAP_TYPE: usize = 0;
    pub const KEY_SIZE: usize = 4;
    pub const VALUE_SIZE: usize = 8;
    pub const MAX_ENTRIES: usize = 12;
    pub const MAP_FLAGS: usize = 16;
    pub const INNER_MAP_FD: usize = 20;
    pub const MAP_NAME: usize = 28;
    pub const MAP_EXTRA: usize = 64;
    // BPF_MAP_*_ELEM
    pub const ELEM_MAP_FD: usize = 0;
    pub const ELEM_KEY: usize = 8;
    pub const ELEM_VALUE: usize = 16; // also `next_key`
    pub const ELEM_FLAGS: usize = 24;
    // BPF_PROG_LOAD
    pub const PROG_TYPE: usize = 0;
    pub const INSN_CNT: usize = 4;
    pub const INSNS: usize = 8;
    pub const LICENSE: usize = 16;
    pub const LOG_LEVEL: usize = 24;
    pub const LOG_SIZE: usize = 28;
    pub const LOG_BUF: usize = 32;
    pub const KERN_VERSION: usize = 40;
    pub const PROG_FLAGS: usize = 44;
    pub const PROG_NAME: usize = 48;
    pub const EXPECTED_ATTACH_TYPE: usize = 68;
    pub const FD_ARRAY: usize = 120;
    // BPF_PROG_TEST_RUN
    pub const TEST_PROG_FD: usize = 0;
    pub const TEST_RETVAL: usize = 4;
    pub const TEST_DATA_SIZE_IN: usize = 8;
    pub const TEST_CTX_SIZE_IN: usize = 40;
    pub const TEST_CTX_IN: usize = 48;
    pub const TEST_REPEAT: usize = 32;
    pub const TEST_DURATION: usize = 36;
    // BPF_*_GET_NEXT_ID / GET_FD_BY_ID
    pub const ID_START: usize = 0;
    pub const ID_NEXT: usize = 4;
    // BPF_OBJ_GET_INFO_BY_FD
    pub const INFO_FD: usize = 0;
    pub const INFO_LEN: usize = 4;
    pub const INFO_PTR: usize = 8;
    // BPF_LINK_CREATE
    pub const LINK_PROG_FD: usize = 0;
    pub const LINK_TARGET_FD: usize = 4;
    pub const LINK_ATTACH_TYPE: usize = 8;
    pub const LINK_FLAGS: usize = 12;
    pub const LINK_PERF_COOKIE: usize = 16;
    pub const LINK_UPROBE_MULTI_PATH: usize = 16;
    pub const LINK_UPROBE_MULTI_OFFSETS: usize = 24;
    pub const LINK_UPROBE_MULTI_REF_CTR_OFFSETS: usize = 32;
    pub const LINK_UPROBE_MULTI_COOKIES: usize = 40;
    pub const LINK_UPROBE_MULTI_CNT: usize = 48;
    pub const LINK_UPROBE_MULTI_FLAGS: usize = 52;
    pub const LINK_UPROBE_MULTI_PID: usize = 56;
    // BPF_LINK_UPDATE / BPF_LINK_DETACH
    pub const LINK_UPDATE_LINK_FD: usize = 0;
    pub const LINK_UPDATE_NEW_PROG_FD: usize = 4;
    pub const LINK_UPDATE_FLAGS: usize = 8;
    pub const LINK_DETACH_LINK_FD: usize = 0;
    // BPF_BTF_LOAD
    pub const BTF_DATA: usize = 0;
    pub const BTF_LOG_BUF: usize = 8;
    pub const BTF_SIZE: usize = 16;
    pub const BTF_LOG_SIZE: usize = 20;
    pub const BTF_LOG_LEVEL: usize = 24;
}

/// The largest `bpf_attr` prefix the server reads; larger callers must have
/// zeros beyond it (checked, as the kernel does, by [`Attr::from_user`]).
pub const ATTR_BYTES: usize = 160;

/// A copy of the caller's `bpf_attr`.
pub struct Attr {
    bytes: [u8; ATTR_BYTES],
}

impl Attr {
    /// Copy `size` bytes from `ptr`. Fails with E2BIG when bytes beyond what
    /// the server understands are non-zero (the kernel's rule for newer
    /// user-space structs), EFAULT for a pointer the loader got wrong.
    ///
    /// # Safety
    /// As [`crate::uaccess::read`] (it is the caller's attr).
    pub unsafe fn from_user(ptr: *const u8, size: usize) -> Result<Attr, i32> {
        let mut bytes = [0u8; ATTR_BYTES];
        let n = size.min(ATTR_BYTES);
        // SAFETY: forwarded; a bad pointer gives EFAULT.
        let head = unsafe { crate::uaccess::read(ptr as u64, n)? };
        bytes[..n].copy_from_slice(&head);
        if size > ATTR_BYTES {
            // SAFETY: as above, the tail of the caller's `size` bytes.
            let tail = unsafe { crate::uaccess::read(ptr as u64 + ATTR_BYTES as u64, size - ATTR_BYTES)? };
            if tail.iter().any(|&b| b != 0) {
                return Err(libc::E2BIG);
            }
        }
        Ok(Attr { bytes })
    }

    pub fn u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.bytes[off..off + 4].try_into().expect("4 bytes"))
    }

    pub fn u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.bytes[off..off + 8].try_into().expect("8 bytes"))
    }

    /// A fixed-size, NUL-padded name field (`map_name`, `prog_name`).
    pub fn name(&self, off: usize) -> String {
        let raw = &self.bytes[off..off + 16];
        let len = raw.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&raw[..len]).into_owned()
    }
}

/// Write a `u32` back into the caller's attr at `off`.
///
/// # Safety
/// `attr` must be the caller's writable attr of at least `off + 4` bytes.
pub unsafe fn write_attr_u32(attr: *mut u8, off: usize, v: u32) {
    // SAFETY: the attr was read from this address just before; a write
    // that faults anyway is skipped (the call's answer stands).
    let _ = unsafe { crate::uaccess::write(attr as u64 + off as u64, &v.to_ne_bytes()) };
}

// perf_event_attr.
pub mod perf {
    pub const TYPE: usize = 0;
    pub const SIZE: usize = 4;
    pub const CONFIG: usize = 8;
    pub const SAMPLE_PERIOD: usize = 16;
    pub const SAMPLE_TYPE: usize = 24;
    pub const FLAGS: usize = 40;
    pub const CONFIG1: usize = 56;
    pub const CONFIG2: usize = 64;
    /// `perf_event_attr` is read up to here (PERF_ATTR_SIZE_VER5 is 112).
    pub const READ_BYTES: usize = 128;

    pub const PERF_TYPE_HARDWARE: u32 = 0;
    pub const PERF_TYPE_SOFTWARE: u32 = 1;
    pub const PERF_TYPE_TRACEPOINT: u32 = 2;
    pub const PERF_TYPE_HW_CACHE: u32 = 3;
    pub const PERF_TYPE_RAW: u32 = 4;
    pub const PERF_TYPE_BREAKPOINT: u32 = 5;

    pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
    pub const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
    pub const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;

    /// Uprobe PMU `config:32-63`: the USDT semaphore's file offset
    /// (`format/ref_ctr_offset`).
    pub const PERF_UPROBE_REF_CTR_OFFSET_SHIFT: u32 = 32;

    /// Bit 10 of the flags word: `freq` (sample_freq instead of period).
    pub const FLAG_FREQ: u64 = 1 << 10;

    pub const PERF_EVENT_IOC_ENABLE: u64 = 0x2400;
    pub const PERF_EVENT_IOC_DISABLE: u64 = 0x2401;
    pub const PERF_EVENT_IOC_RESET: u64 = 0x2403;
    pub const PERF_EVENT_IOC_SET_BPF: u64 = 0x4004_2408;
    pub const PERF_EVENT_IOC_ID: u64 = 0x8008_2407;

    /// The PMU type the server advertises for uprobes in
    /// `/sys/bus/event_source/devices/uprobe/type`. Any value above the
    /// generic types works; this one is recognisable in traces.
    pub const USERBPF_UPROBE_PMU_TYPE: u32 = 0x7562;
}
