//! eBPF maps living in shared memory, and the per-user registry through which
//! loaders (the syscall server inside bpftrace) and traced processes (the
//! agent) find maps, programs, attachments and perf rings.
//!
//! # Quick tour
//!
//! ```no_run
//! use shm_maps::{Registry, MapSpec, map_type, update_flags::BPF_ANY};
//!
//! // Loader side (syscall server): BPF_MAP_CREATE.
//! let reg = Registry::open_default()?;          // $USERBPF_DIR or /dev/shm/userbpf-<uid>
//! let map = reg.create_map(&MapSpec {
//!     map_type: map_type::PERCPU_HASH, key_size: 8, value_size: 8, max_entries: 4096,
//!     name: "@c".into(), ..Default::default()
//! })?;
//! let id = map.id();                            // store ids, never fds/pointers, in records
//!
//! // Syscall view (kernel errnos, per-CPU values = round_up(8, 8) * nr_cpus bytes):
//! let mut out = vec![0u8; map.syscall_value_size()];
//! assert_eq!(map.lookup(&1u64.to_ne_bytes(), &mut out), Err(shm_maps::Errno::ENOENT));
//!
//! // Traced-process side (agent): open by id and use the program view.
//! let same = reg.open_map(id)?;
//! let key = 1u64.to_ne_bytes();
//! unsafe {
//!     assert_eq!(same.prog_update(key.as_ptr(), 5u64.to_ne_bytes().as_ptr(), BPF_ANY), 0);
//!     let v = same.prog_lookup(key.as_ptr()) as *mut u64;   // this CPU's slot
//!     std::sync::atomic::AtomicU64::from_ptr(v).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//! }
//! # Ok::<(), shm_maps::Error>(())
//! ```
//!
//! # API used by other crates
//!
//! - [`Registry`]: `open_default()`, `open(dir)`, `open_with(dir, &RegistryOptions)`,
//!   `open_existing(dir)` (read-only inspection: creates nothing, registers no owner);
//!   `generation()`, `wait_generation_change(old, timeout)`, `bump_generation()`;
//!   `read_section()` (hold one around every program run, see below);
//!   `enter_run(claim_cpu) -> RunGuard` (read section + exclusive CPU slot for runs
//!   touching per-CPU state; `RunGuard::cpu()`), `cpu_slot_stats()`, `cpu_slot_holders()`;
//!   maps: `create_map(&MapSpec) -> Map`, `open_map(id)`, `maps()`, `map_info(id)`,
//!   `remove_map(id)`, `map_path(id)`; programs: `create_prog(&ProgRecord) -> id`,
//!   `prog(id)`, `progs()`, `remove_prog(id)`, `prog_path(id)`; attachments:
//!   `create_link(&LinkRecord) -> id`, `link(id)`, `links()`, `set_link_enabled(id, bool)`,
//!   `update_link(id, |l| ..)`, `remove_link(id)`, `link_path(id)`; perf rings:
//!   `create_perf_ring(data_pages) -> PerfRing`, `open_perf_ring(id)`, `ring_path(id)`,
//!   `remove_ring(id)`; participants: `owner_id()`, `owner_alive(owner)`, `owners()`,
//!   `set_role(role)`, `reap()`.
//! - [`Map`] syscall view: `lookup(key, &mut out)`, `update(key, value, flags)`,
//!   `delete(key)`, `get_next_key(Option<key>, &mut next)`, `lookup_and_delete(key, &mut out)`,
//!   all `Result<(), Errno>` with the kernel's errnos; `syscall_value_size()`.
//!   PROG_ARRAY/PERF_EVENT_ARRAY values are registry ids (program id / perf
//!   ring id): the server translates fds before calling `update`.
//! - [`Map`] program view (hot path: no allocation, no syscall, no unbounded
//!   lock; return `0`/`-errno` like helpers): `prog_lookup(key) -> *mut u8`,
//!   `prog_update(key, value, flags)`, `prog_lookup_on_cpu(key, cpu)` /
//!   `prog_update_on_cpu(key, value, flags, cpu)` (per-CPU value of the run's claimed CPU), `prog_delete(key)`, `prog_push/pop/peek`,
//!   `perf_event_output(flags, data)` (after `refresh_perf_rings()` off the hot path),
//!   `ringbuf_output/reserve/query`, [`ringbuf_submit`]/[`ringbuf_discard`],
//!   `get_stackid(ips, flags)`, `id_at(index)` (tail calls), `array_value_ptr(index)`
//!   (`BPF_PSEUDO_MAP_VALUE`).
//! - [`Map`] maintenance: `verify()`, `recover()`, `lock_breaks()`, `path()`,
//!   `ringbuf_mmap_for_loader(offset, len, prot, fixed)` (the server's `mmap` of a ring buffer fd).
//! - [`PerfRing`]: `output(data)` (producer), `read(|rec| ..)`, `readable()`,
//!   `wait_readable(timeout)` (consumer; the server emulates epoll with it), `path()`.
//! - [`cpu`]: `current()` (rseq), `CURRENT` (the `cpu` argument for "no claimed slot"),
//!   `nr_possible()`.
//!
//! # Value lifetime
//!
//! Pointers returned by `prog_lookup` point into the shared mapping and stay
//! dereferenceable as long as the [`Map`] lives. Array values never move. A
//! deleted hash element's memory is not reused by any process while a
//! *read section* that could have reached it is active
//! ([`Registry::read_section`] / [`Map::read_section`]): **the agent must
//! hold one around every program run** (one store + one fence; nesting is
//! free), so a value a program looked up keeps belonging to its key (or to
//! nobody, once deleted) until the program returns. Syscall-view operations
//! take their own sections. See `docs/arch/shm-maps.md`.
//!
//! # Layout and compatibility
//!
//! Every shared file starts with a magic number and [`LAYOUT_VERSION`]; a
//! process built from a different version refuses to use it with an error
//! naming both versions. Shared memory holds ids and offsets only.

// `x % n == 0` instead of `is_multiple_of`: the workspace MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

mod array;
mod bloom;
pub mod cpu;
mod cpu_slot;
mod epoch;
mod errno;
mod error;
mod hash;
mod layout;
mod lock;
mod lpm;
mod map;
mod perf;
mod queue;
mod registry;
mod ringbuf;
mod stack_trace;
mod sys;

pub use cpu_slot::{CpuSlotStats, MAX_CPU_SLOTS};
pub use epoch::{ReadGuard, RunGuard, READER_SLOTS};
pub use errno::{from_ret, Errno};
pub use error::Error;
pub use layout::{helper_flags, map_flags, map_type, update_flags, LAYOUT_VERSION};
pub use hash::HashStats;
pub use map::{Map, MapSpec};
pub use perf::{PerfRecord, PerfRing, PERF_RECORD_LOST, PERF_RECORD_SAMPLE};
pub use registry::{
    default_dir, default_dir_of_uid, registry_layout_version, AgentStatus, LinkKind, LinkRecord, MapInfo, OwnerInfo, ProgRecord, Registry, RegistryOptions, ENV_DIR, ENV_SHARED,
};
pub use ringbuf::{
    ringbuf_discard, ringbuf_submit, WakeWord, BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_PROD_POS, BPF_RB_RING_SIZE,
    BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ,
};
