//! On-disk (shared-memory) layout constants shared by every object file:
//! magic numbers, the layout version, the common object header, and the
//! kernel's map type / flag numbers.
//!
//! Every object file starts (at [`ObjectHeader`]'s offset for its kind) with
//! a magic number and [`LAYOUT_VERSION`]. A process built from a different
//! layout refuses to use the file with an error naming both versions, rather
//! than misreading memory. Bump `LAYOUT_VERSION` on any change to a shared
//! structure.

use std::sync::atomic::AtomicU32;

/// Version of every shared structure in this crate.
pub const LAYOUT_VERSION: u32 = 2;

pub const REGISTRY_MAGIC: u64 = u64::from_le_bytes(*b"UBPF-REG");
pub const MAP_MAGIC: u64 = u64::from_le_bytes(*b"UBPF-MAP");
pub const PROG_MAGIC: u64 = u64::from_le_bytes(*b"UBPF-PRG");
pub const LINK_MAGIC: u64 = u64::from_le_bytes(*b"UBPF-LNK");
pub const PERF_RING_MAGIC: u64 = u64::from_le_bytes(*b"UBPF-PRF");

/// Kind of registry object (stored in [`ObjectHeader::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ObjectKind {
    Map = 1,
    Prog = 2,
    Link = 3,
    PerfRing = 4,
}

/// Common header of every object file. Records hold ids and offsets only,
/// never pointers.
#[repr(C)]
pub struct ObjectHeader {
    pub magic: u64,
    pub layout_version: u32,
    pub kind: u32,
    pub id: u32,
    /// Owner id of the creating process (see `owner` in the registry).
    pub owner: u32,
}

pub const OBJECT_HEADER_SIZE: usize = std::mem::size_of::<ObjectHeader>();

/// An `AtomicU32` alone on a cache line, so hot counters do not false-share.
#[repr(C, align(64))]
pub struct PaddedU32(pub AtomicU32);

/// Kernel `enum bpf_map_type` values this crate implements.
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PROG_ARRAY: u32 = 3;
    pub const PERF_EVENT_ARRAY: u32 = 4;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const STACK_TRACE: u32 = 7;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const LPM_TRIE: u32 = 11;
    pub const QUEUE: u32 = 22;
    pub const STACK: u32 = 23;
    pub const RINGBUF: u32 = 27;
    pub const BLOOM_FILTER: u32 = 30;

    /// Kernel name of a map type, for messages.
    pub fn name(t: u32) -> &'static str {
        match t {
            HASH => "HASH",
            ARRAY => "ARRAY",
            PROG_ARRAY => "PROG_ARRAY",
            PERF_EVENT_ARRAY => "PERF_EVENT_ARRAY",
            PERCPU_HASH => "PERCPU_HASH",
            PERCPU_ARRAY => "PERCPU_ARRAY",
            STACK_TRACE => "STACK_TRACE",
            8 => "CGROUP_ARRAY",
            LRU_HASH => "LRU_HASH",
            LRU_PERCPU_HASH => "LRU_PERCPU_HASH",
            LPM_TRIE => "LPM_TRIE",
            12 => "ARRAY_OF_MAPS",
            13 => "HASH_OF_MAPS",
            QUEUE => "QUEUE",
            STACK => "STACK",
            RINGBUF => "RINGBUF",
            BLOOM_FILTER => "BLOOM_FILTER",
            _ => "unknown",
        }
    }
}

/// `BPF_MAP_UPDATE_ELEM` flags.
pub mod update_flags {
    pub const BPF_ANY: u64 = 0;
    pub const BPF_NOEXIST: u64 = 1;
    pub const BPF_EXIST: u64 = 2;
    pub const BPF_F_LOCK: u64 = 4;
}

/// `BPF_MAP_CREATE` `map_flags`.
pub mod map_flags {
    pub const BPF_F_NO_PREALLOC: u32 = 1 << 0;
    pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
    pub const BPF_F_NUMA_NODE: u32 = 1 << 2;
    pub const BPF_F_RDONLY: u32 = 1 << 3;
    pub const BPF_F_WRONLY: u32 = 1 << 4;
    pub const BPF_F_STACK_BUILD_ID: u32 = 1 << 5;
    pub const BPF_F_ZERO_SEED: u32 = 1 << 6;
    pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
    pub const BPF_F_WRONLY_PROG: u32 = 1 << 8;
    pub const BPF_F_MMAPABLE: u32 = 1 << 10;
    pub const BPF_F_INNER_MAP: u32 = 1 << 12;
    /// Access flags every map type accepts.
    pub const ACCESS: u32 = BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG;
}

/// Flags of `bpf_perf_event_output` / `bpf_get_stackid`.
pub mod helper_flags {
    pub const BPF_F_INDEX_MASK: u64 = 0xffff_ffff;
    pub const BPF_F_CURRENT_CPU: u64 = BPF_F_INDEX_MASK;
    pub const BPF_F_SKIP_FIELD_MASK: u64 = 0xff;
    pub const BPF_F_USER_STACK: u64 = 1 << 8;
    pub const BPF_F_FAST_STACK_CMP: u64 = 1 << 9;
    pub const BPF_F_REUSE_STACKID: u64 = 1 << 10;
    pub const BPF_RB_NO_WAKEUP: u64 = 1 << 0;
    pub const BPF_RB_FORCE_WAKEUP: u64 = 1 << 1;
}

#[inline(always)]
pub const fn round_up8(n: usize) -> usize {
    (n + 7) & !7
}

#[inline(always)]
pub const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}
