//! The server's process-local object table: which file descriptors are
//! userbpf objects (maps, programs, perf events, links, BTF), and what they
//! are.
//!
//! Every object handed to the loader is a real file descriptor (a registry
//! file or a memfd). Objects are keyed by the descriptor's `(st_dev, st_ino)`,
//! not by fd number, so `dup`, `dup2`, `fcntl(F_DUPFD)` and inherited fds all
//! name the same object without the server interposing them. An object dies
//! when the last descriptor referring to it in this process is closed
//! ([`Table::release_if_unreferenced`]).
//!
//! Locking: one `Mutex` around the table. It is taken only from interposed
//! calls made by the loader's own threads (never from signal handlers: the
//! interposers are not async-signal-safe, and bpftrace's SIGINT handler only
//! sets a flag) and never held while calling back into code that could
//! re-enter the server.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use crate::backend;

/// Identity of an open file: `(st_dev, st_ino)`.
pub type FileKey = (u64, u64);

/// A userbpf object behind a file descriptor.
pub enum Object {
    Map(MapObject),
    Prog(ProgObject),
    /// `perf_event_open` of the uprobe PMU.
    Uprobe(UprobeEvent),
    /// `perf_event_open(PERF_COUNT_SW_BPF_OUTPUT)` on one CPU: a perf ring.
    Output(OutputEvent),
    /// `perf_event_open(PERF_COUNT_SW_CPU_CLOCK)`: `interval:`/`profile:`.
    Timer(crate::timer::TimerEvent),
    /// `BPF_LINK_CREATE(BPF_PERF_EVENT)`: holds its perf event enabled.
    Link(LinkObject),
    /// `BPF_BTF_LOAD`: the loader's BTF, kept for `OBJ_GET_INFO_BY_FD`.
    Btf(BtfObject),
    /// `BPF_{PROG,MAP}_GET_FD_BY_ID` of a registry object this loader did
    /// not create (bpftool listing another loader's programs): only
    /// `OBJ_GET_INFO_BY_FD` answers, and closing it removes nothing.
    Foreign(ForeignObject),
}

/// A loaded BTF blob. Programs and maps may name it (`prog_btf_fd`,
/// `btf_fd`); userbpf's verifier does not need it, so it is only kept.
pub struct BtfObject {
    pub id: u32,
    pub data: Vec<u8>,
}

/// A registry object opened by id (see [`Object::Foreign`]).
pub enum ForeignObject {
    Prog(u32),
    Map(u32),
    /// A registry attachment, shown as the kernel's perf-event link.
    Link(u32),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Map(_) => "map",
            Object::Prog(_) => "program",
            Object::Uprobe(_) => "uprobe perf event",
            Object::Output(_) => "BPF output perf event",
            Object::Timer(_) => "cpu-clock perf event",
            Object::Link(_) => "link",
            Object::Btf(_) => "BTF",
            Object::Foreign(ForeignObject::Prog(_)) => "program (by id)",
            Object::Foreign(ForeignObject::Map(_)) => "map (by id)",
            Object::Foreign(ForeignObject::Link(_)) => "link (by id)",
        }
    }
}

pub struct MapObject {
    /// The registry map (removed when this object is dropped).
    pub map: backend::Map,
    /// The map as the loader created it (a `CGROUP_ARRAY` keeps its type
    /// here while the registry holds it as an `ARRAY`, see `bpf::map_create`).
    pub spec: backend::MapSpec,
    /// Set by `BPF_MAP_FREEZE`: syscall-side writes fail with EPERM and
    /// writable mappings are refused, as in the kernel.
    pub frozen: std::sync::atomic::AtomicBool,
}

impl MapObject {
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::Acquire)
    }
}

pub struct ProgObject {
    /// The registry record (removed when this object is dropped).
    pub prog: backend::Prog,
    pub id: u32,
    pub prog_type: u32,
    /// `expected_attach_type` at load (`BPF_TRACE_UPROBE_MULTI` programs
    /// are the only ones a uprobe_multi link accepts, as in the kernel).
    pub expected_attach_type: u32,
    pub name: String,
    /// Instructions as stored (map fds already resolved to registry ids).
    pub insn_count: u32,
    /// Registry ids of the maps the program references.
    pub map_ids: Vec<u32>,
    /// Its BTF function and line information, if the load carried any.
    pub btf: Option<crate::btf_info::BtfInfo>,
}

pub struct UprobeEvent {
    pub attachment: backend::Attachment,
}

pub struct OutputEvent {
    pub ring: backend::Ring,
    pub cpu: u32,
    /// Set once the ring's id was stored in a perf event array: from then on
    /// programs write into this ring, so it can no longer be replaced by
    /// one of another size (`perf::prepare_ring_mmap`).
    pub published: std::sync::atomic::AtomicBool,
}

/// A `BPF_LINK_CREATE` link.
pub struct LinkObject {
    /// `enum bpf_link_type`: `BPF_LINK_TYPE_PERF_EVENT` or `…_UPROBE_MULTI`.
    pub link_type: u32,
    /// The events this link enabled, kept alive by the link: the loader's
    /// perf event for a perf-event link; one uprobe per offset, owned by the
    /// link alone, for a uprobe_multi link.
    pub events: Vec<Arc<Object>>,
    pub prog_id: u32,
    /// Registry id of the link (`bpf_link_info.id`).
    pub id: u32,
    /// uprobe_multi: what the loader asked for, for `bpf_link_info`.
    pub uprobe_multi: Option<UprobeMultiInfo>,
}

/// `bpf_link_info.uprobe_multi` of a uprobe_multi link.
pub struct UprobeMultiInfo {
    pub path: String,
    pub offsets: Vec<u64>,
    pub ref_ctr_offsets: Vec<u64>,
    pub cookies: Vec<u64>,
    pub flags: u32,
    pub pid: u32,
}

impl Drop for LinkObject {
    /// Closing a link detaches: its perf events go back to disabled (a
    /// uprobe_multi link's own uprobes are removed as they drop).
    fn drop(&mut self) {
        for event in &self.events {
            let _ = crate::perf::set_enabled(event, false);
        }
    }
}

/// All live objects of this process.
pub struct Table {
    by_file: Mutex<BTreeMap<FileKey, Arc<Object>>>,
}

/// The process-wide table.
pub static TABLE: Table = Table {
    by_file: Mutex::new(BTreeMap::new()),
};

/// `(st_dev, st_ino)` of an open descriptor, `None` if `fd` is not open.
pub fn file_key(fd: RawFd) -> Option<FileKey> {
    // SAFETY: fstat writes into a zeroed stat buffer we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        Some((st.st_dev, st.st_ino))
    }
}

impl Table {
    /// Register `object` as the object behind `fd`.
    pub fn insert(&self, fd: RawFd, object: Object) -> Result<Arc<Object>, i32> {
        let key = file_key(fd).ok_or(libc::EBADF)?;
        let object = Arc::new(object);
        self.by_file
            .lock()
            .map_err(|_| libc::EIO)?
            .insert(key, object.clone());
        Ok(object)
    }

    /// Replace the object behind `fd` (file `old`) by `object`, whose file
    /// is already open as `fd` (the caller `dup2`ed it there). Returns the
    /// old object so the caller drops it outside the lock.
    pub fn replace(
        &self,
        old: FileKey,
        fd: RawFd,
        object: Object,
    ) -> Result<Option<Arc<Object>>, i32> {
        let key = file_key(fd).ok_or(libc::EBADF)?;
        let mut table = self.by_file.lock().map_err(|_| libc::EIO)?;
        let previous = table.remove(&old);
        table.insert(key, Arc::new(object));
        Ok(previous)
    }

    /// Every object (for what one object's change implies for its siblings).
    pub fn all(&self) -> Vec<Arc<Object>> {
        self.by_file.lock().map(|t| t.values().cloned().collect()).unwrap_or_default()
    }

    /// True when no object exists (lets interposers skip `fstat`).
    pub fn is_empty(&self) -> bool {
        self.by_file.lock().map(|t| t.is_empty()).unwrap_or(true)
    }

    /// The object behind `fd`, if it is one of ours.
    pub fn get(&self, fd: RawFd) -> Option<Arc<Object>> {
        if fd < 0 || self.is_empty() {
            return None;
        }
        let key = file_key(fd)?;
        self.by_file.lock().ok()?.get(&key).cloned()
    }

    /// The object behind `key`.
    pub fn get_key(&self, key: FileKey) -> Option<Arc<Object>> {
        self.by_file.lock().ok()?.get(&key).cloned()
    }

    /// After `fd` (which referred to `key`) was closed: drop the object if no
    /// other descriptor of this process still refers to the same file.
    /// Returns the object so the caller drops it (which releases its
    /// registry objects) outside the lock.
    pub fn release_if_unreferenced(&self, key: FileKey) -> Option<Arc<Object>> {
        if still_open_elsewhere(key) {
            return None;
        }
        self.by_file.lock().ok()?.remove(&key)
    }

    /// Every object (for `epoll_wait` readiness and shutdown).
    pub fn snapshot(&self) -> Vec<(FileKey, Arc<Object>)> {
        self.by_file
            .lock()
            .map(|t| t.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }
}

/// Whether any open descriptor of this process refers to `key`
/// (scans `/proc/self/fd`; only done when one of our objects' fds closes).
fn still_open_elsewhere(key: FileKey) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return true; // cannot tell: keep the object rather than break a live fd
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        if file_key(fd) == Some(key) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::TimerEvent;

    fn memfd() -> RawFd {
        crate::sysfs::memfd_with(c"objects-test", b"").expect("memfd")
    }

    fn close(fd: RawFd) {
        // SAFETY: closing a descriptor this test opened.
        unsafe { crate::real::close(fd) };
    }

    #[test]
    fn dup_names_the_same_object_and_keeps_it_alive() {
        let table = Table {
            by_file: Mutex::new(BTreeMap::new()),
        };
        let fd = memfd();
        let key = file_key(fd).expect("open fd");
        table
            .insert(
                fd,
                Object::Timer(TimerEvent::new(1_000_000, false, -1, -1).expect("timer")),
            )
            .expect("insert");
        // SAFETY: duplicating our own descriptor.
        let dup = unsafe { libc::dup(fd) };
        assert!(
            matches!(table.get(dup).as_deref(), Some(Object::Timer(_))),
            "dup must find the object"
        );
        close(fd);
        assert!(
            table.release_if_unreferenced(key).is_none(),
            "the dup still refers to it"
        );
        assert!(table.get(dup).is_some());
        close(dup);
        assert!(
            table.release_if_unreferenced(key).is_some(),
            "last fd closed: released"
        );
        assert!(table.is_empty());
    }

    #[test]
    fn foreign_fds_are_not_objects() {
        let table = Table {
            by_file: Mutex::new(BTreeMap::new()),
        };
        let ours = memfd();
        table
            .insert(
                ours,
                Object::Timer(TimerEvent::new(1_000_000, false, -1, -1).expect("timer")),
            )
            .expect("insert");
        let other = memfd();
        assert!(table.get(other).is_none());
        assert!(table.get(-1).is_none());
        close(other);
        close(ours);
    }
}
