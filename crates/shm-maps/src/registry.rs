//! The per-user registry directory: where every userbpf participant finds
//! maps, programs, attachments (links) and perf rings, plus process liveness.
//!
//! Layout of the directory (default `/dev/shm/userbpf-<uid>`, or
//! `$USERBPF_DIR`):
//!
//! ```text
//! registry        header page (magic, layout version, id allocator, generation futex word,
//!                 reclamation epoch, CPU-slot counters), reader slots, CPU slots
//! owners/<id>     one file per live participant process, OFD-locked for its lifetime
//! maps/<id>       one file per map, sized for its max_entries
//! progs/<id>      program records (instructions with registry map ids)
//! links/<id>      attachment records (uprobe/uretprobe/perf-event)
//! rings/<id>      perf rings, laid out exactly like the kernel's perf mmap
//! ```
//!
//! Objects are written to a temporary name and renamed into place, so a
//! reader never sees half an object. Every change bumps the **generation**
//! word, on which traced processes can `FUTEX_WAIT` instead of polling.
//!
//! Liveness works across PID namespaces: each process holds an OFD write lock
//! on its `owners/<id>` file; "owner dead" means "someone else can take that
//! lock". Objects record their owner id; [`Registry::reap`] removes the
//! objects of dead owners (run at open and periodically by the agent).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use crate::error::Error;
use crate::layout::*;
use crate::sys::{self, Mapping};

/// Reader-slot owner of read-only handles (`open_existing`). It has no
/// owner file, so a reclaimer that finds such a slot blocking reuse treats
/// it as dead: inspection tools get best-effort protection only.
pub(crate) const ANONYMOUS_READER: u32 = u32::MAX;

/// Environment variable overriding the registry directory.
pub const ENV_DIR: &str = "USERBPF_DIR";
/// Environment variable: `1` accepts a group-accessible directory (a volume
/// shared between containers whose processes share a group).
pub const ENV_SHARED: &str = "USERBPF_SHARED";

const SUBDIRS: [&str; 5] = ["owners", "maps", "progs", "links", "rings"];

/// The `registry` file's header.
#[repr(C)]
struct RegistryHeader {
    magic: u64,
    layout_version: u32,
    header_size: u32,
    _pad: [u8; 48],
    /// Next object id (shared by all kinds; ids are never reused).
    next_id: PaddedU32,
    /// Bumped (and futex-woken) on every registry change.
    generation: PaddedU32,
    /// Element reclamation epochs (see `epoch`).
    epoch: crate::epoch::EpochState,
    /// CPU-slot count and counters (see `cpu_slot`).
    cpu_slots: crate::cpu_slot::CpuSlotState,
}

/// Header page, then the reader slots, then the CPU slots.
const REGISTRY_HEADER_PAGE: usize = 4096;
const CPU_SLOTS_OFFSET: usize = REGISTRY_HEADER_PAGE + crate::epoch::READER_SLOTS * crate::epoch::SLOT_SIZE;
const REGISTRY_FILE_SIZE: usize = CPU_SLOTS_OFFSET + crate::cpu_slot::MAX_CPU_SLOTS * crate::cpu_slot::CPU_SLOT_SIZE;
const _: () = assert!(std::mem::size_of::<crate::cpu_slot::CpuSlot>() == crate::cpu_slot::CPU_SLOT_SIZE);
const _: () = assert!(std::mem::size_of::<RegistryHeader>() <= REGISTRY_HEADER_PAGE);

/// Current fork generation of this process (changes in a forked child).
pub(crate) fn fork_epoch() -> u32 {
    FORK_EPOCH.load(Ordering::Relaxed)
}

/// Incremented in the child after `fork()`: a child is a new participant and
/// must not act under its parent's owner id (a SIGKILLed child holding a map
/// lock must be detectable as dead while its parent lives).
static FORK_EPOCH: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
}

fn install_fork_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only does an atomic add, which is
        // async-signal-safe and valid in a freshly forked child.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// State shared by a [`Registry`] and every object opened through it.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    /// Whether files are created group-accessible (`USERBPF_SHARED=1`).
    shared_mode: bool,
    /// Opened with `open_existing`: no owner registration until a write.
    read_only: bool,
    header: Mapping,
    /// Number of CPU slots (from the header, validated at open).
    cpu_slot_count: u32,
    /// `(fork epoch << 32) | owner id` of this process; 0 = not registered.
    owner: AtomicU64,
    owner_fd: Mutex<Option<OwnedFd>>,
}

impl Shared {
    fn header(&self) -> &RegistryHeader {
        // SAFETY: the mapping is REGISTRY_FILE_SIZE bytes, validated at open,
        // and the header is only accessed through atomics after creation.
        unsafe { &*(self.header.base() as *const RegistryHeader) }
    }

    #[inline(always)]
    pub(crate) fn epoch_state(&self) -> &crate::epoch::EpochState {
        &self.header().epoch
    }

    #[inline(always)]
    pub(crate) fn reader_slot(&self, i: usize) -> &crate::epoch::ReaderSlot {
        assert!(i < crate::epoch::READER_SLOTS);
        // SAFETY: slot i lies inside the REGISTRY_FILE_SIZE mapping, 64-aligned.
        unsafe {
            &*(self.header.base().add(REGISTRY_HEADER_PAGE + i * crate::epoch::SLOT_SIZE) as *const crate::epoch::ReaderSlot)
        }
    }

    #[inline(always)]
    pub(crate) fn cpu_slot_state(&self) -> &crate::cpu_slot::CpuSlotState {
        &self.header().cpu_slots
    }

    #[inline(always)]
    pub(crate) fn cpu_slot_count(&self) -> u32 {
        self.cpu_slot_count
    }

    /// CPU slot `i` (`i < cpu_slot_count()`, which every caller derives
    /// its index from).
    #[inline(always)]
    pub(crate) fn cpu_slot(&self, i: u32) -> &crate::cpu_slot::CpuSlot {
        debug_assert!(i < self.cpu_slot_count);
        let i = (i as usize).min(crate::cpu_slot::MAX_CPU_SLOTS - 1);
        // SAFETY: slot i < MAX_CPU_SLOTS lies inside the REGISTRY_FILE_SIZE
        // mapping, 64-aligned; it is only accessed through atomics.
        unsafe {
            &*(self.header.base().add(CPU_SLOTS_OFFSET + i * crate::cpu_slot::CPU_SLOT_SIZE)
                as *const crate::cpu_slot::CpuSlot)
        }
    }

    /// This process's owner id (registers on first use and after fork).
    #[inline(always)]
    pub(crate) fn owner_id(&self) -> u32 {
        let v = self.owner.load(Ordering::Relaxed);
        if v != 0 && (v >> 32) as u32 == FORK_EPOCH.load(Ordering::Relaxed) {
            return v as u32;
        }
        self.register_owner()
    }

    #[cold]
    fn register_owner(&self) -> u32 {
        let mut slot = self.owner_fd.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = FORK_EPOCH.load(Ordering::Relaxed);
        let v = self.owner.load(Ordering::Relaxed);
        if v != 0 && (v >> 32) as u32 == epoch {
            return v as u32;
        }
        // After fork the inherited fd shares the parent's lock; closing our
        // copy does not release it while the parent keeps its own.
        *slot = None;
        match self.create_owner_file() {
            Ok((id, fd)) => {
                *slot = Some(fd);
                self.owner.store(((epoch as u64) << 32) | id as u64, Ordering::Relaxed);
                id
            }
            Err(_) => {
                // Cannot register (directory vanished, out of fds): act under
                // an id nobody holds, which others will see as dead. Never
                // fail a hot-path caller over it.
                let id = self.alloc_id();
                self.owner.store(((epoch as u64) << 32) | id as u64, Ordering::Relaxed);
                id
            }
        }
    }

    fn create_owner_file(&self) -> io::Result<(u32, OwnedFd)> {
        let id = self.alloc_id();
        let tmp = self.dir.join("owners").join(format!(".tmp-{id}"));
        let fd = sys::open(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, self.file_mode())?;
        // Lock before the file becomes visible, so nobody can see it unlocked.
        if !sys::ofd_try_lock(&fd)? {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let _ = fd_write_all(&fd, format!("pid {}\n", std::process::id()).as_bytes());
        fs::rename(&tmp, self.dir.join("owners").join(id.to_string()))?;
        Ok((id, fd))
    }

    /// Owner id for a reader slot: a read-only handle that never wrote
    /// claims slots as [`ANONYMOUS_READER`] instead of registering.
    pub(crate) fn reader_owner_id(&self) -> u32 {
        if self.read_only && self.owner.load(Ordering::Relaxed) == 0 {
            return ANONYMOUS_READER;
        }
        self.owner_id()
    }

    /// Whether the process that registered `owner` still runs.
    pub(crate) fn owner_alive(&self, owner: u32) -> bool {
        if owner == 0 {
            return false;
        }
        let v = self.owner.load(Ordering::Relaxed);
        if v as u32 == owner && (v >> 32) as u32 == FORK_EPOCH.load(Ordering::Relaxed) {
            return true;
        }
        let path = self.dir.join("owners").join(owner.to_string());
        match sys::open(&path, libc::O_RDWR, 0) {
            // Closing `fd` releases the probe lock if we got it.
            Ok(fd) => !matches!(sys::ofd_try_lock(&fd), Ok(true)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
            // Unknown (EMFILE, EACCES): assume alive, never break a live lock.
            Err(_) => true,
        }
    }

    pub(crate) fn alloc_id(&self) -> u32 {
        self.header().next_id.0.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn file_mode(&self) -> u32 {
        if self.shared_mode {
            0o660
        } else {
            0o600
        }
    }

    pub(crate) fn bump_generation(&self) {
        let g = &self.header().generation.0;
        g.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake_all(g);
    }

    pub(crate) fn object_path(&self, sub: &str, id: u32) -> PathBuf {
        self.dir.join(sub).join(id.to_string())
    }

    /// A fresh temporary path in `sub` for building an object.
    pub(crate) fn temp_path(&self, sub: &str, id: u32) -> PathBuf {
        self.dir
            .join(sub)
            .join(format!(".tmp-{}-{id}-{:x}", self.owner_id(), sys::random_u64() as u32))
    }
}

impl Drop for Shared {
    /// The last handle of this process on the registry is gone: withdraw
    /// the owner file, so our objects count as dead and get reaped — the way
    /// the kernel frees a loader's objects when its last fd closes. (After
    /// fork, a child only removes the file it registered itself.)
    fn drop(&mut self) {
        let v = *self.owner.get_mut();
        if v != 0 && (v >> 32) as u32 == FORK_EPOCH.load(Ordering::Relaxed) {
            let _ = fs::remove_file(self.dir.join("owners").join((v as u32).to_string()));
        }
    }
}

fn fd_write_all(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: the File borrows the raw fd only for this call; ManuallyDrop
    // keeps it from closing the fd owned by `fd`.
    let f = std::mem::ManuallyDrop::new(unsafe {
        <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd.as_raw_fd())
    });
    (&*f).write_all(buf)
}

/// What an agent records in its owner file's status line after each
/// reconcile: the registry generation its probes reflect, how many are
/// installed, and which links they are. Written by the agent's watcher,
/// read by `userbpf attach` (to wait until probes are live) and `list`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub generation: u32,
    pub probes: usize,
    /// Ids of the installed links, ascending.
    pub links: Vec<u32>,
    /// Program runs per installed link (`(link id, runs)`), ascending ids.
    pub hits: Vec<(u32, u64)>,
}

impl AgentStatus {
    /// The status line (`reconciled G probes N links 3,5 hits 3:120,5:7`).
    pub fn line(&self) -> String {
        let links: Vec<String> = self.links.iter().map(u32::to_string).collect();
        let hits: Vec<String> = self.hits.iter().map(|(id, n)| format!("{id}:{n}")).collect();
        format!("reconciled {} probes {} links {} hits {}", self.generation, self.probes, links.join(","), hits.join(","))
    }

    /// Reads a status line written by [`AgentStatus::line`].
    pub fn parse(line: &str) -> Option<AgentStatus> {
        let mut w = line.split_whitespace();
        let (Some("reconciled"), Some(g), Some("probes"), Some(n)) = (w.next(), w.next(), w.next(), w.next()) else {
            return None;
        };
        let mut links = Vec::new();
        let mut hits = Vec::new();
        while let Some(word) = w.next() {
            match word {
                "links" => links = w.next().unwrap_or("").split(',').filter_map(|id| id.parse().ok()).collect(),
                "hits" => {
                    hits = w
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .filter_map(|h| {
                            let (id, n) = h.split_once(':')?;
                            Some((id.parse().ok()?, n.parse().ok()?))
                        })
                        .collect()
                }
                _ => {}
            }
        }
        Some(AgentStatus { generation: g.parse().ok()?, probes: n.parse().ok()?, links, hits })
    }
}

/// Options for [`Registry::open_with`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Accept (and create) a group-accessible directory, for a volume shared
    /// by containers. Owner must still be this uid, or the directory's group
    /// one of ours with group rwx. Other-permission bits are always refused.
    pub shared: bool,
}

impl RegistryOptions {
    /// Options from the environment (`USERBPF_SHARED=1`).
    pub fn from_env() -> Self {
        RegistryOptions { shared: std::env::var_os(ENV_SHARED).is_some_and(|v| v == "1") }
    }
}

/// Information about a map, from its file header (see [`Registry::maps`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    pub id: u32,
    pub owner: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: String,
}

/// A registered participant process (see [`Registry::owners`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    pub id: u32,
    /// Pid as the process saw itself (its own PID namespace); -1 if unknown.
    pub pid: i32,
    /// Role set with [`Registry::set_role`], empty if none.
    pub role: String,
    /// Status set with [`Registry::set_status`], empty if none (an agent's
    /// is an [`AgentStatus`] line).
    pub status: String,
    pub alive: bool,
}

/// A program record. At creation `id` and `owner` are ignored (assigned).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgRecord {
    pub id: u32,
    pub owner: u32,
    /// Kernel `enum bpf_prog_type`.
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub prog_flags: u32,
    pub kern_version: u32,
    pub name: String,
    pub license: String,
    /// Raw `struct bpf_insn` bytes (multiple of 8). Map references are
    /// `lddw` with `src_reg = BPF_PSEUDO_MAP_FD` (or `BPF_PSEUDO_MAP_VALUE`)
    /// and `imm` = the *registry map id* (the server translates fds).
    pub insns: Vec<u8>,
    /// Registry ids of every map the program references.
    pub map_ids: Vec<u32>,
    /// Verifier log or verdict, if any.
    pub verifier_log: String,
}

/// Kind of attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum LinkKind {
    Uprobe = 1,
    Uretprobe = 2,
    /// A software perf event (interval/profile): `config`, `sample_period`, `cpu`.
    PerfEvent = 3,
    /// A tracepoint by id in `config`.
    Tracepoint = 4,
}

impl LinkKind {
    fn from_u32(v: u32) -> Option<LinkKind> {
        Some(match v {
            1 => LinkKind::Uprobe,
            2 => LinkKind::Uretprobe,
            3 => LinkKind::PerfEvent,
            4 => LinkKind::Tracepoint,
            _ => return None,
        })
    }
}

/// An attachment record. At creation `id` and `owner` are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    pub id: u32,
    pub owner: u32,
    pub kind: LinkKind,
    pub prog_id: u32,
    /// Whether the probe fires (PERF_EVENT_IOC_ENABLE/DISABLE).
    pub enabled: bool,
    /// Only fire in this pid (as seen by the loader); -1 = every process.
    pub pid: i32,
    /// `bpf_get_attach_cookie` value.
    pub cookie: u64,
    /// Uprobes: target file path, offset in the file, and the file's
    /// device/inode for robust matching against mappings.
    pub target_path: String,
    pub file_offset: u64,
    pub ref_ctr_offset: u64,
    pub dev: u64,
    pub inode: u64,
    /// Perf events/tracepoints: perf `config`, `sample_period`, and cpu (-1 any).
    pub config: u64,
    pub sample_period: u64,
    pub cpu: i32,
}

impl Default for LinkRecord {
    fn default() -> Self {
        LinkRecord {
            id: 0,
            owner: 0,
            kind: LinkKind::Uprobe,
            prog_id: 0,
            enabled: false,
            pid: -1,
            cookie: 0,
            target_path: String::new(),
            file_offset: 0,
            ref_ctr_offset: 0,
            dev: 0,
            inode: 0,
            config: 0,
            sample_period: 0,
            cpu: -1,
        }
    }
}

/// Offset of the link record's `enabled` word (right after the header).
const LINK_ENABLED_OFFSET: u64 = OBJECT_HEADER_SIZE as u64;

/// A handle on the registry directory. Cheap to clone; maps and rings opened
/// through it keep it alive.
#[derive(Clone)]
pub struct Registry {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.shared.dir).finish()
    }
}

/// The directory the registry uses by default: `$USERBPF_DIR`, else
/// `/dev/shm/userbpf-<euid>`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os(ENV_DIR) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        // SAFETY: geteuid has no preconditions.
        _ => default_dir_of_uid(unsafe { libc::geteuid() }),
    }
}

/// The registry a process of effective uid `uid` uses when `USERBPF_DIR`
/// is not set: registries are per user.
pub fn default_dir_of_uid(uid: u32) -> PathBuf {
    PathBuf::from(format!("/dev/shm/userbpf-{uid}"))
}

fn check_dir(path: &Path, opts: &RegistryOptions) -> Result<(), Error> {
    let md = fs::symlink_metadata(path).map_err(|e| Error::io(path, "stat", e))?;
    let fix_mode = if opts.shared { "0770" } else { "0700" };
    if !md.file_type().is_dir() {
        return Err(Error::UnsafeDir {
            path: path.into(),
            reason: "not a directory (symlinks are refused); remove it or set USERBPF_DIR".into(),
        });
    }
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mode = md.mode() & 0o7777;
    if md.uid() != uid {
        let group_ok = opts.shared && (md.gid() == gid || in_groups(md.gid())) && mode & 0o070 == 0o070;
        if !group_ok {
            return Err(Error::UnsafeDir {
                path: path.into(),
                reason: format!(
                    "owned by uid {} but this process runs as uid {uid}; use a directory of your own \
                     (set USERBPF_DIR) or, for a shared container volume, give it a common group \
                     with mode 0770 and set USERBPF_SHARED=1",
                    md.uid()
                ),
            });
        }
    }
    let forbidden = if opts.shared { 0o007 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(Error::UnsafeDir {
            path: path.into(),
            reason: format!(
                "mode {mode:04o} gives access to other users; run `chmod {fix_mode} {}`{}",
                path.display(),
                if opts.shared { "" } else { " (or set USERBPF_SHARED=1 to accept group access)" }
            ),
        });
    }
    Ok(())
}

fn in_groups(gid: libc::gid_t) -> bool {
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds 256 gids.
    let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // umask may have narrowed (or, for shared mode, the group bits).
            fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| Error::io(path, "chmod", e))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path, "mkdir", e)),
    }
}

impl Registry {
    /// Opens (creating if needed) the registry at [`default_dir`] with
    /// options from the environment.
    pub fn open_default() -> Result<Registry, Error> {
        Registry::open_with(&default_dir(), &RegistryOptions::from_env())
    }

    /// Opens (creating if needed) the registry at `dir`, options from the environment.
    pub fn open(dir: &Path) -> Result<Registry, Error> {
        Registry::open_with(dir, &RegistryOptions::from_env())
    }

    /// Opens (creating if needed) the registry at `dir`. Refuses a directory
    /// owned by another user or open to others, and a registry written by a
    /// different layout version. Reaps dead owners' objects.
    pub fn open_with(dir: &Path, opts: &RegistryOptions) -> Result<Registry, Error> {
        crate::epoch::init_thread_exit();
        install_fork_hook();
        let dir_mode = if opts.shared { 0o770 } else { 0o700 };
        mkdir_mode(dir, dir_mode)?;
        check_dir(dir, opts)?;
        for sub in SUBDIRS {
            let p = dir.join(sub);
            mkdir_mode(&p, dir_mode)?;
            check_dir(&p, opts)?;
        }
        let file_mode = if opts.shared { 0o660 } else { 0o600 };
        let (header, cpu_slot_count) = open_registry_file(dir, file_mode)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            shared_mode: opts.shared,
            read_only: false,
            header,
            cpu_slot_count,
            owner: AtomicU64::new(0),
            owner_fd: Mutex::new(None),
        });
        shared.owner_id();
        let reg = Registry { shared };
        reg.reap();
        Ok(reg)
    }

    /// Opens an existing registry for inspection (`userbpf list`, dumps):
    /// creates nothing, does not register this process as an owner and does
    /// not reap. Reads (lookups, iteration, listings) never change the
    /// directory; a write through this handle registers the process then.
    /// Fails with [`Error::NotFound`]-style `Io(ENOENT)` when the directory
    /// or its `registry` file is missing.
    pub fn open_existing(dir: &Path) -> Result<Registry, Error> {
        crate::epoch::init_thread_exit();
        install_fork_hook();
        let opts = RegistryOptions::from_env();
        check_dir(dir, &opts)?;
        let path = dir.join("registry");
        if !path.exists() {
            return Err(Error::io(path, "open", io::Error::from_raw_os_error(libc::ENOENT)));
        }
        let (header, cpu_slot_count) = open_registry_file(dir, 0)?;
        Ok(Registry {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                shared_mode: opts.shared,
                read_only: true,
                header,
                cpu_slot_count,
                owner: AtomicU64::new(0),
                owner_fd: Mutex::new(None),
            }),
        })
    }

    /// Every registered participant process.
    pub fn owners(&self) -> Vec<OwnerInfo> {
        let mut v: Vec<OwnerInfo> = fs::read_dir(self.shared.dir.join("owners"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let id: u32 = e.file_name().to_str()?.parse().ok()?;
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                let field = |name: &str| {
                    text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                };
                Some(OwnerInfo {
                    id,
                    pid: field("pid ").and_then(|p| p.parse().ok()).unwrap_or(-1),
                    role: field("role ").unwrap_or_default(),
                    status: field("status ").unwrap_or_default(),
                    alive: self.shared.owner_alive(id),
                })
            })
            .collect();
        v.sort_by_key(|o| o.id);
        v
    }

    /// Records this process's role (e.g. "loader", "agent", "tool") in its
    /// owner file, for `userbpf list`. Registers the process if needed.
    pub fn set_role(&self, role: &str) -> Result<(), Error> {
        self.set_status(role, "")
    }

    /// Records this process's role and a one-line status in its owner file
    /// (an agent says which registry generation its probes are reconciled
    /// with: `userbpf attach` waits for it). Registers the process if needed.
    pub fn set_status(&self, role: &str, status: &str) -> Result<(), Error> {
        let id = self.shared.owner_id();
        let path = self.shared.dir.join("owners").join(id.to_string());
        let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
        let (role, status) = (clean(role), clean(status));
        let mut text = format!("pid {}\nrole {role}\n", std::process::id());
        if !status.is_empty() {
            text.push_str(&format!("status {status}\n"));
        }
        let slot = self.shared.owner_fd.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = slot.as_ref() else {
            return Err(Error::io(path, "write", io::Error::from_raw_os_error(libc::EBADF)));
        };
        // SAFETY: ftruncate on our own owner fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), 0) } != 0 {
            return Err(Error::io(path, "truncate", io::Error::last_os_error()));
        }
        // SAFETY: pwrite of `text` to our own owner fd.
        let n = unsafe { libc::pwrite(fd.as_raw_fd(), text.as_ptr() as *const _, text.len(), 0) };
        if n != text.len() as isize {
            return Err(Error::io(path, "write", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Path of program record `id`.
    pub fn prog_path(&self, id: u32) -> PathBuf {
        self.shared.object_path("progs", id)
    }

    /// Path of attachment record `id`.
    pub fn link_path(&self, id: u32) -> PathBuf {
        self.shared.object_path("links", id)
    }

    /// Rewrites attachment `id` atomically with `change` applied (e.g. to
    /// set its program at `PERF_EVENT_IOC_SET_BPF`); id and owner are kept.
    /// Bumps the generation.
    pub fn update_link(&self, id: u32, change: impl FnOnce(&mut LinkRecord)) -> Result<LinkRecord, Error> {
        let old = self.link(id)?;
        let mut rec = old.clone();
        change(&mut rec);
        rec.id = old.id;
        rec.owner = old.owner;
        self.publish_record("links", id, &encode_link(&rec), true)?;
        Ok(rec)
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// This process's owner id (recorded in the objects it creates).
    pub fn owner_id(&self) -> u32 {
        self.shared.owner_id()
    }

    /// Whether the process registered as `owner` is still running.
    pub fn owner_alive(&self, owner: u32) -> bool {
        self.shared.owner_alive(owner)
    }

    /// Current generation (changes on every registry modification).
    pub fn generation(&self) -> u32 {
        self.shared.header().generation.0.load(Ordering::SeqCst)
    }

    /// Blocks until the generation differs from `old` or `timeout` passes
    /// (`None` = forever). Returns the generation seen last.
    pub fn wait_generation_change(&self, old: u32, timeout: Option<Duration>) -> u32 {
        let g = &self.shared.header().generation.0;
        let cur = g.load(Ordering::SeqCst);
        if cur != old {
            return cur;
        }
        sys::futex_wait(g, old, timeout);
        g.load(Ordering::SeqCst)
    }

    /// Enters a read section for the calling thread: hash-map element memory
    /// the thread can reach is not reused by any process until the guard
    /// drops. The agent takes one around every program run (so values a
    /// program holds stay its key's); syscall-view operations take their
    /// own. Costs one store and one fence; nested sections are free.
    #[inline]
    /// Highest reader slot ever claimed, plus one (for tests: threads give
    /// theirs back when they exit).
    #[doc(hidden)]
    pub fn reader_slots_high_water(&self) -> u32 {
        self.shared.epoch_state().slots_used.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn read_section(&self) -> crate::epoch::ReadGuard<'_> {
        crate::epoch::enter(&self.shared)
    }

    /// Starts a program run: a read section (as [`Registry::read_section`])
    /// and, with `claim_cpu`, an exclusively claimed **CPU slot** — the
    /// user-space stand-in for the kernel running a program with
    /// preemption disabled. Pass [`crate::RunGuard::cpu`] to the program
    /// view's `*_on_cpu` operations and report it as
    /// `bpf_get_smp_processor_id`: no other run (in any process) uses that
    /// CPU's per-CPU values until the guard drops. Claim only for programs
    /// that reference per-CPU state. Uncontended cost: one CAS and one
    /// store on top of the read section's; see `docs/arch/shm-maps.md` for
    /// the bounded wait when every slot is held.
    #[inline]
    pub fn enter_run(&self, claim_cpu: bool) -> crate::epoch::RunGuard<'_> {
        crate::epoch::enter_run(&self.shared, claim_cpu)
    }

    /// Counters of the CPU-slot mechanism (waits, steals from dead holders,
    /// timeouts), registry-wide.
    pub fn cpu_slot_stats(&self) -> crate::cpu_slot::CpuSlotStats {
        crate::cpu_slot::stats(&self.shared)
    }

    /// CPU slots currently held: `(slot index, owner id, thread id)`.
    pub fn cpu_slot_holders(&self) -> Vec<(u32, u32, u32)> {
        crate::cpu_slot::holders(&self.shared).into_iter().map(|(i, t)| (i, t as u32, (t >> 32) as u32)).collect()
    }

    /// Bumps the generation and wakes every waiter (done automatically by
    /// every create/remove/enable call).
    pub fn bump_generation(&self) {
        self.shared.bump_generation()
    }

    /// Path of a map file (for handing an fd to a loader).
    pub fn map_path(&self, id: u32) -> PathBuf {
        self.shared.object_path("maps", id)
    }

    /// Path of a perf ring file: the syscall server opens it and returns the
    /// fd from `perf_event_open`, so the loader's mmap sees the kernel layout.
    pub fn ring_path(&self, id: u32) -> PathBuf {
        self.shared.object_path("rings", id)
    }

    fn ids_in(&self, sub: &str) -> Vec<u32> {
        let mut ids: Vec<u32> = fs::read_dir(self.shared.dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every map in the registry.
    pub fn maps(&self) -> Vec<MapInfo> {
        self.ids_in("maps").into_iter().filter_map(|id| self.map_info(id).ok()).collect()
    }

    /// Header information of map `id`.
    pub fn map_info(&self, id: u32) -> Result<MapInfo, Error> {
        crate::map::read_map_info(&self.map_path(id), id)
    }

    /// Removes map `id` (processes that mapped it keep their mapping).
    pub fn remove_map(&self, id: u32) -> Result<(), Error> {
        self.remove_object("maps", "map", id)
    }

    /// Removes perf ring `id`.
    pub fn remove_ring(&self, id: u32) -> Result<(), Error> {
        self.remove_object("rings", "perf ring", id)
    }

    fn remove_object(&self, sub: &str, kind: &'static str, id: u32) -> Result<(), Error> {
        let p = self.shared.object_path(sub, id);
        match fs::remove_file(&p) {
            Ok(()) => {
                self.shared.bump_generation();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound { kind, id }),
            Err(e) => Err(Error::io(p, "unlink", e)),
        }
    }

    /// Writes a record file atomically and bumps the generation.
    fn publish_record(&self, sub: &str, id: u32, bytes: &[u8], replace: bool) -> Result<(), Error> {
        let tmp = self.shared.temp_path(sub, id);
        let dst = self.shared.object_path(sub, id);
        let res = (|| -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.shared.file_mode())
                .custom_flags(libc::O_CLOEXEC)
                .open(&tmp)?;
            sys::set_exact_mode(&f, self.shared.file_mode())?;
            f.write_all(bytes)?;
            if replace {
                // The record must still exist (not removed meanwhile).
                fs::metadata(&dst)?;
                fs::rename(&tmp, &dst)
            } else {
                sys::publish_noreplace(&tmp, &dst)
            }
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(dst, "create", e));
        }
        self.shared.bump_generation();
        Ok(())
    }

    /// Stores a program record; returns its id.
    pub fn create_prog(&self, prog: &ProgRecord) -> Result<u32, Error> {
        if prog.insns.len() % 8 != 0 {
            return Err(Error::kernel("program instructions are not a multiple of 8 bytes", crate::Errno::EINVAL));
        }
        let id = self.shared.alloc_id();
        let mut rec = prog.clone();
        rec.id = id;
        rec.owner = self.shared.owner_id();
        self.publish_record("progs", id, &encode_prog(&rec), false)?;
        Ok(id)
    }

    /// Reads program `id`.
    pub fn prog(&self, id: u32) -> Result<ProgRecord, Error> {
        let p = self.shared.object_path("progs", id);
        let bytes = read_object(&p, "program", id)?;
        decode_prog(&bytes).ok_or_else(|| Error::Incompatible { path: p, reason: "malformed program record".into() })
    }

    /// Ids of every program in the registry, ascending.
    pub fn prog_ids(&self) -> Vec<u32> {
        let mut ids = self.ids_in("progs");
        ids.sort_unstable();
        ids
    }

    /// Ids of every attachment in the registry, ascending.
    pub fn link_ids(&self) -> Vec<u32> {
        let mut ids = self.ids_in("links");
        ids.sort_unstable();
        ids
    }

    /// Ids of every map in the registry, ascending.
    pub fn map_ids(&self) -> Vec<u32> {
        let mut ids = self.ids_in("maps");
        ids.sort_unstable();
        ids
    }

    /// Every program in the registry.
    pub fn progs(&self) -> Vec<ProgRecord> {
        self.ids_in("progs").into_iter().filter_map(|id| self.prog(id).ok()).collect()
    }

    /// Removes program `id`.
    pub fn remove_prog(&self, id: u32) -> Result<(), Error> {
        self.remove_object("progs", "program", id)
    }

    /// Stores an attachment record; returns its id.
    pub fn create_link(&self, link: &LinkRecord) -> Result<u32, Error> {
        let id = self.shared.alloc_id();
        let mut rec = link.clone();
        rec.id = id;
        rec.owner = self.shared.owner_id();
        self.publish_record("links", id, &encode_link(&rec), false)?;
        Ok(id)
    }

    /// Reads attachment `id`.
    pub fn link(&self, id: u32) -> Result<LinkRecord, Error> {
        let p = self.shared.object_path("links", id);
        let bytes = read_object(&p, "link", id)?;
        decode_link(&bytes).ok_or_else(|| Error::Incompatible { path: p, reason: "malformed link record".into() })
    }

    /// Every attachment in the registry.
    pub fn links(&self) -> Vec<LinkRecord> {
        self.ids_in("links").into_iter().filter_map(|id| self.link(id).ok()).collect()
    }

    /// Enables or disables attachment `id` (PERF_EVENT_IOC_ENABLE/DISABLE).
    pub fn set_link_enabled(&self, id: u32, enabled: bool) -> Result<(), Error> {
        let p = self.shared.object_path("links", id);
        let f = fs::OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound { kind: "link", id }
            } else {
                Error::io(&p, "open", e)
            }
        })?;
        f.write_all_at(&(enabled as u32).to_le_bytes(), LINK_ENABLED_OFFSET)
            .map_err(|e| Error::io(&p, "write", e))?;
        self.shared.bump_generation();
        Ok(())
    }

    /// Removes attachment `id` (the probe stops firing in every process).
    pub fn remove_link(&self, id: u32) -> Result<(), Error> {
        self.remove_object("links", "link", id)
    }

    /// Removes every object whose owner process died (and its owner file),
    /// plus temporary files left by dead creators. Returns how many objects
    /// were removed. Safe to call from any participant at any time.
    pub fn reap(&self) -> usize {
        let owners_dir = self.shared.dir.join("owners");
        // owner id -> dead?
        let mut dead: HashMap<u32, bool> = HashMap::new();
        let mut dead_files = Vec::new();
        for entry in fs::read_dir(&owners_dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Ok(id) = name.parse::<u32>() {
                let is_dead = !self.shared.owner_alive(id);
                dead.insert(id, is_dead);
                if is_dead {
                    dead_files.push(entry.path());
                }
            } else if let Some(rest) = name.strip_prefix(".tmp-") {
                // An owner file not yet published. Its creator locks it right
                // after creating it and renames it to `owners/<id>` right
                // after that, so `owner_alive(id)` (which looks at the final
                // name) would call a creator in the middle of registering
                // dead. Judge the temporary file itself: abandoned only if
                // nobody holds its lock and it is older than a live creator
                // could ever leave it.
                if rest.parse::<u32>().is_ok() && owner_temp_abandoned(&entry.path()) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let mut removed = 0;
        for (sub, header_offset) in [("links", 0u64), ("progs", 0), ("maps", 0), ("rings", crate::perf::OBJECT_HEADER_OFFSET as u64)] {
            for entry in fs::read_dir(self.shared.dir.join(sub)).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(rest) = name.strip_prefix(".tmp-") {
                    let creator = rest.split('-').next().and_then(|s| s.parse::<u32>().ok());
                    if creator.is_some_and(|c| *dead.entry(c).or_insert_with(|| !self.shared.owner_alive(c))) {
                        let _ = fs::remove_file(entry.path());
                    }
                    continue;
                }
                if name.parse::<u32>().is_err() {
                    continue;
                }
                if let Some(owner) = read_owner(&entry.path(), header_offset) {
                    // Owners without an owner file (withdrawn at exit, or
                    // already reaped) are dead too.
                    let is_dead = *dead.entry(owner).or_insert_with(|| !self.shared.owner_alive(owner));
                    if is_dead && fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        for f in dead_files {
            let _ = fs::remove_file(f);
        }
        crate::cpu_slot::release_dead(&self.shared);
        if removed > 0 {
            self.shared.bump_generation();
        }
        removed
    }
}

/// How long an unpublished owner file may exist before an unlocked one is
/// taken as abandoned (its creator died between creating and locking it).
/// A live creator publishes it within microseconds.
const OWNER_TEMP_GRACE: Duration = Duration::from_secs(10);

/// Whether `owners/.tmp-<id>` was abandoned by a creator that died before
/// publishing it: nobody holds its lock and it is older than
/// [`OWNER_TEMP_GRACE`]. Any doubt (open or stat failing) keeps the file.
fn owner_temp_abandoned(path: &Path) -> bool {
    let Ok(fd) = sys::open(path, libc::O_RDWR, 0) else { return false };
    // Closing `fd` releases the probe lock if we got it.
    if !matches!(sys::ofd_try_lock(&fd), Ok(true)) {
        return false;
    }
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > OWNER_TEMP_GRACE)
}

fn read_owner(path: &Path, offset: u64) -> Option<u32> {
    let f = fs::File::open(path).ok()?;
    let mut buf = [0u8; OBJECT_HEADER_SIZE];
    f.read_exact_at(&mut buf, offset).ok()?;
    Some(u32::from_le_bytes(buf[20..24].try_into().unwrap()))
}

fn read_object(p: &Path, kind: &'static str, id: u32) -> Result<Vec<u8>, Error> {
    fs::read(p).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotFound { kind, id }
        } else {
            Error::io(p, "read", e)
        }
    })
}

/// The layout version of the registry in `dir`, read from its file's
/// header without opening the registry (no owner registration, no reaping:
/// what `userbpf doctor` needs). `Err` when there is no readable registry
/// file or it is not a userbpf registry.
pub fn registry_layout_version(dir: &Path) -> Result<u32, Error> {
    use std::io::Read;
    let path = dir.join("registry");
    let mut head = [0u8; 12];
    fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| Error::io(&path, "read", e))?;
    if u64::from_ne_bytes(head[..8].try_into().expect("8 bytes")) != REGISTRY_MAGIC {
        return Err(Error::Incompatible { path, reason: "bad magic: not a userbpf registry".into() });
    }
    Ok(u32::from_ne_bytes(head[8..12].try_into().expect("4 bytes")))
}

/// Opens (creating if needed) and validates the registry file; returns its
/// mapping and CPU-slot count.
fn open_registry_file(dir: &Path, mode: u32) -> Result<(Mapping, u32), Error> {
    let path = dir.join("registry");
    for _ in 0..100 {
        match sys::open(&path, libc::O_RDWR, 0) {
            Ok(fd) => {
                let len = sys::file_len(&fd).map_err(|e| Error::io(&path, "stat", e))?;
                if len < REGISTRY_HEADER_PAGE {
                    return Err(Error::Incompatible {
                        path,
                        reason: format!("registry file is {len} bytes, expected {REGISTRY_FILE_SIZE}; not a userbpf registry"),
                    });
                }
                // Map what is there (at most our size): the version check
                // must come first, so an older build's smaller file is
                // reported as a version mismatch.
                let m = Mapping::map(fd.as_raw_fd(), len.min(REGISTRY_FILE_SIZE)).map_err(|e| Error::io(&path, "mmap", e))?;
                // SAFETY: the mapping holds at least one RegistryHeader
                // (one page, checked above).
                let h = unsafe { &*(m.base() as *const RegistryHeader) };
                if h.magic != REGISTRY_MAGIC {
                    return Err(Error::Incompatible { path, reason: "bad magic: not a userbpf registry".into() });
                }
                if h.layout_version != LAYOUT_VERSION {
                    return Err(Error::Incompatible {
                        path,
                        reason: format!(
                            "registry layout version {} but this userbpf uses version {LAYOUT_VERSION}; \
                             all participants must run the same userbpf build (remove the directory when \
                             no userbpf process runs, or use another USERBPF_DIR)",
                            h.layout_version
                        ),
                    });
                }
                if len < REGISTRY_FILE_SIZE {
                    return Err(Error::Incompatible {
                        path,
                        reason: format!("registry file is {len} bytes, expected {REGISTRY_FILE_SIZE}; not a userbpf registry"),
                    });
                }
                let count = h.cpu_slots.count;
                if count == 0 || count > crate::cpu_slot::MAX_CPU_SLOTS as u64 {
                    return Err(Error::Incompatible {
                        path,
                        reason: format!(
                            "registry header claims {count} CPU slots (valid: 1..={}); the file is corrupt",
                            crate::cpu_slot::MAX_CPU_SLOTS
                        ),
                    });
                }
                return Ok((m, count as u32));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                create_registry_file(dir, &path, mode)?;
            }
            Err(e) => return Err(Error::io(path, "open", e)),
        }
    }
    Err(Error::io(path, "open", io::Error::from_raw_os_error(libc::EAGAIN)))
}

fn create_registry_file(dir: &Path, path: &Path, mode: u32) -> Result<(), Error> {
    let tmp = dir.join(format!(".registry-tmp-{:x}", sys::random_u64()));
    let fd = sys::open(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, mode).map_err(|e| Error::io(&tmp, "create", e))?;
    let init = (|| -> io::Result<()> {
        sys::allocate(&fd, REGISTRY_FILE_SIZE)?;
        let m = Mapping::map(fd.as_raw_fd(), REGISTRY_FILE_SIZE)?;
        // SAFETY: fresh private file of the right size; nobody else sees it yet.
        let h = unsafe { &mut *(m.base() as *mut RegistryHeader) };
        h.magic = REGISTRY_MAGIC;
        h.layout_version = LAYOUT_VERSION;
        h.header_size = std::mem::size_of::<RegistryHeader>() as u32;
        h.next_id.0.store(1, Ordering::Relaxed);
        h.generation.0.store(1, Ordering::Relaxed);
        h.epoch.epoch.store(1, Ordering::Relaxed);
        h.cpu_slots.count = (crate::cpu::nr_possible() as u64).clamp(1, crate::cpu_slot::MAX_CPU_SLOTS as u64);
        Ok(())
    })();
    if let Err(e) = init {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(tmp, "initialise", e));
    }
    match sys::publish_noreplace(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(Error::io(path, "publish", e)),
    }
}

// ---- record encoding: object header, then little-endian fields ----

struct Enc(Vec<u8>);

impl Enc {
    fn new(magic: u64, kind: ObjectKind, id: u32, owner: u32) -> Enc {
        let mut e = Enc(Vec::with_capacity(256));
        e.u64(magic);
        e.u32(LAYOUT_VERSION);
        e.u32(kind as u32);
        e.u32(id);
        e.u32(owner);
        e
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn open(buf: &'a [u8], magic: u64, kind: ObjectKind) -> Option<(Dec<'a>, u32, u32)> {
        let mut d = Dec(buf);
        if d.u64()? != magic || d.u32()? != LAYOUT_VERSION || d.u32()? != kind as u32 {
            return None;
        }
        let id = d.u32()?;
        let owner = d.u32()?;
        Some((d, id, owner))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

fn encode_prog(p: &ProgRecord) -> Vec<u8> {
    let mut e = Enc::new(PROG_MAGIC, ObjectKind::Prog, p.id, p.owner);
    e.u32(p.prog_type);
    e.u32(p.expected_attach_type);
    e.u32(p.prog_flags);
    e.u32(p.kern_version);
    e.bytes(p.name.as_bytes());
    e.bytes(p.license.as_bytes());
    e.bytes(&p.insns);
    e.u32(p.map_ids.len() as u32);
    for m in &p.map_ids {
        e.u32(*m);
    }
    e.bytes(p.verifier_log.as_bytes());
    e.0
}

fn decode_prog(b: &[u8]) -> Option<ProgRecord> {
    let (mut d, id, owner) = Dec::open(b, PROG_MAGIC, ObjectKind::Prog)?;
    let prog_type = d.u32()?;
    let expected_attach_type = d.u32()?;
    let prog_flags = d.u32()?;
    let kern_version = d.u32()?;
    let name = d.string()?;
    let license = d.string()?;
    let insns = d.bytes()?.to_vec();
    let n = d.u32()? as usize;
    let map_ids = (0..n).map(|_| d.u32()).collect::<Option<Vec<_>>>()?;
    let verifier_log = d.string()?;
    Some(ProgRecord { id, owner, prog_type, expected_attach_type, prog_flags, kern_version, name, license, insns, map_ids, verifier_log })
}

fn encode_link(l: &LinkRecord) -> Vec<u8> {
    let mut e = Enc::new(LINK_MAGIC, ObjectKind::Link, l.id, l.owner);
    debug_assert_eq!(e.0.len() as u64, LINK_ENABLED_OFFSET);
    e.u32(l.enabled as u32);
    e.u32(l.kind as u32);
    e.u32(l.prog_id);
    e.u32(l.pid as u32);
    e.u64(l.cookie);
    e.bytes(l.target_path.as_bytes());
    e.u64(l.file_offset);
    e.u64(l.ref_ctr_offset);
    e.u64(l.dev);
    e.u64(l.inode);
    e.u64(l.config);
    e.u64(l.sample_period);
    e.u32(l.cpu as u32);
    e.0
}

fn decode_link(b: &[u8]) -> Option<LinkRecord> {
    let (mut d, id, owner) = Dec::open(b, LINK_MAGIC, ObjectKind::Link)?;
    Some(LinkRecord {
        id,
        owner,
        enabled: d.u32()? != 0,
        kind: LinkKind::from_u32(d.u32()?)?,
        prog_id: d.u32()?,
        pid: d.u32()? as i32,
        cookie: d.u64()?,
        target_path: d.string()?,
        file_offset: d.u64()?,
        ref_ctr_offset: d.u64()?,
        dev: d.u64()?,
        inode: d.u64()?,
        config: d.u64()?,
        sample_period: d.u64()?,
        cpu: d.u32()? as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_status_round_trips_through_its_line() {
        let s = AgentStatus { generation: 42, probes: 2, links: vec![3, 5], hits: vec![(3, 120), (5, 7)] };
        assert_eq!(s.line(), "reconciled 42 probes 2 links 3,5 hits 3:120,5:7");
        assert_eq!(AgentStatus::parse(&s.line()), Some(s));
        // An agent of the previous release wrote no hits.
        let old = AgentStatus::parse("reconciled 4 probes 1 links 9").unwrap();
        assert_eq!((old.links, old.hits), (vec![9], vec![]));
        let none = AgentStatus { generation: 7, probes: 0, links: vec![], hits: vec![] };
        assert_eq!(AgentStatus::parse(&none.line()), Some(none));
        assert_eq!(AgentStatus::parse("role agent"), None);
    }
}
