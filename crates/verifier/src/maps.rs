//! What the verifier needs to know about a map a program references: its
//! kernel map type and sizes ([`MapDesc`]), and the kernel's map type numbers.

/// A map as the loader created it (`BPF_MAP_CREATE` attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapDesc {
    /// Kernel map type number, see [`map_type`].
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// Kernel map type numbers (`enum bpf_map_type`).
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
    pub const QUEUE: u32 = 22;
    pub const STACK: u32 = 23;
    pub const RINGBUF: u32 = 27;
}

impl MapDesc {
    /// Whether `lddw` with `BPF_PSEUDO_MAP_VALUE` (direct value access) is
    /// allowed on this map: single-element-addressable arrays only, as in the kernel.
    pub fn supports_direct_value(&self) -> bool {
        self.map_type == map_type::ARRAY
    }
}
