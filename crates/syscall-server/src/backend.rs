//! The registry as the server sees it (`shm-maps`): maps, programs, perf
//! rings and attachments in shared memory, each behind a real file
//! descriptor the loader can hold, `dup`, `mmap` and close.
//!
//! Ownership is RAII: a [`Map`], [`Prog`], [`Ring`] or [`Attachment`]
//! removes its registry object when dropped, i.e. when the last fd of the
//! loader naming it is closed *and* no other object still refers to it
//! (a program keeps the maps it references alive, an attachment its
//! program), which is the kernel's reference-count semantics. If the loader
//! dies without closing anything, `shm-maps`' owner liveness reaps its
//! objects and the agents detach.
//!
//! The registry directory is `$USERBPF_DIR` or `/dev/shm/userbpf-<euid>`
//! computed with the *real* euid: the server answers bpftrace's `geteuid()`
//! with 0, but server code itself sees the truth (see
//! [`crate::interpose::geteuid`]).

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use shm_maps::{LinkKind, LinkRecord, ProgRecord, Registry};

pub use shm_maps::MapSpec;

/// The loader's registry, opened on first use.
pub fn registry() -> Result<&'static Registry, i32> {
    static REG: OnceLock<Result<Registry, String>> = OnceLock::new();
    let r = REG.get_or_init(|| {
        let dir = match std::env::var_os(shm_maps::ENV_DIR) {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            // SAFETY: geteuid has no preconditions (the real one, not ours).
            _ => PathBuf::from(format!("/dev/shm/userbpf-{}", unsafe {
                crate::real::geteuid()
            })),
        };
        open_registered(&dir)
    });
    match r {
        Ok(reg) => Ok(reg),
        Err(msg) => {
            crate::report::once(
                "registry",
                &format!("userbpf: cannot open the registry: {msg}"),
            );
            Err(libc::EACCES)
        }
    }
}

/// Open the registry and make sure this loader is registered as a live
/// owner: objects of an owner that looks dead are ignored by every agent
/// (its probes would silently never fire) and reaped. Registration can be
/// lost to a concurrent reap (see docs/requests/shm-maps.md); `set_role`
/// fails exactly then, so retry with a fresh handle a few times.
fn open_registered(dir: &Path) -> Result<Registry, String> {
    const ATTEMPTS: usize = 5;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let reg = Registry::open(dir).map_err(|e| e.to_string())?;
        // `role` is for `userbpf list`; its write needs our owner file.
        match reg.set_role("loader") {
            Ok(()) => return Ok(reg),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "could not register this loader as a live owner in {}: {last}",
        dir.display()
    ))
}

fn errno_of(e: shm_maps::Error) -> i32 {
    e.errno().0
}

/// Open `path` read-write, close-on-exec, as the fd handed to the loader.
fn open_object_fd(path: &Path) -> Result<OwnedFd, i32> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: open of a NUL-terminated path; the fd is owned by the result.
    let fd = unsafe { crate::real::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(crate::report::errno());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Number of possible CPUs (per-CPU value slots, BPF_OUTPUT rings).
pub fn nr_possible_cpus() -> u32 {
    shm_maps::cpu::nr_possible()
}

/// A map created by this loader.
pub struct Map {
    pub map: shm_maps::Map,
}

impl Map {
    pub fn id(&self) -> u32 {
        self.map.id()
    }
    /// Bytes of a value in the syscall view (per-CPU: all CPUs).
    pub fn user_value_size(&self) -> usize {
        self.map.syscall_value_size()
    }
    pub fn lookup(&self, k: &[u8], out: &mut [u8]) -> Result<(), i32> {
        self.map.lookup(k, out).map_err(|e| e.0)
    }
    pub fn lookup_and_delete(&self, k: &[u8], out: &mut [u8]) -> Result<(), i32> {
        self.map.lookup_and_delete(k, out).map_err(|e| e.0)
    }
    pub fn update(&self, k: &[u8], v: &[u8], flags: u64) -> Result<(), i32> {
        self.map.update(k, v, flags).map_err(|e| e.0)
    }
    pub fn delete(&self, k: &[u8]) -> Result<(), i32> {
        self.map.delete(k).map_err(|e| e.0)
    }
    pub fn get_next_key(&self, k: Option<&[u8]>, out: &mut [u8]) -> Result<(), i32> {
        self.map.get_next_key(k, out).map_err(|e| e.0)
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if let Ok(reg) = registry() {
            let _ = reg.remove_map(self.map.id());
        }
    }
}

/// `BPF_MAP_CREATE`: the map and the fd of its registry file.
pub fn create_map(spec: &MapSpec) -> Result<(Map, OwnedFd), i32> {
    let reg = registry()?;
    let map = reg.create_map(spec).map_err(|e| {
        if e.errno().0 == libc::EINVAL {
            crate::report::line(&format!("userbpf: BPF_MAP_CREATE {:?}: {e}", spec.name));
        }
        errno_of(e)
    })?;
    let map = Map { map };
    let fd = open_object_fd(&reg.map_path(map.id()))?;
    Ok((map, fd))
}

/// A program stored in the registry by this loader.
pub struct Prog {
    pub id: u32,
    /// Maps the program references, kept alive as long as it is.
    _maps: Vec<Arc<crate::objects::Object>>,
}

impl Drop for Prog {
    fn drop(&mut self) {
        crate::loader_run::forget(self.id);
        if let Ok(reg) = registry() {
            let _ = reg.remove_prog(self.id);
        }
    }
}

/// What [`store_program`] needs about a verified program.
pub struct ProgSpec<'a> {
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub prog_flags: u32,
    pub kern_version: u32,
    pub name: &'a str,
    pub license: &'a str,
    /// Instructions with map fds replaced by registry map ids.
    pub insns: &'a [u64],
    pub maps: Vec<Arc<crate::objects::Object>>,
    pub map_ids: Vec<u32>,
    pub verifier_log: String,
}

/// Store a verified program; returns it and the fd of its record file.
pub fn store_program(spec: ProgSpec<'_>) -> Result<(Prog, OwnedFd), i32> {
    let reg = registry()?;
    let rec = ProgRecord {
        prog_type: spec.prog_type,
        expected_attach_type: spec.expected_attach_type,
        prog_flags: spec.prog_flags,
        kern_version: spec.kern_version,
        name: spec.name.to_string(),
        license: spec.license.to_string(),
        insns: spec.insns.iter().flat_map(|w| w.to_le_bytes()).collect(),
        map_ids: spec.map_ids,
        verifier_log: spec.verifier_log,
        ..Default::default()
    };
    let id = reg.create_prog(&rec).map_err(errno_of)?;
    let prog = Prog {
        id,
        _maps: spec.maps,
    };
    let path = reg.dir().join("progs").join(id.to_string());
    let fd = open_object_fd(&path)?;
    Ok((prog, fd))
}

/// A BPF_OUTPUT perf ring (one CPU).
pub struct Ring {
    ring: shm_maps::PerfRing,
}

impl Ring {
    pub fn id(&self) -> u32 {
        self.ring.id()
    }
    /// Bytes a loader maps: header page + data pages.
    pub fn mmap_len(&self) -> usize {
        self.ring.mmap_len()
    }

    /// Whether the ring holds records the loader has not consumed.
    pub fn has_data(&self) -> bool {
        self.ring.readable()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Ok(reg) = registry() {
            let _ = reg.remove_ring(self.ring.id());
        }
    }
}

/// A perf ring with `data_pages` data pages, and the fd of its file (whose
/// layout is the kernel's perf mmap layout). Rings are not tied to a CPU:
/// the PERF_EVENT_ARRAY slot a loader stores it in decides which CPU's
/// records it receives.
pub fn create_ring(data_pages: u32) -> Result<(Ring, OwnedFd), i32> {
    let reg = registry()?;
    let ring = reg.create_perf_ring(data_pages).map_err(errno_of)?;
    let fd = open_object_fd(&reg.ring_path(ring.id()))?;
    Ok((Ring { ring }, fd))
}

/// What `perf_event_open` asked to probe.
#[derive(Clone, Debug)]
pub struct AttachSpec {
    pub kind: LinkKind,
    /// Uprobes: target file and offset.
    pub path: String,
    pub file_offset: u64,
    /// Uprobes: offset of the USDT semaphore in the file (0: none).
    pub ref_ctr_offset: u64,
    /// Only this pid (`-p PID`), -1 for every process.
    pub pid: i32,
    /// Perf events: config, sample period and cpu.
    pub config: u64,
    pub sample_period: u64,
    pub cpu: i32,
}

/// An attachment: published in the registry when a program is bound
/// (`PERF_EVENT_IOC_SET_BPF`), enabled/disabled by ioctl, removed on drop.
pub struct Attachment {
    spec: AttachSpec,
    /// `(link id, program kept alive)` once a program is bound.
    link: Mutex<Option<(u32, Arc<crate::objects::Object>)>>,
    enabled: Mutex<bool>,
}

impl Attachment {
    pub fn new(spec: AttachSpec) -> Attachment {
        Attachment {
            spec,
            link: Mutex::new(None),
            enabled: Mutex::new(false),
        }
    }

    pub fn spec(&self) -> &AttachSpec {
        &self.spec
    }

    /// The registry link id, once a program is bound.
    pub fn link_id(&self) -> Option<u32> {
        self.link.lock().ok()?.as_ref().map(|(id, _)| *id)
    }

    /// Bind program `prog` (an `Object::Prog`) with registry id `prog_id`;
    /// `bpf_get_attach_cookie` returns `cookie` in it.
    pub fn set_program(
        &self,
        prog_id: u32,
        prog: Arc<crate::objects::Object>,
        cookie: u64,
    ) -> Result<(), i32> {
        let reg = registry()?;
        let mut link = self.link.lock().map_err(|_| libc::EIO)?;
        if link.is_some() {
            return Err(libc::EEXIST); // the kernel refuses a second SET_BPF
        }
        let (dev, inode) = std::fs::metadata(&self.spec.path)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
            .unwrap_or((0, 0));
        let enabled = *self.enabled.lock().map_err(|_| libc::EIO)?;
        let rec = LinkRecord {
            kind: self.spec.kind,
            prog_id,
            enabled,
            pid: self.spec.pid,
            cookie,
            target_path: self.spec.path.clone(),
            file_offset: self.spec.file_offset,
            ref_ctr_offset: self.spec.ref_ctr_offset,
            dev,
            inode,
            config: self.spec.config,
            sample_period: self.spec.sample_period,
            cpu: self.spec.cpu,
            ..Default::default()
        };
        let id = reg.create_link(&rec).map_err(errno_of)?;
        *link = Some((id, prog));
        Ok(())
    }

    pub fn set_enabled(&self, on: bool) -> Result<(), i32> {
        let mut enabled = self.enabled.lock().map_err(|_| libc::EIO)?;
        *enabled = on;
        if let Some((id, _)) = &*self.link.lock().map_err(|_| libc::EIO)? {
            registry()?.set_link_enabled(*id, on).map_err(errno_of)?;
        }
        Ok(())
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let link = self.link.get_mut().ok().and_then(|l| l.take());
        if let (Some((id, _prog)), Ok(reg)) = (link, registry()) {
            let _ = reg.remove_link(id);
        }
    }
}
