//! The helper prototype table: the single source of truth for which kernel
//! helpers userbpf offers, what each argument must be, and what each returns.
//!
//! The verifier checks every `call` against [`HELPERS`]; the runtime/agent
//! iterates the same table and asserts it registered an implementation for
//! every entry, so the two cannot drift. Ids and names are the kernel's
//! (`include/uapi/linux/bpf.h`, `__BPF_FUNC_MAPPER`).

use crate::maps::map_type;

/// What a helper argument register must hold (the kernel's `enum bpf_arg_type`,
/// reduced to the kinds our helpers use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// Argument not used; the register is not read.
    DontCare,
    /// Any initialised value (pointers too, except for unprivileged loads).
    Anything,
    /// A map pointer (`lddw` with a map pseudo source).
    ConstMapPtr,
    /// Pointer to `key_size` initialised bytes (stack or map value) for the
    /// map in the preceding [`ArgKind::ConstMapPtr`] argument.
    MapKey,
    /// Pointer to `value_size` initialised bytes for that map.
    MapValue,
    /// Pointer to `value_size` writable bytes (the helper fills them).
    UninitMapValue,
    /// Pointer to readable, initialised memory; its size is the next argument.
    Mem,
    /// Like [`ArgKind::Mem`] but may also be the constant 0 (NULL).
    MemOrNull,
    /// Pointer to writable memory the helper fills; size is the next argument.
    UninitMem,
    /// Size of the preceding memory argument, > 0 and bounded.
    ConstSize,
    /// Size of the preceding memory argument, >= 0 and bounded.
    ConstSizeOrZero,
    /// Size of memory the helper allocates (`ringbuf_reserve`): a known constant.
    ConstAllocSizeOrZero,
    /// The program's context pointer, unmodified.
    Ctx,
    /// Memory returned by `ringbuf_reserve`, non-null, unmodified; released by the call.
    ReleaseAllocMem,
    /// Pointer to a NUL-terminated string in a map value (format strings).
    ConstStr,
    /// A BPF function (`lddw` with `BPF_PSEUDO_FUNC`) used as a callback.
    Callback,
    /// Pointer to stack memory handed to a callback, or NULL.
    CallbackCtx,
}

/// What a helper returns in r0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetKind {
    /// A scalar.
    Integer,
    /// Nothing: r0 is uninitialised after the call.
    Void,
    /// Pointer to the value of the map in argument 1, or NULL.
    MapValueOrNull,
    /// Pointer to memory of the size given by argument 2 (a constant), or NULL;
    /// must be released (submitted/discarded) before the program exits.
    AllocMemOrNull,
}

/// One helper's prototype.
#[derive(Clone, Copy, Debug)]
pub struct HelperProto {
    /// Kernel helper id (`imm` of `call`).
    pub id: u32,
    /// Kernel name, e.g. `bpf_map_lookup_elem`.
    pub name: &'static str,
    /// r1..r5.
    pub args: [ArgKind; 5],
    pub ret: RetKind,
    /// Map types accepted by the [`ArgKind::ConstMapPtr`] argument (empty = any
    /// map type that supports element access from programs).
    pub map_types: &'static [u32],
    /// When true, `r0` of the result is at most this many bits wide (e.g. a
    /// u32 random number); tightens the returned scalar's range.
    pub ret_u32: bool,
}

use ArgKind::*;

const fn proto(id: u32, name: &'static str, args: [ArgKind; 5], ret: RetKind) -> HelperProto {
    HelperProto { id, name, args, ret, map_types: &[], ret_u32: false }
}

const fn with_maps(mut p: HelperProto, map_types: &'static [u32]) -> HelperProto {
    p.map_types = map_types;
    p
}

const fn ret_u32(mut p: HelperProto) -> HelperProto {
    p.ret_u32 = true;
    p
}

const D: ArgKind = DontCare;

/// Map types whose elements programs may look up/update/delete. As the
/// kernel's check_map_func_compatibility, delete is allowed on arrays too:
/// it fails at run time (-EINVAL), not at load. The LPM trie comes last:
/// see [`FOR_EACH_MAPS`].
const ELEMENT_MAPS: &[u32] = &[
    map_type::HASH,
    map_type::ARRAY,
    map_type::PERCPU_HASH,
    map_type::PERCPU_ARRAY,
    map_type::LRU_HASH,
    map_type::LRU_PERCPU_HASH,
    map_type::LPM_TRIE,
];
/// Maps `bpf_for_each_map_elem` walks: the element maps but the LPM trie,
/// which has no walk.
const FOR_EACH_MAPS: &[u32] = ELEMENT_MAPS.split_at(ELEMENT_MAPS.len() - 1).0;
/// `bpf_map_pop_elem`'s maps.
const QUEUE_MAPS: &[u32] = &[map_type::QUEUE, map_type::STACK];
/// `bpf_map_push_elem`'s and `bpf_map_peek_elem`'s: a bloom filter adds
/// and tests with them.
const PUSH_PEEK_MAPS: &[u32] = &[map_type::QUEUE, map_type::STACK, map_type::BLOOM_FILTER];
/// Per-CPU maps (`bpf_map_lookup_percpu_elem`).
const PERCPU_MAPS: &[u32] = &[map_type::PERCPU_HASH, map_type::PERCPU_ARRAY, map_type::LRU_PERCPU_HASH];
const RINGBUF: &[u32] = &[map_type::RINGBUF];

/// Every helper userbpf offers, sorted by id.
pub static HELPERS: &[HelperProto] = &[
    with_maps(proto(1, "bpf_map_lookup_elem", [ConstMapPtr, MapKey, D, D, D], RetKind::MapValueOrNull), ELEMENT_MAPS),
    with_maps(proto(2, "bpf_map_update_elem", [ConstMapPtr, MapKey, MapValue, Anything, D], RetKind::Integer), ELEMENT_MAPS),
    with_maps(proto(3, "bpf_map_delete_elem", [ConstMapPtr, MapKey, D, D, D], RetKind::Integer), ELEMENT_MAPS),
    proto(4, "bpf_probe_read", [UninitMem, ConstSizeOrZero, Anything, D, D], RetKind::Integer),
    proto(5, "bpf_ktime_get_ns", [D; 5], RetKind::Integer),
    // The kernel checks only the format (bpf_trace_printk_proto has two
    // argument types): unused value registers may be uninitialized.
    proto(6, "bpf_trace_printk", [Mem, ConstSize, D, D, D], RetKind::Integer),
    ret_u32(proto(7, "bpf_get_prandom_u32", [D; 5], RetKind::Integer)),
    ret_u32(proto(8, "bpf_get_smp_processor_id", [D; 5], RetKind::Integer)),
    // RET_VOID, as the kernel: a failed tail call leaves r0 unreadable.
    with_maps(proto(12, "bpf_tail_call", [Ctx, ConstMapPtr, Anything, D, D], RetKind::Void), &[map_type::PROG_ARRAY]),
    proto(14, "bpf_get_current_pid_tgid", [D; 5], RetKind::Integer),
    proto(15, "bpf_get_current_uid_gid", [D; 5], RetKind::Integer),
    proto(16, "bpf_get_current_comm", [UninitMem, ConstSize, D, D, D], RetKind::Integer),
    with_maps(
        proto(25, "bpf_perf_event_output", [Ctx, ConstMapPtr, Anything, Mem, ConstSizeOrZero], RetKind::Integer),
        &[map_type::PERF_EVENT_ARRAY],
    ),
    with_maps(proto(27, "bpf_get_stackid", [Ctx, ConstMapPtr, Anything, D, D], RetKind::Integer), &[map_type::STACK_TRACE]),
    proto(35, "bpf_get_current_task", [D; 5], RetKind::Integer),
    proto(45, "bpf_probe_read_str", [UninitMem, ConstSizeOrZero, Anything, D, D], RetKind::Integer),
    proto(67, "bpf_get_stack", [Ctx, UninitMem, ConstSizeOrZero, Anything, D], RetKind::Integer),
    proto(80, "bpf_get_current_cgroup_id", [D; 5], RetKind::Integer),
    with_maps(proto(87, "bpf_map_push_elem", [ConstMapPtr, MapValue, Anything, D, D], RetKind::Integer), PUSH_PEEK_MAPS),
    with_maps(proto(88, "bpf_map_pop_elem", [ConstMapPtr, UninitMapValue, D, D, D], RetKind::Integer), QUEUE_MAPS),
    with_maps(proto(89, "bpf_map_peek_elem", [ConstMapPtr, UninitMapValue, D, D, D], RetKind::Integer), PUSH_PEEK_MAPS),
    proto(109, "bpf_send_signal", [Anything, D, D, D, D], RetKind::Integer),
    proto(112, "bpf_probe_read_user", [UninitMem, ConstSizeOrZero, Anything, D, D], RetKind::Integer),
    proto(113, "bpf_probe_read_kernel", [UninitMem, ConstSizeOrZero, Anything, D, D], RetKind::Integer),
    proto(114, "bpf_probe_read_user_str", [UninitMem, ConstSizeOrZero, Anything, D, D], RetKind::Integer),
    proto(115, "bpf_probe_read_kernel_str", [UninitMem, ConstSizeOrZero, Anything, D, D], RetKind::Integer),
    proto(117, "bpf_send_signal_thread", [Anything, D, D, D, D], RetKind::Integer),
    proto(120, "bpf_get_ns_current_pid_tgid", [Anything, Anything, UninitMem, ConstSize, D], RetKind::Integer),
    proto(125, "bpf_ktime_get_boot_ns", [D; 5], RetKind::Integer),
    with_maps(proto(130, "bpf_ringbuf_output", [ConstMapPtr, Mem, ConstSizeOrZero, Anything, D], RetKind::Integer), RINGBUF),
    with_maps(
        proto(131, "bpf_ringbuf_reserve", [ConstMapPtr, ConstAllocSizeOrZero, Anything, D, D], RetKind::AllocMemOrNull),
        RINGBUF,
    ),
    proto(132, "bpf_ringbuf_submit", [ReleaseAllocMem, Anything, D, D, D], RetKind::Void),
    proto(133, "bpf_ringbuf_discard", [ReleaseAllocMem, Anything, D, D, D], RetKind::Void),
    with_maps(proto(134, "bpf_ringbuf_query", [ConstMapPtr, Anything, D, D, D], RetKind::Integer), RINGBUF),
    with_maps(
        proto(164, "bpf_for_each_map_elem", [ConstMapPtr, Callback, CallbackCtx, Anything, D], RetKind::Integer),
        FOR_EACH_MAPS,
    ),
    proto(165, "bpf_snprintf", [MemOrNull, ConstSizeOrZero, ConstStr, MemOrNull, ConstSizeOrZero], RetKind::Integer),
    proto(173, "bpf_get_func_ip", [Ctx, D, D, D, D], RetKind::Integer),
    proto(174, "bpf_get_attach_cookie", [Ctx, D, D, D, D], RetKind::Integer),
    proto(181, "bpf_loop", [Anything, Callback, CallbackCtx, Anything, D], RetKind::Integer),
    proto(182, "bpf_strncmp", [Mem, ConstSize, ConstStr, D, D], RetKind::Integer),
    with_maps(
        proto(195, "bpf_map_lookup_percpu_elem", [ConstMapPtr, MapKey, Anything, D, D], RetKind::MapValueOrNull),
        PERCPU_MAPS,
    ),
    proto(208, "bpf_ktime_get_tai_ns", [D; 5], RetKind::Integer),
    // Kernel functions (kfuncs), under userbpf's own ids; see [`KFUNC_BASE`].
    // `__ign` arguments: the kernel checks nothing, the function reads the
    // strings with fault-tolerant loads.
    proto(BPF_STRNLEN, "bpf_strnlen", [Anything, Anything, D, D, D], RetKind::Integer),
    proto(BPF_STRNSTR, "bpf_strnstr", [Anything, Anything, Anything, D, D], RetKind::Integer),
];

/// First id of the kernel functions (kfuncs) userbpf offers, past every
/// kernel helper id.
///
/// Why helper ids: a loader calls a kfunc by the BTF id of the function in
/// the running kernel's BTF (`call` with `src_reg = BPF_PSEUDO_KFUNC_CALL`),
/// which only means something next to that kernel. The syscall server
/// resolves it by name when the program is loaded and rewrites the call
/// into an ordinary helper call to one of these ids, so the verifier, the
/// registry, the VM and every agent see one calling convention, and
/// `HELPERS` stays the one table of what a program may call. Small, as the
/// VM's helper table is indexed by id (`vm::program::Helpers`): the
/// kernel's helper ids are frozen below 212, and the poisoned calls libbpf
/// writes for unresolved kfuncs (2002000000 + n) stay far above.
pub const KFUNC_BASE: u32 = 1024;
/// `int bpf_strnlen(const char *s, size_t count)` (Linux 6.17, bpftrace
/// 0.24+'s `strlen()`).
pub const BPF_STRNLEN: u32 = KFUNC_BASE;
/// `int bpf_strnstr(const char *s1, const char *s2, size_t len)` (Linux
/// 6.17, bpftrace 0.24+'s `strstr()` and `strcontains()`).
pub const BPF_STRNSTR: u32 = KFUNC_BASE + 1;

/// The kfunc userbpf offers under the kernel's `name`, if any.
pub fn kfunc_by_name(name: &str) -> Option<&'static HelperProto> {
    HELPERS.iter().find(|h| h.id >= KFUNC_BASE && h.name == name)
}

/// Every kfunc userbpf offers.
pub fn kfuncs() -> impl Iterator<Item = &'static HelperProto> {
    HELPERS.iter().filter(|h| h.id >= KFUNC_BASE)
}

/// Helpers whose result is the number of bytes written, at most their size
/// argument, or -errno: `bpf_probe_read_str`, `bpf_get_stack`,
/// `bpf_probe_read_user_str`, `bpf_probe_read_kernel_str` (the kernel's
/// `do_refine_retval_range`).
pub const RETURNS_SIZE_OR_ERRNO: &[u32] = &[45, 67, 114, 115];

/// The prototype of helper `id`, if userbpf offers it.
pub fn helper(id: u32) -> Option<&'static HelperProto> {
    HELPERS.binary_search_by_key(&id, |h| h.id).ok().map(|i| &HELPERS[i])
}

/// Name of a helper for log messages (`bpf_…` or `unknown`).
pub fn helper_name(id: i32) -> &'static str {
    u32::try_from(id).ok().and_then(helper).map_or("unknown", |h| h.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        for w in HELPERS.windows(2) {
            assert!(w[0].id < w[1].id, "{} and {} out of order", w[0].name, w[1].name);
        }
        for h in HELPERS {
            assert!(h.name.starts_with("bpf_"), "{}", h.name);
            for (i, a) in h.args.iter().enumerate() {
                let needs_size = matches!(a, Mem | MemOrNull | UninitMem);
                let next = h.args.get(i + 1).copied();
                if needs_size {
                    assert!(matches!(next, Some(ConstSize | ConstSizeOrZero)), "{} arg {}", h.name, i + 1);
                }
                if matches!(a, MapKey | MapValue | UninitMapValue) {
                    assert!(h.args[..i].contains(&ConstMapPtr), "{}: map argument without map", h.name);
                }
            }
            let has_map = h.args.contains(&ConstMapPtr);
            assert!(!FOR_EACH_MAPS.contains(&map_type::LPM_TRIE) && FOR_EACH_MAPS.len() == 6, "for_each maps");
            assert_eq!(has_map, !h.map_types.is_empty(), "{}: map_types", h.name);
        }
    }

    #[test]
    fn ids_match_kernel_uapi() {
        // Spot checks against include/uapi/linux/bpf.h __BPF_FUNC_MAPPER.
        for (id, name) in [
            (1, "bpf_map_lookup_elem"),
            (12, "bpf_tail_call"),
            (25, "bpf_perf_event_output"),
            (45, "bpf_probe_read_str"),
            (67, "bpf_get_stack"),
            (80, "bpf_get_current_cgroup_id"),
            (114, "bpf_probe_read_user_str"),
            (125, "bpf_ktime_get_boot_ns"),
            (131, "bpf_ringbuf_reserve"),
            (164, "bpf_for_each_map_elem"),
            (165, "bpf_snprintf"),
            (173, "bpf_get_func_ip"),
            (174, "bpf_get_attach_cookie"),
            (181, "bpf_loop"),
            (182, "bpf_strncmp"),
        ] {
            assert_eq!(helper(id).map(|h| h.name), Some(name));
        }
        assert!(helper(9).is_none());
        assert_eq!(kfunc_by_name("bpf_strnlen").map(|h| h.id), Some(BPF_STRNLEN));
        assert_eq!(kfunc_by_name("bpf_map_lookup_elem").map(|h| h.id), None, "helpers are not kfuncs");
        assert!(kfuncs().all(|k| k.id < 2_002_000_000));
        assert_eq!(helper_name(-1), "unknown");
    }
}
