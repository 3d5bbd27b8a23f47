//! What the verifier needs to know about a map a program references: its
//! kernel map type and sizes ([`MapDesc`]), the contents of frozen read-only
//! maps ([`Maps`]), and the kernel's map type numbers.

use vm::program::PseudoLoad;

/// How the verifier learns about the maps a program's `lddw`s name.
///
/// Any `Fn(PseudoLoad) -> Option<MapDesc>` is a `Maps` without frozen contents.
pub trait Maps {
    /// The map behind a map `lddw` (`None`: the fd/index is not a map).
    fn describe(&self, load: PseudoLoad) -> Option<MapDesc>;

    /// For an `ARRAY` map the program may not write (`BPF_F_RDONLY_PROG`) and
    /// that the loader froze (`BPF_MAP_FREEZE`, as libbpf does for `.rodata`):
    /// the bytes of element 0. The verifier then treats loads from it at
    /// constant offsets as known constants, like the kernel, so branches on
    /// `const volatile` configuration are decided at load time. The caller
    /// guarantees the contents can no longer change.
    fn frozen_readonly_value(&self, _load: PseudoLoad) -> Option<Vec<u8>> {
        None
    }

    /// Whether programs may only read the map (`BPF_F_RDONLY_PROG`), frozen
    /// or not: stores and helper writes into its values are then refused.
    /// Implied when [`Maps::frozen_readonly_value`] returns contents.
    fn readonly_for_programs(&self, _load: PseudoLoad) -> bool {
        false
    }
}

impl<F: Fn(PseudoLoad) -> Option<MapDesc>> Maps for F {
    fn describe(&self, load: PseudoLoad) -> Option<MapDesc> {
        self(load)
    }
}

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
    pub const LPM_TRIE: u32 = 11;
    pub const QUEUE: u32 = 22;
    pub const STACK: u32 = 23;
    pub const RINGBUF: u32 = 27;
    pub const BLOOM_FILTER: u32 = 30;
}

impl MapDesc {
    /// Whether `lddw` with `BPF_PSEUDO_MAP_VALUE` (direct value access) is
    /// allowed on this map: single-element-addressable arrays only, as in the kernel.
    pub fn supports_direct_value(&self) -> bool {
        self.map_type == map_type::ARRAY
    }
}
