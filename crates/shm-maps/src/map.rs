//! The process-local [`Map`] handle: creation and validation of a map file,
//! opening by id, and the two views every map type implements:
//!
//! - the **syscall view** (`lookup`, `update`, `delete`, `get_next_key`,
//!   `lookup_and_delete`) used by the syscall server and tools, with kernel
//!   errnos and the kernel's userspace value layout (per-CPU values are
//!   `round_up(value_size, 8) * nr_possible_cpus` bytes);
//! - the **program view** (`prog_lookup`, `prog_update`, `prog_delete`, ...)
//!   used by helpers on the hot path: raw pointers in, kernel-style `i64`
//!   out (`0` or `-errno`), no allocation, no syscall, no unbounded lock.
//!
//! A map file is one page of [`MapHeader`] followed by the type's data area
//! (see each type's module). Everything in it is offsets, never pointers.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::errno::Errno;
use crate::error::Error;
use crate::layout::*;
use crate::registry::{MapInfo, Registry, Shared};
use crate::sys::{self, Mapping};

/// Attributes of a new map (the `BPF_MAP_CREATE` fields we honour).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapSpec {
    /// Kernel `enum bpf_map_type` (see [`crate::map_type`]).
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// `map_extra` (bloom filter: number of hash functions in bits 0..4).
    pub map_extra: u64,
    /// Up to 15 bytes are kept (like `BPF_OBJ_NAME_LEN`).
    pub name: String,
}

/// Size of the header page of a map file.
pub(crate) const HEADER_PAGE: usize = 4096;

/// Queue/stack indices, protected by the map lock.
#[repr(C, align(64))]
pub(crate) struct QueueState {
    pub head: AtomicU32,
    pub tail: AtomicU32,
}

/// First page of every map file.
#[repr(C)]
pub(crate) struct MapHeader {
    pub obj: ObjectHeader,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub ncpus: u32,
    pub map_extra: u64,
    pub hash_seed: u64,
    pub name: [u8; 16],
    /// Hash: bucket count (power of two). Stack trace: bucket count.
    pub n_buckets: u32,
    /// Hash: element pool size (max_entries + spare elements).
    pub pool_size: u32,
    /// Bytes per element (hash) or per slot (array, queue, stack trace).
    pub elem_size: u32,
    /// `round_up(value_size, 8)`.
    pub value_stride: u32,
    pub buckets_off: u64,
    pub elems_off: u64,
    pub file_len: u64,
    /// Hash: spare elements beyond max_entries (freed elements wait there
    /// until no reader can hold them).
    pub spare: u32,
    pub _reserved: u32,
    /// Hash: live element count.
    pub count: PaddedU32,
    /// Hash: where the next free-element search starts.
    pub alloc_cursor: PaddedU32,
    /// Map-wide lock (queue/stack/bloom writers).
    pub lock: PaddedU32,
    pub queue: QueueState,
    /// LRU: clock hand over the element pool.
    pub lru_hand: PaddedU32,
    /// LPM_TRIE: bit `n` set once a prefix of length `n` was inserted.
    pub lpm_lens: [std::sync::atomic::AtomicU64; 5],
    /// Locks taken over from dead holders (statistics).
    pub lock_breaks: PaddedU32,
}

const _: () = assert!(std::mem::size_of::<MapHeader>() <= HEADER_PAGE);

/// Implementation family, chosen once at open for cheap dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Hash,
    Array,
    /// PROG_ARRAY and PERF_EVENT_ARRAY: u32 object ids (0 = empty).
    IdArray,
    StackTrace,
    Queue,
    Stack,
    LpmTrie,
    Bloom,
    Ringbuf,
}

/// A map mapped into this process. `Send + Sync`: share it between threads
/// (e.g. in an `Arc`); its address is stable, so a program may embed
/// `&Map as *const Map` as its `lddw` immediate.
pub struct Map {
    pub(crate) mapping: Mapping,
    pub(crate) shared: Arc<Shared>,
    pub(crate) kind: Kind,
    pub(crate) id: u32,
    pub(crate) map_type: u32,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
    pub(crate) map_flags: u32,
    pub(crate) percpu: bool,
    pub(crate) lru: bool,
    pub(crate) ncpus: u32,
    /// `round_up(value_size, 8)`.
    pub(crate) value_stride: usize,
    pub(crate) elem_size: usize,
    pub(crate) bucket_mask: u32,
    pub(crate) pool_size: u32,
    pub(crate) seed: u64,
    pub(crate) buckets: *mut u8,
    pub(crate) elems: *mut u8,
    pub(crate) name: String,
    /// PERF_EVENT_ARRAY: process-local cache of opened rings.
    pub(crate) perf_cache: Option<crate::perf::RingCache>,
    /// RINGBUF: the double-mapped producer view.
    pub(crate) ringbuf: Option<Box<crate::ringbuf::RingbufView>>,
}

// SAFETY: all shared state is in the mapping and accessed through atomics or
// the crate's lock protocol; the process-local caches are themselves Sync.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    /// Whether `[addr, addr + len)` lies inside this process's mapping(s)
    /// of the map (its file mapping, and a ring buffer's double view): the
    /// memory a BPF program knows as "kernel" memory (map values).
    pub fn holds(&self, addr: u64, len: u64) -> bool {
        let inside = |base: *mut u8, size: usize| {
            let start = base as u64;
            addr >= start && addr.checked_add(len).is_some_and(|end| end <= start + size as u64)
        };
        inside(self.mapping.base(), self.mapping.len())
            || self.ringbuf.as_deref().is_some_and(|v| v.holds(addr, len))
    }

    /// How many bytes from `addr` on lie inside one of this map's
    /// mappings (0: `addr` is not map memory); what a kernel function may
    /// read from a map value before it would leave the map.
    pub fn bytes_from(&self, addr: u64) -> u64 {
        let after = |start: u64, size: u64| if addr >= start && addr < start + size { start + size - addr } else { 0 };
        let file = after(self.mapping.base() as u64, self.mapping.len() as u64);
        let ring = self.ringbuf.as_deref().map_or(0, |v| v.bytes_from(addr));
        file.max(ring)
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("id", &self.id)
            .field("type", &map_type::name(self.map_type))
            .field("key_size", &self.key_size)
            .field("value_size", &self.value_size)
            .field("max_entries", &self.max_entries)
            .field("name", &self.name)
            .finish()
    }
}

fn einval(what: impl Into<String>) -> Error {
    Error::kernel(what, Errno::EINVAL)
}

/// Checks `spec` like `BPF_MAP_CREATE` does (same errnos).
fn validate(spec: &MapSpec) -> Result<(), Error> {
    use map_flags::*;
    use map_type::*;
    let t = spec.map_type;
    let tn = map_type::name(t);
    let flags = spec.map_flags;
    let (allowed, key_ok, value_ok): (u32, bool, bool) = match t {
        HASH | PERCPU_HASH | LRU_HASH | LRU_PERCPU_HASH => {
            let lru = matches!(t, LRU_HASH | LRU_PERCPU_HASH);
            if lru && flags & BPF_F_NO_PREALLOC != 0 {
                return Err(Error::kernel(format!("{tn}: BPF_F_NO_PREALLOC is not supported for LRU maps"), Errno::ENOTSUPP));
            }
            // The kernel's htab_map_alloc_check: an element (48-byte
            // `struct htab_elem` + key + value) must fit one kmalloc (4 MiB).
            // Keys longer than the BPF stack are fine: programs pass them
            // from map values (bpftrace 0.20+ keys strings of 1024 bytes).
            if spec.key_size as u64 + spec.value_size as u64 >= (1 << 22) - 48 {
                return Err(Error::kernel(format!("{tn}: key_size {} + value_size {} too large", spec.key_size, spec.value_size), Errno::E2BIG));
            }
            let max_val = if matches!(t, PERCPU_HASH | LRU_PERCPU_HASH) { 32768 } else { 1 << 22 };
            if spec.value_size > max_val {
                return Err(Error::kernel(format!("{tn}: value_size {} too large", spec.value_size), Errno::E2BIG));
            }
            let mut allowed = BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE | ACCESS | BPF_F_ZERO_SEED;
            if lru {
                allowed |= BPF_F_NO_COMMON_LRU;
            }
            (allowed, spec.key_size > 0, spec.value_size > 0)
        }
        ARRAY | PERCPU_ARRAY => {
            let percpu = t == PERCPU_ARRAY;
            let max_val = if percpu { 32768 } else { 1 << 22 };
            if spec.value_size > max_val {
                return Err(Error::kernel(format!("{tn}: value_size {} too large", spec.value_size), Errno::E2BIG));
            }
            let mut allowed = BPF_F_NUMA_NODE | ACCESS | BPF_F_INNER_MAP;
            if !percpu {
                allowed |= BPF_F_MMAPABLE;
            }
            (allowed, spec.key_size == 4, spec.value_size > 0)
        }
        PROG_ARRAY | PERF_EVENT_ARRAY => (BPF_F_NUMA_NODE | ACCESS, spec.key_size == 4, spec.value_size == 4),
        STACK_TRACE => {
            if flags & BPF_F_STACK_BUILD_ID != 0 {
                return Err(Error::kernel(
                    "STACK_TRACE: BPF_F_STACK_BUILD_ID (build-id stacks) is not supported by userbpf",
                    Errno::EOPNOTSUPP,
                ));
            }
            let v = spec.value_size;
            (BPF_F_NUMA_NODE | ACCESS, spec.key_size == 4, v >= 8 && v % 8 == 0 && v / 8 <= 127)
        }
        QUEUE | STACK => {
            if spec.value_size > (1 << 22) {
                return Err(Error::kernel(format!("{tn}: value_size {} too large", spec.value_size), Errno::E2BIG));
            }
            (BPF_F_NUMA_NODE | ACCESS, spec.key_size == 0, spec.value_size > 0)
        }
        BLOOM_FILTER => {
            if spec.map_extra & !0xf != 0 {
                return Err(einval("BLOOM_FILTER: map_extra holds only the number of hash functions (0..15)"));
            }
            (BPF_F_NUMA_NODE | ACCESS | BPF_F_ZERO_SEED, spec.key_size == 0, spec.value_size > 0)
        }
        LPM_TRIE => {
            if flags & BPF_F_NO_PREALLOC == 0 {
                return Err(einval("LPM_TRIE requires BPF_F_NO_PREALLOC"));
            }
            let k = spec.key_size;
            (BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE | ACCESS, (5..=4 + 256).contains(&k), spec.value_size > 0 && spec.value_size <= 65536)
        }
        RINGBUF => {
            let n = spec.max_entries as usize;
            let ok = n.is_power_of_two() && n % sys::page_size() == 0;
            if !ok {
                return Err(einval("RINGBUF: max_entries must be a power of two multiple of the page size"));
            }
            (BPF_F_NUMA_NODE, spec.key_size == 0, spec.value_size == 0)
        }
        other => {
            return Err(Error::kernel(
                format!("map type {other} ({}) is not supported by userbpf", map_type::name(other)),
                Errno::EINVAL,
            ))
        }
    };
    if flags & !allowed != 0 {
        return Err(einval(format!("{tn}: unsupported map_flags {:#x}", flags & !allowed)));
    }
    if !key_ok {
        return Err(einval(format!("{tn}: invalid key_size {}", spec.key_size)));
    }
    if !value_ok {
        return Err(einval(format!("{tn}: invalid value_size {}", spec.value_size)));
    }
    if spec.max_entries == 0 {
        return Err(einval(format!("{tn}: max_entries is 0")));
    }
    Ok(())
}

/// Geometry of a map file, computed at creation.
struct Geometry {
    n_buckets: u32,
    pool_size: u32,
    elem_size: usize,
    buckets_off: usize,
    elems_off: usize,
    file_len: usize,
    spare: u32,
}

fn geometry(spec: &MapSpec, ncpus: u32) -> Option<Geometry> {
    use map_type::*;
    let stride = round_up8(spec.value_size as usize);
    let max = spec.max_entries as usize;
    let page = sys::page_size();
    let mut g = Geometry { n_buckets: 0, pool_size: 0, elem_size: 0, buckets_off: HEADER_PAGE, elems_off: HEADER_PAGE, file_len: 0, spare: 0 };
    let data_len: usize = match spec.map_type {
        HASH | PERCPU_HASH | LRU_HASH | LRU_PERCPU_HASH | LPM_TRIE => {
            let percpu = matches!(spec.map_type, PERCPU_HASH | LRU_PERCPU_HASH);
            let key_len = spec.key_size as usize;
            let values = if percpu { stride.checked_mul(ncpus as usize)? } else { stride };
            g.elem_size = crate::hash::ELEM_HEADER + round_up8(key_len) + values;
            g.spare = crate::hash::spare_for(spec.max_entries);
            g.pool_size = u32::try_from(max.checked_add(g.spare as usize)?).ok()?;
            g.n_buckets = u32::try_from(max.checked_next_power_of_two()?).ok()?.max(2);
            let buckets_len = round_up(g.n_buckets as usize * crate::hash::BUCKET_SIZE, page);
            g.elems_off = HEADER_PAGE + buckets_len;
            buckets_len.checked_add(g.elem_size.checked_mul(g.pool_size as usize)?)?
        }
        ARRAY | PERCPU_ARRAY => {
            g.elem_size = if spec.map_type == PERCPU_ARRAY { stride.checked_mul(ncpus as usize)? } else { stride };
            g.elem_size.checked_mul(max)?
        }
        PROG_ARRAY | PERF_EVENT_ARRAY => {
            g.elem_size = 4;
            max.checked_mul(4)?
        }
        STACK_TRACE => {
            g.n_buckets = u32::try_from(max.checked_next_power_of_two()?).ok()?;
            g.elem_size = crate::stack_trace::BUCKET_HEADER + spec.value_size as usize;
            g.elem_size.checked_mul(g.n_buckets as usize)?
        }
        QUEUE | STACK => {
            g.elem_size = stride;
            g.pool_size = spec.max_entries.checked_add(1)?;
            stride.checked_mul(g.pool_size as usize)?
        }
        BLOOM_FILTER => {
            let bits = crate::bloom::bit_count(spec.max_entries, crate::bloom::nr_hashes(spec.map_extra))?;
            g.n_buckets = u32::try_from(bits / 64).ok()?;
            bits / 8
        }
        RINGBUF => {
            // Consumer page, producer page, data (mapped twice by users).
            g.elems_off = HEADER_PAGE + 2 * page;
            2 * page + max
        }
        _ => return None,
    };
    g.file_len = round_up(HEADER_PAGE.checked_add(data_len)?, page);
    if g.file_len > (1usize << 44) {
        return None;
    }
    Some(g)
}

/// Checks that a map header opened from disk describes a valid map whose
/// geometry is exactly what this build computes for it and fits the file,
/// so no offset read from shared memory can point outside the mapping.
fn check_geometry(h: &MapHeader, file_len: usize) -> Result<(), String> {
    let spec = MapSpec {
        map_type: h.map_type,
        key_size: h.key_size,
        value_size: h.value_size,
        max_entries: h.max_entries,
        map_flags: h.map_flags,
        map_extra: h.map_extra,
        name: String::new(),
    };
    validate(&spec).map_err(|e| format!("invalid map attributes in header: {e}"))?;
    let ncpus = h.ncpus;
    if ncpus == 0 || ncpus > 8192 {
        return Err(format!("invalid possible-CPU count {ncpus} in header"));
    }
    let g = geometry(&spec, ncpus).ok_or("map geometry overflows")?;
    let same = g.n_buckets == h.n_buckets
        && g.pool_size == h.pool_size
        && g.elem_size as u32 == h.elem_size
        && g.buckets_off as u64 == h.buckets_off
        && g.elems_off as u64 == h.elems_off
        && g.file_len as u64 == h.file_len
        && g.spare == h.spare
        && round_up8(spec.value_size as usize) as u32 == h.value_stride;
    if !same {
        return Err("map header geometry does not match its attributes (corrupt file?)".into());
    }
    if g.file_len != file_len {
        return Err(format!("map file is {file_len} bytes, its header says {}", g.file_len));
    }
    Ok(())
}

/// Reads a map file's header information without mapping it.
pub(crate) fn read_map_info(path: &Path, id: u32) -> Result<MapInfo, Error> {
    let f = fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { kind: "map", id }
        } else {
            Error::io(path, "open", e)
        }
    })?;
    let mut buf = [0u8; 96];
    f.read_exact_at(&mut buf, 0).map_err(|e| Error::io(path, "read", e))?;
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
    check_object_header(path, &buf, MAP_MAGIC, ObjectKind::Map)?;
    let name_bytes = &buf[64..80];
    let end = name_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(MapInfo {
        id: u32_at(16),
        owner: u32_at(20),
        map_type: u32_at(24),
        key_size: u32_at(28),
        value_size: u32_at(32),
        max_entries: u32_at(36),
        map_flags: u32_at(40),
        name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
    })
}

pub(crate) fn check_object_header(path: &Path, buf: &[u8], magic: u64, kind: ObjectKind) -> Result<(), Error> {
    let m = u64::from_le_bytes(buf[0..8].try_into().unwrap());
    let v = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    let k = u32::from_le_bytes(buf[12..16].try_into().unwrap());
    if m != magic || k != kind as u32 {
        return Err(Error::Incompatible { path: path.into(), reason: format!("not a userbpf {kind:?} object (bad magic)") });
    }
    if v != LAYOUT_VERSION {
        return Err(Error::Incompatible {
            path: path.into(),
            reason: format!(
                "object layout version {v} but this userbpf uses version {LAYOUT_VERSION}; \
                 every participant must run the same userbpf build"
            ),
        });
    }
    Ok(())
}

impl Registry {
    /// Creates a map (`BPF_MAP_CREATE`): validates like the kernel, sizes a
    /// new shared-memory file for `max_entries`, and publishes it atomically.
    /// A map that cannot be backed fails with `ENOMEM`; nothing else is affected.
    pub fn create_map(&self, spec: &MapSpec) -> Result<Map, Error> {
        validate(spec)?;
        let ncpus = crate::cpu::nr_possible();
        let g = geometry(spec, ncpus)
            .ok_or_else(|| Error::kernel(format!("map of {} entries is too large", spec.max_entries), Errno::ENOMEM))?;
        let sh = &self.shared;
        let id = sh.alloc_id();
        let tmp = sh.temp_path("maps", id);
        let dst = sh.object_path("maps", id);
        let fd = sys::open(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, sh.file_mode())
            .map_err(|e| Error::io(&tmp, "create", e))?;
        let cleanup = |e: Error| {
            let _ = fs::remove_file(&tmp);
            e
        };
        sys::allocate(&fd, g.file_len).map_err(|e| {
            cleanup(match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::ENOMEM) => Error::kernel(
                    format!("cannot allocate {} bytes of shared memory for map {:?}", g.file_len, spec.name),
                    Errno::ENOMEM,
                ),
                _ => Error::io(&tmp, "allocate", e),
            })
        })?;
        let mapping = Mapping::map(fd.as_raw_fd(), g.file_len).map_err(|e| cleanup(Error::io(&tmp, "mmap", e)))?;
        // SAFETY: fresh, zero-filled, private (unpublished) file at least
        // HEADER_PAGE long; we are its only user.
        let h = unsafe { &mut *(mapping.base() as *mut MapHeader) };
        h.obj = ObjectHeader { magic: MAP_MAGIC, layout_version: LAYOUT_VERSION, kind: ObjectKind::Map as u32, id, owner: sh.owner_id() };
        h.map_type = spec.map_type;
        h.key_size = spec.key_size;
        h.value_size = spec.value_size;
        h.max_entries = spec.max_entries;
        h.map_flags = spec.map_flags;
        h.ncpus = ncpus;
        h.map_extra = spec.map_extra;
        h.hash_seed = if spec.map_flags & map_flags::BPF_F_ZERO_SEED != 0 { 0 } else { sys::random_u64() };
        let nb = spec.name.as_bytes();
        let n = nb.len().min(15);
        h.name[..n].copy_from_slice(&nb[..n]);
        h.n_buckets = g.n_buckets;
        h.pool_size = g.pool_size;
        h.elem_size = g.elem_size as u32;
        h.value_stride = round_up8(spec.value_size as usize) as u32;
        h.buckets_off = g.buckets_off as u64;
        h.elems_off = g.elems_off as u64;
        h.file_len = g.file_len as u64;
        h.spare = g.spare;
        let map = Map::from_mapping(mapping, sh.clone(), &fd).map_err(cleanup)?;
        map.init_data();
        fs::rename(&tmp, &dst).map_err(|e| cleanup(Error::io(&dst, "publish", e)))?;
        sh.bump_generation();
        Ok(map)
    }

    /// Opens map `id` (`BPF_MAP_GET_FD_BY_ID`, or an agent resolving a
    /// program's map reference).
    pub fn open_map(&self, id: u32) -> Result<Map, Error> {
        let path = self.shared.object_path("maps", id);
        let fd = sys::open(&path, libc::O_RDWR, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                Error::NotFound { kind: "map", id }
            } else {
                Error::io(&path, "open", e)
            }
        })?;
        let len = sys::file_len(&fd).map_err(|e| Error::io(&path, "stat", e))?;
        if len < HEADER_PAGE {
            return Err(Error::Incompatible { path, reason: format!("map file is only {len} bytes") });
        }
        let mut buf = [0u8; 24];
        // SAFETY: reading 24 bytes into a 24-byte buffer from a valid fd.
        let r = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, 24, 0) };
        if r != 24 {
            return Err(Error::Incompatible { path, reason: "short map header".into() });
        }
        check_object_header(&path, &buf, MAP_MAGIC, ObjectKind::Map)?;
        let mapping = Mapping::map(fd.as_raw_fd(), len).map_err(|e| Error::io(&path, "mmap", e))?;
        // SAFETY: mapping is at least HEADER_PAGE bytes and holds a MapHeader.
        let h = unsafe { &*(mapping.base() as *const MapHeader) };
        check_geometry(h, len).map_err(|reason| Error::Incompatible { path, reason })?;
        Map::from_mapping(mapping, self.shared.clone(), &fd)
    }
}

impl Map {
    fn from_mapping(mapping: Mapping, shared: Arc<Shared>, fd: &OwnedFd) -> Result<Map, Error> {
        use map_type::*;
        // SAFETY: callers checked the mapping holds a full header page.
        let h = unsafe { &*(mapping.base() as *const MapHeader) };
        let kind = match h.map_type {
            HASH | PERCPU_HASH | LRU_HASH | LRU_PERCPU_HASH => Kind::Hash,
            ARRAY | PERCPU_ARRAY => Kind::Array,
            PROG_ARRAY | PERF_EVENT_ARRAY => Kind::IdArray,
            STACK_TRACE => Kind::StackTrace,
            QUEUE => Kind::Queue,
            STACK => Kind::Stack,
            LPM_TRIE => Kind::LpmTrie,
            BLOOM_FILTER => Kind::Bloom,
            RINGBUF => Kind::Ringbuf,
            t => {
                return Err(Error::kernel(format!("map type {t} ({}) is not supported", map_type::name(t)), Errno::EINVAL))
            }
        };
        let end = h.name.iter().position(|&b| b == 0).unwrap_or(16);
        let base = mapping.base();
        let mut map = Map {
            kind,
            id: h.obj.id,
            map_type: h.map_type,
            key_size: h.key_size,
            value_size: h.value_size,
            max_entries: h.max_entries,
            map_flags: h.map_flags,
            percpu: matches!(h.map_type, PERCPU_HASH | PERCPU_ARRAY | LRU_PERCPU_HASH),
            lru: matches!(h.map_type, LRU_HASH | LRU_PERCPU_HASH),
            ncpus: h.ncpus.max(1),
            value_stride: h.value_stride as usize,
            elem_size: h.elem_size as usize,
            bucket_mask: h.n_buckets.wrapping_sub(1),
            pool_size: h.pool_size,
            seed: h.hash_seed,
            // SAFETY: offsets were computed at creation inside file_len,
            // checked against the mapping length by the caller.
            buckets: unsafe { base.add(h.buckets_off as usize) },
            // SAFETY: as above.
            elems: unsafe { base.add(h.elems_off as usize) },
            name: String::from_utf8_lossy(&h.name[..end]).into_owned(),
            perf_cache: None,
            ringbuf: None,
            shared,
            mapping,
        };
        if map.map_type == PERF_EVENT_ARRAY {
            map.perf_cache = Some(crate::perf::RingCache::new(map.max_entries));
        }
        if kind == Kind::Ringbuf {
            map.ringbuf = Some(crate::ringbuf::RingbufView::new(fd, map.max_entries as usize)?);
        }
        Ok(map)
    }

    /// One-time initialisation of a fresh map's data area.
    fn init_data(&self) {
        if self.kind == Kind::Hash || self.kind == Kind::LpmTrie {
            self.hash_init();
        }
    }

    #[inline(always)]
    pub(crate) fn header(&self) -> &MapHeader {
        // SAFETY: the mapping starts with a MapHeader (checked at open).
        unsafe { &*(self.mapping.base() as *const MapHeader) }
    }

    /// Registry id.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// Kernel map type number.
    pub fn map_type(&self) -> u32 {
        self.map_type
    }
    pub fn key_size(&self) -> u32 {
        self.key_size
    }
    /// `value_size` as given at creation (one CPU's value for per-CPU maps).
    pub fn value_size(&self) -> u32 {
        self.value_size
    }
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }
    pub fn map_flags(&self) -> u32 {
        self.map_flags
    }
    pub fn map_extra(&self) -> u64 {
        self.header().map_extra
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Owner id of the creating process.
    pub fn owner(&self) -> u32 {
        self.header().obj.owner
    }
    /// Whether values are per CPU.
    pub fn is_percpu(&self) -> bool {
        self.percpu
    }
    /// Number of CPU slots of per-CPU values (possible CPUs at creation).
    pub fn nr_cpus(&self) -> u32 {
        self.ncpus
    }
    /// Size of a value buffer in the syscall view: `value_size`, or
    /// `round_up(value_size, 8) * nr_cpus` for per-CPU maps.
    pub fn syscall_value_size(&self) -> usize {
        if self.percpu {
            self.value_stride * self.ncpus as usize
        } else {
            self.value_size as usize
        }
    }
    /// Path of the map file (the server may open it to hand out an fd).
    pub fn path(&self) -> std::path::PathBuf {
        self.shared.object_path("maps", self.id)
    }

    /// Address of element `index`'s value in an ARRAY map (what
    /// `BPF_PSEUDO_MAP_VALUE` / direct value access resolve to), or `None`
    /// for other map types or an index out of range. Stable for the
    /// mapping's lifetime.
    pub fn array_value_ptr(&self, index: u32) -> Option<*mut u8> {
        if self.kind != Kind::Array || self.percpu || index >= self.max_entries {
            return None;
        }
        // SAFETY: index < max_entries: inside the data area.
        Some(unsafe { self.elems.add(index as usize * self.elem_size) })
    }

    /// Number of live elements (hash-family maps; other types: 0).
    pub fn len(&self) -> u32 {
        match self.kind {
            Kind::Hash | Kind::LpmTrie => self.header().count.0.load(Ordering::Relaxed),
            _ => 0,
        }
    }
    /// Whether a hash-family map holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Checks a hash-family map's shared structure (chains, element states,
    /// count). Slow: for tests, tools and post-crash checks without
    /// concurrent writers. Other map types have no checkable invariants
    /// beyond their fixed layout and return `Ok(None)`.
    pub fn verify(&self) -> Result<Option<crate::hash::HashStats>, String> {
        match self.kind {
            Kind::Hash | Kind::LpmTrie => self.hash_verify().map(Some),
            _ => Ok(None),
        }
    }

    /// Eagerly breaks locks held by dead processes and repairs what they
    /// protected (hash buckets, the map-wide queue lock). Waiters do this on
    /// their own after a short timeout; a reaper may call it to avoid that
    /// delay. Returns how many locks were recovered.
    pub fn recover(&self) -> u32 {
        let mut n = 0;
        if matches!(self.kind, Kind::Hash | Kind::LpmTrie) {
            n += self.hash_recover();
        }
        let word = &self.header().lock.0;
        let holder = word.load(Ordering::Acquire);
        if holder != 0 && !self.shared.owner_alive(holder) {
            // Queue/stack critical sections need no repair (see queue.rs).
            if word.compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                self.header().lock_breaks.0.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }

    /// How many locks of this map were taken over from dead processes
    /// (by waiters or [`Map::recover`]) since creation.
    pub fn lock_breaks(&self) -> u32 {
        self.header().lock_breaks.0.load(Ordering::Relaxed)
    }

    /// Enters a read section on this map's registry (see
    /// [`Registry::read_section`]).
    #[inline]
    pub fn read_section(&self) -> crate::epoch::ReadGuard<'_> {
        crate::epoch::enter(&self.shared)
    }

    /// Starts a program run on this map's registry (see
    /// [`Registry::enter_run`]).
    #[inline]
    pub fn enter_run(&self, claim_cpu: bool) -> crate::epoch::RunGuard<'_> {
        crate::epoch::enter_run(&self.shared, claim_cpu)
    }

    /// The registry this map belongs to.
    pub fn registry(&self) -> Registry {
        Registry { shared: self.shared.clone() }
    }

    #[inline(always)]
    pub(crate) fn check_key(&self, key: &[u8]) -> Result<(), Errno> {
        if key.len() != self.key_size as usize {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn check_value(&self, value: &[u8]) -> Result<(), Errno> {
        if value.len() != self.syscall_value_size() {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    // ---------------- syscall view ----------------

    /// `BPF_MAP_LOOKUP_ELEM`: copies the value into `out`
    /// ([`Map::syscall_value_size`] bytes).
    pub fn lookup(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        match self.kind {
            Kind::Hash => self.hash_lookup_copy(key, out),
            Kind::Array => self.array_lookup_copy(key, out),
            Kind::IdArray => self.id_array_lookup(key, out),
            Kind::StackTrace => self.stack_trace_lookup(key, out),
            Kind::Queue | Kind::Stack => {
                if !key.is_empty() {
                    return Err(Errno::EINVAL);
                }
                self.queue_peek(out)
            }
            Kind::LpmTrie => self.lpm_lookup_copy(key, out),
            Kind::Bloom => {
                if !key.is_empty() {
                    return Err(Errno::EINVAL);
                }
                self.bloom_peek(out)
            }
            Kind::Ringbuf => Err(Errno::ENOTSUPP),
        }
    }

    /// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY`/`BPF_NOEXIST`/`BPF_EXIST`.
    /// Per-CPU maps take all CPUs' values ([`Map::syscall_value_size`]).
    /// PROG_ARRAY / PERF_EVENT_ARRAY values are registry ids (program id or
    /// perf ring id) — the syscall server translates fds before calling.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
        match self.kind {
            Kind::Hash => self.hash_update_sys(key, value, flags),
            Kind::Array => self.array_update_sys(key, value, flags),
            Kind::IdArray => self.id_array_update(key, value, flags),
            Kind::StackTrace => Err(Errno::EINVAL),
            Kind::Queue | Kind::Stack => {
                if !key.is_empty() {
                    return Err(Errno::EINVAL);
                }
                self.check_value(value)?;
                self.queue_push(value, flags)
            }
            Kind::LpmTrie => self.lpm_update(key, value, flags),
            Kind::Bloom => {
                if !key.is_empty() || flags != 0 {
                    return Err(Errno::EINVAL);
                }
                self.check_value(value)?;
                self.bloom_push(value);
                Ok(())
            }
            Kind::Ringbuf => Err(Errno::ENOTSUPP),
        }
    }

    /// `BPF_MAP_DELETE_ELEM`.
    pub fn delete(&self, key: &[u8]) -> Result<(), Errno> {
        match self.kind {
            Kind::Hash => {
                self.check_key(key)?;
                self.hash_delete(key.as_ptr())
            }
            Kind::Array => Err(Errno::EINVAL),
            Kind::IdArray => self.id_array_delete(key),
            Kind::StackTrace => self.stack_trace_delete(key),
            Kind::Queue | Kind::Stack => Err(Errno::EINVAL),
            Kind::Bloom => Err(Errno::EOPNOTSUPP),
            Kind::LpmTrie => self.lpm_delete(key),
            Kind::Ringbuf => Err(Errno::ENOTSUPP),
        }
    }

    /// `BPF_MAP_GET_NEXT_KEY`: `key = None` (or a key not in the map) gives
    /// the first key; the last key gives `ENOENT`.
    pub fn get_next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
        if next.len() != self.key_size as usize {
            return Err(Errno::EINVAL);
        }
        if let Some(k) = key {
            self.check_key(k)?;
        }
        match self.kind {
            Kind::Hash => self.hash_get_next_key(key, next),
            Kind::Array | Kind::IdArray => self.array_get_next_key(key, next),
            Kind::StackTrace => self.stack_trace_get_next_key(key, next),
            Kind::LpmTrie => self.lpm_get_next_key(key, next),
            Kind::Queue | Kind::Stack => Err(Errno::EINVAL),
            Kind::Bloom => Err(Errno::EOPNOTSUPP),
            Kind::Ringbuf => Err(Errno::ENOTSUPP),
        }
    }

    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`: hash maps (by key) and queue/stack
    /// (pop, key empty). Other types: `ENOTSUPP` like the kernel.
    pub fn lookup_and_delete(&self, key: &[u8], out: &mut [u8]) -> Result<(), Errno> {
        match self.kind {
            Kind::Hash => self.hash_lookup_and_delete(key, out),
            Kind::Queue | Kind::Stack => {
                if !key.is_empty() {
                    return Err(Errno::EINVAL);
                }
                self.queue_pop(out)
            }
            _ => Err(Errno::ENOTSUPP),
        }
    }

    // ---------------- program view ----------------

    /// `bpf_map_lookup_elem` from a program: pointer to the value (for
    /// per-CPU maps, the slot of the CPU the thread runs on), or null. The
    /// pointer stays valid for this mapping's lifetime; see the crate docs
    /// for how long its contents keep belonging to the key. Programs run
    /// under a [`crate::RunGuard`] use [`Map::prog_lookup_on_cpu`].
    ///
    /// # Safety
    /// `key` must point to `key_size` readable bytes.
    #[inline]
    pub unsafe fn prog_lookup(&self, key: *const u8) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        unsafe { self.prog_lookup_on_cpu(key, crate::cpu::CURRENT) }
    }

    /// `bpf_map_lookup_elem` from a program run whose CPU is `cpu`
    /// ([`crate::RunGuard::cpu`]: the claimed CPU slot, or
    /// [`crate::cpu::CURRENT`]); `cpu` only matters for per-CPU maps.
    ///
    /// # Safety
    /// `key` must point to `key_size` readable bytes.
    #[inline]
    pub unsafe fn prog_lookup_on_cpu(&self, key: *const u8, cpu: u32) -> *mut u8 {
        match self.kind {
            // SAFETY: forwarded caller contract.
            Kind::Hash => unsafe { self.hash_prog_lookup(key, cpu) },
            // SAFETY: forwarded caller contract.
            Kind::Array => unsafe { self.array_prog_lookup(key, cpu) },
            // SAFETY: forwarded caller contract.
            Kind::LpmTrie => unsafe { self.lpm_prog_lookup(key) },
            // Fd arrays, stack traces, queues, bloom filters and ring buffers
            // are not readable through bpf_map_lookup_elem in programs.
            _ => std::ptr::null_mut(),
        }
    }

    /// `bpf_map_update_elem` from a program: `value` is one CPU's value
    /// (`value_size` bytes); per-CPU maps update the slot of the CPU the
    /// thread runs on (a new element's other slots are zeroed). Returns 0
    /// or -errno. Programs run under a [`crate::RunGuard`] use
    /// [`Map::prog_update_on_cpu`].
    ///
    /// # Safety
    /// `key`/`value` must point to `key_size`/`value_size` readable bytes.
    #[inline]
    pub unsafe fn prog_update(&self, key: *const u8, value: *const u8, flags: u64) -> i64 {
        // SAFETY: forwarded caller contract.
        unsafe { self.prog_update_on_cpu(key, value, flags, crate::cpu::CURRENT) }
    }

    /// `bpf_map_update_elem` from a program run whose CPU is `cpu` (see
    /// [`Map::prog_lookup_on_cpu`]).
    ///
    /// # Safety
    /// `key`/`value` must point to `key_size`/`value_size` readable bytes.
    #[inline]
    pub unsafe fn prog_update_on_cpu(&self, key: *const u8, value: *const u8, flags: u64, cpu: u32) -> i64 {
        let r = match self.kind {
            // SAFETY: forwarded caller contract.
            Kind::Hash => unsafe { self.hash_prog_update(key, value, flags, cpu) },
            // SAFETY: forwarded caller contract.
            Kind::Array => unsafe { self.array_prog_update(key, value, flags, cpu) },
            Kind::LpmTrie => {
                // SAFETY: forwarded caller contract.
                let (k, v) = unsafe {
                    (
                        std::slice::from_raw_parts(key, self.key_size as usize),
                        std::slice::from_raw_parts(value, self.value_size as usize),
                    )
                };
                self.lpm_update(k, v, flags)
            }
            // SAFETY: forwarded caller contract.
            Kind::Queue | Kind::Stack => self.queue_push(unsafe { std::slice::from_raw_parts(value, self.value_size as usize) }, flags),
            Kind::Bloom => {
                // SAFETY: forwarded caller contract.
                self.bloom_push(unsafe { std::slice::from_raw_parts(value, self.value_size as usize) });
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        };
        match r {
            Ok(()) => 0,
            Err(e) => e.as_neg(),
        }
    }

    /// `bpf_map_delete_elem` from a program. Returns 0 or -errno.
    ///
    /// # Safety
    /// `key` must point to `key_size` readable bytes.
    #[inline]
    pub unsafe fn prog_delete(&self, key: *const u8) -> i64 {
        let r = match self.kind {
            Kind::Hash => self.hash_delete(key),
            Kind::Array | Kind::Queue | Kind::Stack | Kind::Bloom => Err(Errno::EINVAL),
            // SAFETY: forwarded caller contract.
            Kind::LpmTrie => self.lpm_delete(unsafe { std::slice::from_raw_parts(key, self.key_size as usize) }),
            // SAFETY: forwarded caller contract.
            Kind::IdArray | Kind::StackTrace => unsafe {
                let k = std::slice::from_raw_parts(key, 4);
                if self.kind == Kind::IdArray { self.id_array_delete(k) } else { self.stack_trace_delete(k) }
            },
            Kind::Ringbuf => Err(Errno::EINVAL),
        };
        match r {
            Ok(()) => 0,
            Err(e) => e.as_neg(),
        }
    }

    /// `bpf_map_push_elem` (queue/stack; bloom filter add). Returns 0 or -errno.
    ///
    /// # Safety
    /// `value` must point to `value_size` readable bytes.
    pub unsafe fn prog_push(&self, value: *const u8, flags: u64) -> i64 {
        // SAFETY: forwarded caller contract.
        let v = unsafe { std::slice::from_raw_parts(value, self.value_size as usize) };
        let r = match self.kind {
            Kind::Queue | Kind::Stack => self.queue_push(v, flags),
            Kind::Bloom if flags == 0 => {
                self.bloom_push(v);
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        };
        r.map_or_else(|e| e.as_neg(), |_| 0)
    }

    /// `bpf_map_pop_elem` (queue/stack). Returns 0 or -errno.
    ///
    /// # Safety
    /// `out` must point to `value_size` writable bytes.
    pub unsafe fn prog_pop(&self, out: *mut u8) -> i64 {
        // SAFETY: forwarded caller contract.
        let o = unsafe { std::slice::from_raw_parts_mut(out, self.value_size as usize) };
        let r = match self.kind {
            Kind::Queue | Kind::Stack => self.queue_pop(o),
            _ => Err(Errno::EINVAL),
        };
        r.map_or_else(|e| e.as_neg(), |_| 0)
    }

    /// `bpf_map_peek_elem` (queue/stack; bloom filter membership test).
    /// Returns 0 or -errno (`-ENOENT` when empty / not present).
    ///
    /// # Safety
    /// `value` must point to `value_size` bytes (written for queue/stack,
    /// read for bloom filters).
    pub unsafe fn prog_peek(&self, value: *mut u8) -> i64 {
        // SAFETY: forwarded caller contract.
        let v = unsafe { std::slice::from_raw_parts_mut(value, self.value_size as usize) };
        let r = match self.kind {
            Kind::Queue | Kind::Stack => self.queue_peek(v),
            Kind::Bloom => self.bloom_peek(v),
            _ => Err(Errno::EINVAL),
        };
        r.map_or_else(|e| e.as_neg(), |_| 0)
    }
}
